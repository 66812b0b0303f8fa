package externalapi_test

import (
	"net/http"
	"slices"
	"strings"
	"testing"

	"netman/lib/apiwire"
	"netman/policy-server/api/externalapi/externalapitest"
)

// The external lists select as Cloud Foundry's policy server does, so its clients
// (which list by source and then delete what they got) see only what they asked for.
func TestListFilters(t *testing.T) {
	s := externalapitest.New(t, externalapitest.Options{})
	token := s.AdminToken(t)
	v0 := s.External.URL + "/networking/v0/external/policies"
	v1 := s.External.URL + "/networking/v1/external/policies"
	mustStatus(t, do(t, http.MethodPost, v1, token, v1Body(
		v1Policy("a", "b", "tcp", 80, 80),
		v1Policy("a", "c", "tcp", 81, 81),
		v1Policy("b", "a", "udp", 82, 82),
		v1Policy("c", "b", "tcp", 83, 83),
		v1Policy("d", "d", "tcp", 84, 84),
	)), 200)

	cases := []struct {
		query string
		want  []string // "src>dst" in list order
	}{
		{"", []string{"a>b", "a>c", "b>a", "c>b", "d>d"}},
		{"?source_id=a", []string{"a>b", "a>c"}},
		{"?source_id=a,c", []string{"a>b", "a>c", "c>b"}},
		{"?source_id=a&source_id=c", []string{"a>b", "a>c", "c>b"}},
		{"?dest_id=b", []string{"a>b", "c>b"}},
		{"?dest_id=a,d", []string{"b>a", "d>d"}},
		{"?source_id=a&dest_id=b", []string{"a>b"}},
		{"?source_id=a,b,c&dest_id=b", []string{"a>b", "c>b"}},
		{"?source_id=b&dest_id=b", nil},
		{"?source_id=", nil},
		{"?dest_id=", nil},
		{"?source_id=nobody", nil},
		{"?id=b", []string{"a>b", "b>a", "c>b"}},
		// id takes precedence over source_id and dest_id, as in Cloud Foundry.
		{"?id=d&source_id=a", []string{"d>d"}},
		{"?id=&dest_id=b", nil},
	}
	for _, tc := range cases {
		for _, url := range []string{v0, v1} {
			r := do(t, http.MethodGet, url+tc.query, token, "")
			mustStatus(t, r, 200)
			var got []string
			var total int
			if url == v0 {
				l := decode[apiwire.PoliciesV0](t, r)
				total = l.TotalPolicies
				for _, p := range l.Policies {
					got = append(got, p.Source.ID+">"+p.Destination.ID)
				}
			} else {
				l := decode[apiwire.PoliciesV1](t, r)
				total = l.TotalPolicies
				for _, p := range l.Policies {
					got = append(got, p.Source.ID+">"+p.Destination.ID)
				}
			}
			if !slices.Equal(got, tc.want) || total != len(tc.want) {
				t.Errorf("%s%s: got %v (total %d), want %v", url[len(s.External.URL):], tc.query, got, total, tc.want)
			}
		}
	}
}

// A parameter the route does not know is refused, naming it, on every route: a
// misspelt filter must not turn into a list of everything.
func TestUnknownQueryParameters(t *testing.T) {
	s := externalapitest.New(t, externalapitest.Options{})
	token := s.AdminToken(t)
	base := s.External.URL + "/networking/"
	cases := []struct {
		method, path, query, want string
	}{
		{"GET", "v1/external/policies", "?ids=a", `unknown query parameter "ids": this route accepts id, source_id, dest_id`},
		{"GET", "v1/external/policies", "?Id=a", `unknown query parameter "Id"`},
		{"GET", "v0/external/policies", "?id=a&sourceid=b", `unknown query parameter "sourceid"`},
		{"GET", "v1/external/tags", "?id=a", `unknown query parameter "id": this route takes no query parameters`},
		{"GET", "v0/external/whoami", "?x", `unknown query parameter "x"`},
		{"POST", "v1/external/policies", "?force=true", `unknown query parameter "force"`},
		{"POST", "v0/external/policies/delete", "?id=a", `unknown query parameter "id"`},
		{"DELETE", "v1/external/policies", "?b=1&a=2", `unknown query parameter "a", "b"`},
		{"GET", "v1/external/policies", "?id=%zz", "invalid query string"},
	}
	for _, tc := range cases {
		body := ""
		if tc.method != "GET" {
			body = v1Body(v1Policy("a", "b", "tcp", 1, 1))
		}
		r := do(t, tc.method, base+tc.path+tc.query, token, body)
		mustStatus(t, r, 400)
		if msg := r.errorText(t); !strings.Contains(msg, tc.want) {
			t.Errorf("%s %s%s: %q, want it to contain %q", tc.method, tc.path, tc.query, msg, tc.want)
		}
	}
	// Nothing was written by the refused creates.
	if got := decode[apiwire.PoliciesV1](t, do(t, http.MethodGet, base+"v1/external/policies", token, "")); got.TotalPolicies != 0 {
		t.Fatalf("a refused request wrote policies: %+v", got)
	}
	for _, path := range []string{"v1/internal/policies", "v1/internal/policies_last_updated"} {
		r := do(t, http.MethodGet, s.Internal.URL+"/networking/"+path+"?wat=1", "", "")
		mustStatus(t, r, 400)
		if msg := r.errorText(t); !strings.Contains(msg, `unknown query parameter "wat"`) {
			t.Errorf("%s: %q", path, msg)
		}
	}
}
