package externalapi_test

import (
	"net/http"
	"strings"
	"testing"

	"netman/lib/apiwire"
	"netman/policy-server/api/externalapi/externalapitest"
)

// Ids that encoding/json would turn into U+FFFD are refused, so two different ids
// never become one stored group.
func TestIDsThatJSONWouldAlterAreRefused(t *testing.T) {
	s := externalapitest.New(t, externalapitest.Options{})
	token := s.AdminToken(t)
	url := s.External.URL + "/networking/v1/external/policies"
	policy := func(rawSrc string) string {
		return `{"policies":[{"source":{"id":"` + rawSrc + `"},"destination":{"id":"b","protocol":"tcp","ports":{"start":1,"end":1}}}]}`
	}
	for _, tc := range []struct{ name, src, want string }{
		{"invalid UTF-8", "a\xff", "not valid UTF-8"},
		{"another invalid byte", "a\xfe", "not valid UTF-8"},
		{"lone high surrogate", `a\uD800`, `\uD800 without its surrogate pair`},
		{"lone low surrogate", `a\uDFFF`, `\uDFFF without its surrogate pair`},
	} {
		r := do(t, http.MethodPost, url, token, policy(tc.src))
		mustStatus(t, r, 400)
		if msg := r.errorText(t); !strings.Contains(msg, tc.want) {
			t.Errorf("%s: %q, want %q", tc.name, msg, tc.want)
		}
		r = do(t, http.MethodPut, s.Internal.URL+"/networking/v1/internal/tags", "", `{"id":"`+tc.src+`","type":"app"}`)
		mustStatus(t, r, 400)
	}
	if got := decode[apiwire.PoliciesV1](t, do(t, http.MethodGet, url, token, "")); got.TotalPolicies != 0 {
		t.Fatalf("refused ids were stored: %+v", got)
	}
	// A proper pair is one character, stored as sent.
	mustStatus(t, do(t, http.MethodPost, url, token, policy(`app-\uD83D\uDE00`)), 200)
	got := decode[apiwire.PoliciesV1](t, do(t, http.MethodGet, url, token, ""))
	if got.TotalPolicies != 1 || got.Policies[0].Source.ID != "app-😀" {
		t.Fatalf("surrogate pair: %+v", got)
	}
}
