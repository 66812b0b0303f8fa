package api_test

import (
	"net/url"
	"slices"
	"testing"

	"netman/policy-server/api"
)

func TestParseIDs(t *testing.T) {
	cases := []struct {
		query string
		max   int
		ids   []string
		all   bool
		err   bool
	}{
		{"", 5, nil, true, false},
		{"id=", 5, nil, false, false},
		{"id=a,b", 5, []string{"a", "b"}, false, false},
		{"id=b,a,b", 5, []string{"b", "a"}, false, false},
		{"id=%20a%20&id=a&id=c", 5, []string{"a", "c"}, false, false},
		{"id=a%2Cb", 5, []string{"a", "b"}, false, false},
		{"id=a,b,c", 2, nil, false, true},
		{"id=a,a,a,b", 2, []string{"a", "b"}, false, false},
		{"id=%", 5, nil, false, true},
		{"id=a,b%00c", 5, nil, false, true},
		{"id=%FF%FE", 5, nil, false, true},
		{"id=a%0Ab", 5, nil, false, true},
		{"id=caf%C3%A9", 5, []string{"café"}, false, false},
	}
	for _, tc := range cases {
		q, err := url.ParseQuery(tc.query)
		var ids []string
		all := false
		if err == nil {
			ids, all, err = api.ParseIDs(q, tc.max)
		}
		if (err != nil) != tc.err || all != tc.all || !slices.Equal(ids, tc.ids) {
			t.Errorf("ParseIDs(%q, %d) = %q, %v, %v", tc.query, tc.max, ids, all, err)
		}
	}
}
