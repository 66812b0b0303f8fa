package externalapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"

	"netman/lib/apiwire"
	"netman/lib/httpapi"
	"netman/lib/models"
	"netman/lib/uaatoken"
	"netman/policy-server/api/externalapi/externalapitest"
	"netman/policy-server/auth/authtest"
)

type response struct {
	status int
	header http.Header
	body   string
}

func (r response) errorText(t *testing.T) string {
	t.Helper()
	var e struct{ Error string }
	if err := json.Unmarshal([]byte(r.body), &e); err != nil || e.Error == "" {
		t.Fatalf("body %q is not a JSON error", r.body)
	}
	return e.Error
}

func do(t *testing.T, method, url, token, body string) response {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if ct := resp.Header.Get("Content-Type"); len(b) > 0 && ct != "application/json" {
		t.Errorf("%s %s: Content-Type %q", method, url, ct)
	}
	return response{resp.StatusCode, resp.Header, string(b)}
}

func mustStatus(t *testing.T, r response, want int) {
	t.Helper()
	if r.status != want {
		t.Fatalf("status %d, want %d; body %s", r.status, want, r.body)
	}
}

func v1Body(ps ...string) string { return `{"policies":[` + strings.Join(ps, ",") + `]}` }

func v1Policy(src, dst, proto string, start, end int) string {
	return fmt.Sprintf(`{"source":{"id":%s},"destination":{"id":%s,"protocol":%s,"ports":{"start":%d,"end":%d}}}`, js(src), js(dst), js(proto), start, end)
}

func v0Policy(src, dst, proto string, port int) string {
	return fmt.Sprintf(`{"source":{"id":%s},"destination":{"id":%s,"protocol":%s,"port":%d}}`, js(src), js(dst), js(proto), port)
}

// js is s as a JSON string.
func js(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

func decode[T any](t *testing.T, r response) T {
	t.Helper()
	var v T
	if err := json.Unmarshal([]byte(r.body), &v); err != nil {
		t.Fatalf("decoding %q: %v", r.body, err)
	}
	return v
}

func TestValidation(t *testing.T) {
	s := externalapitest.New(t, externalapitest.Options{MaxPolicies: 3})
	token := s.AdminToken(t)
	v0 := s.External.URL + "/networking/v0/external/policies"
	v1 := s.External.URL + "/networking/v1/external/policies"
	long := strings.Repeat("a", 256)
	ok255 := strings.Repeat("a", 255)

	cases := []struct {
		name, url, body string
		status          int
		want            string
	}{
		{"not JSON", v1, `policies: yes`, 400, "not valid JSON"},
		{"empty body", v1, ``, 400, "empty"},
		{"truncated JSON", v1, `{"policies":[`, 400, "not valid JSON"},
		{"two values", v1, v1Body(v1Policy("a", "b", "tcp", 1, 1)) + `{}`, 400, "data after the JSON value"},
		{"wrong type", v1, `{"policies":{}}`, 400, "policies must not be a JSON object"},
		{"no policies field", v1, `{}`, 400, "no policies given"},
		{"empty policies", v1, `{"policies":[]}`, 400, "no policies given"},
		{"null policies", v1, `{"policies":null}`, 400, "no policies given"},
		{"too many", v1, v1Body(v1Policy("a", "b", "tcp", 1, 1), v1Policy("a", "c", "tcp", 1, 1), v1Policy("a", "d", "tcp", 1, 1), v1Policy("a", "e", "tcp", 1, 1)), 400, "too many policies: 4 in one request, at most 3"},
		{"no source", v1, `{"policies":[{"destination":{"id":"b","protocol":"tcp","ports":{"start":1,"end":1}}}]}`, 400, "policies[0].source is missing"},
		{"no destination", v1, `{"policies":[{"source":{"id":"a"}}]}`, 400, "policies[0].destination is missing"},
		{"no source id", v1, `{"policies":[{"source":{},"destination":{"id":"b","protocol":"tcp","ports":{"start":1,"end":1}}}]}`, 400, "policies[0].source.id is missing"},
		{"no destination id", v1, `{"policies":[{"source":{"id":"a"},"destination":{"protocol":"tcp","ports":{"start":1,"end":1}}}]}`, 400, "policies[0].destination.id is missing"},
		{"empty source id", v1, v1Body(v1Policy("", "b", "tcp", 1, 1)), 400, "policies[0].source.id must not be empty"},
		{"empty destination id", v1, v1Body(v1Policy("a", "", "tcp", 1, 1)), 400, "policies[0].destination.id must not be empty"},
		{"id of 256 bytes", v1, v1Body(v1Policy(long, "b", "tcp", 1, 1)), 400, "policies[0].source.id is 256 bytes long; at most 255"},
		{"comma in id", v1, v1Body(v1Policy("a", "b,c", "tcp", 1, 1)), 400, "must not contain a comma"},
		{"space in id", v1, v1Body(v1Policy("a b", "c", "tcp", 1, 1)), 400, "must not contain whitespace"},
		{"tab in id", v1, v1Body(v1Policy("a\tb", "c", "tcp", 1, 1)), 400, "must not contain whitespace"},
		{"non-breaking space in id", v1, v1Body(v1Policy("a\u00a0b", "c", "tcp", 1, 1)), 400, "must not contain whitespace"},
		{"control char in id", v1, v1Body(v1Policy("a\u0001b", "c", "tcp", 1, 1)), 400, "must not contain control characters"},
		{"second policy bad", v1, v1Body(v1Policy("a", "b", "tcp", 1, 1), v1Policy("a", "b", "icmp", 1, 1)), 400, `policies[1].destination.protocol "icmp" is not allowed`},
		{"protocol upper case", v1, v1Body(v1Policy("a", "b", "TCP", 1, 1)), 400, `"TCP" is not allowed; it must be "tcp" or "udp"`},
		{"protocol missing", v1, `{"policies":[{"source":{"id":"a"},"destination":{"id":"b","ports":{"start":1,"end":1}}}]}`, 400, "protocol is missing"},
		{"ports missing", v1, `{"policies":[{"source":{"id":"a"},"destination":{"id":"b","protocol":"tcp"}}]}`, 400, "policies[0].destination.ports is missing"},
		{"v0 port on v1", v1, v1Body(v0Policy("a", "b", "tcp", 80)), 400, `unknown field "port"`},
		{"port 0", v1, v1Body(v1Policy("a", "b", "tcp", 0, 10)), 400, "ports.start 0 is outside 1-65535"},
		{"port 65536", v1, v1Body(v1Policy("a", "b", "tcp", 1, 65536)), 400, "ports.end 65536 is outside 1-65535"},
		{"negative port", v1, v1Body(v1Policy("a", "b", "tcp", -1, 1)), 400, "outside 1-65535"},
		{"start after end", v1, v1Body(v1Policy("a", "b", "tcp", 9000, 8000)), 400, "ports.start 9000 is greater than policies[0].destination.ports.end 8000"},
		{"end missing", v1, `{"policies":[{"source":{"id":"a"},"destination":{"id":"b","protocol":"tcp","ports":{"start":1}}}]}`, 400, "ports.end is missing"},
		{"fractional port", v1, `{"policies":[{"source":{"id":"a"},"destination":{"id":"b","protocol":"tcp","ports":{"start":1.5,"end":2}}}]}`, 400, "must not be a JSON number"},
		{"source tag", v1, `{"policies":[{"source":{"id":"a","tag":"0001"},"destination":{"id":"b","protocol":"tcp","ports":{"start":1,"end":1}}}]}`, 400, "policies[0].source.tag must not be sent: tags are assigned by the policy server"},
		{"destination tag", v1, `{"policies":[{"source":{"id":"a"},"destination":{"id":"b","tag":"","protocol":"tcp","ports":{"start":1,"end":1}}}]}`, 400, "policies[0].destination.tag must not be sent"},
		{"unknown field", v1, `{"policies":[{"source":{"id":"a"},"destination":{"id":"b","protocl":"tcp","ports":{"start":1,"end":1}}}]}`, 400, `unknown field "protocl"`},
		{"v0 port missing", v0, `{"policies":[{"source":{"id":"a"},"destination":{"id":"b","protocol":"tcp"}}]}`, 400, "policies[0].destination.port is missing"},
		{"v0 port 0", v0, v1Body(v0Policy("a", "b", "tcp", 0)), 400, "destination.port 0 is outside 1-65535"},
		{"v0 ports on v0", v0, v1Body(v1Policy("a", "b", "tcp", 1, 2)), 400, `unknown field "ports"`},
		{"v0 bad protocol", v0, v1Body(v0Policy("a", "b", "sctp", 80)), 400, `"sctp" is not allowed`},
		{"v0 delete validates too", v0 + "/delete", v1Body(v0Policy("a", "b", "udp", 70000)), 400, "outside 1-65535"},
		{"v1 delete validates too", v1 + "/delete", `{"policies":[]}`, 400, "no policies given"},
		{"oversized body", v1, `{"policies":[` + strings.Repeat(" ", httpapi.MaxBodyBytes) + `]}`, 400, "larger than 10485760 bytes (10 MiB)"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := do(t, http.MethodPost, tc.url, token, tc.body)
			mustStatus(t, r, tc.status)
			if msg := r.errorText(t); !strings.Contains(msg, tc.want) {
				t.Errorf("error %q does not contain %q", msg, tc.want)
			}
		})
	}
	t.Run("255 bytes is fine", func(t *testing.T) {
		mustStatus(t, do(t, http.MethodPost, v1, token, v1Body(v1Policy(ok255, "b", "tcp", 1, 1))), 200)
	})
	t.Run("refused requests wrote nothing", func(t *testing.T) {
		ps, err := s.Store.All(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if len(ps) != 1 || ps[0].Source.ID != ok255 {
			t.Fatalf("store holds %v, want only the 255-byte policy", ps)
		}
	})
}

func TestPoliciesV1RoundTrip(t *testing.T) {
	s := externalapitest.New(t, externalapitest.Options{})
	token := s.AdminToken(t)
	url := s.External.URL + "/networking/v1/external/policies"

	empty := do(t, http.MethodGet, url, token, "")
	mustStatus(t, empty, 200)
	if empty.body != `{"total_policies":0,"policies":[]}` {
		t.Fatalf("empty list: %s", empty.body)
	}

	create := v1Body(v1Policy("app-a", "app-b", "tcp", 8080, 8090), v1Policy("app-a", "app-c", "udp", 53, 53), v1Policy("app-c", "app-b", "tcp", 443, 443))
	for range 2 { // the second create changes nothing and still succeeds
		r := do(t, http.MethodPost, url, token, create)
		mustStatus(t, r, 200)
		if r.body != `{}` {
			t.Fatalf("create body %s", r.body)
		}
	}
	r := do(t, http.MethodGet, url, token, "")
	mustStatus(t, r, 200)
	want := `{"total_policies":3,"policies":[` +
		`{"source":{"id":"app-a"},"destination":{"id":"app-b","protocol":"tcp","ports":{"start":8080,"end":8090}}},` +
		`{"source":{"id":"app-a"},"destination":{"id":"app-c","protocol":"udp","ports":{"start":53,"end":53}}},` +
		`{"source":{"id":"app-c"},"destination":{"id":"app-b","protocol":"tcp","ports":{"start":443,"end":443}}}]}`
	if r.body != want {
		t.Fatalf("list:\n got %s\nwant %s", r.body, want)
	}

	filtered := decode[apiwire.PoliciesV1](t, do(t, http.MethodGet, url+"?id=app-c", token, ""))
	if filtered.TotalPolicies != 2 || len(filtered.Policies) != 2 {
		t.Fatalf("?id=app-c: %+v", filtered)
	}
	if none := do(t, http.MethodGet, url+"?id=", token, ""); none.body != `{"total_policies":0,"policies":[]}` {
		t.Fatalf("?id= : %s", none.body)
	}

	// Delete with DELETE and a body, then the same again (idempotent), then via POST .../delete.
	del := v1Body(v1Policy("app-a", "app-b", "tcp", 8080, 8090))
	mustStatus(t, do(t, http.MethodDelete, url, token, del), 200)
	mustStatus(t, do(t, http.MethodDelete, url, token, del), 200)
	mustStatus(t, do(t, http.MethodPost, url+"/delete", token, v1Body(v1Policy("app-a", "app-c", "udp", 53, 53), v1Policy("never", "existed", "tcp", 1, 1))), 200)
	left := decode[apiwire.PoliciesV1](t, do(t, http.MethodGet, url, token, ""))
	if left.TotalPolicies != 1 || left.Policies[0].Source.ID != "app-c" {
		t.Fatalf("after deletes: %+v", left)
	}
	// A range is a policy of its own: deleting 8080-8080 does not touch 8080-8090.
	mustStatus(t, do(t, http.MethodPost, url, token, v1Body(v1Policy("x", "y", "tcp", 8080, 8090))), 200)
	mustStatus(t, do(t, http.MethodDelete, url, token, v1Body(v1Policy("x", "y", "tcp", 8080, 8080))), 200)
	if got := decode[apiwire.PoliciesV1](t, do(t, http.MethodGet, url+"?id=x", token, "")); got.TotalPolicies != 1 {
		t.Fatalf("deleting a single port removed the range: %+v", got)
	}
}

func TestPoliciesV0(t *testing.T) {
	s := externalapitest.New(t, externalapitest.Options{})
	token := s.AdminToken(t)
	v0 := s.External.URL + "/networking/v0/external/policies"
	v1 := s.External.URL + "/networking/v1/external/policies"

	mustStatus(t, do(t, http.MethodPost, v0, token, v1Body(v0Policy("a", "b", "tcp", 8080), v0Policy("a", "b", "tcp", 8080))), 200)
	mustStatus(t, do(t, http.MethodPost, v1, token, v1Body(v1Policy("c", "d", "udp", 1000, 2000))), 200)

	r := do(t, http.MethodGet, v0, token, "")
	mustStatus(t, r, 200)
	want := `{"total_policies":2,"policies":[` +
		`{"source":{"id":"a"},"destination":{"id":"b","protocol":"tcp","port":8080}},` +
		`{"source":{"id":"c"},"destination":{"id":"d","protocol":"udp","port":1000,"ports":{"start":1000,"end":2000}}}]}`
	if r.body != want {
		t.Fatalf("v0 list:\n got %s\nwant %s", r.body, want)
	}
	// v1 sees the v0 policy as a one-port range.
	if got := do(t, http.MethodGet, v1+"?id=a", token, ""); !strings.Contains(got.body, `"ports":{"start":8080,"end":8080}`) {
		t.Fatalf("v1 view of a v0 policy: %s", got.body)
	}
	mustStatus(t, do(t, http.MethodDelete, v0, token, v1Body(v0Policy("a", "b", "tcp", 8080))), 200)
	mustStatus(t, do(t, http.MethodPost, v0+"/delete", token, v1Body(v0Policy("a", "b", "tcp", 8080))), 200)
	if got := decode[apiwire.PoliciesV0](t, do(t, http.MethodGet, v0, token, "")); got.TotalPolicies != 1 {
		t.Fatalf("after v0 delete: %+v", got)
	}
}

func TestTagsAndWhoami(t *testing.T) {
	s := externalapitest.New(t, externalapitest.Options{})
	token := s.AdminToken(t)
	mustStatus(t, do(t, http.MethodPost, s.External.URL+"/networking/v1/external/policies", token,
		v1Body(v1Policy("app-b", "app-a", "tcp", 80, 80))), 200)

	v0 := do(t, http.MethodGet, s.External.URL+"/networking/v0/external/tags", token, "")
	mustStatus(t, v0, 200)
	if v0.body != `{"tags":[{"id":"app-a","tag":"0002"},{"id":"app-b","tag":"0001"}]}` &&
		v0.body != `{"tags":[{"id":"app-a","tag":"0001"},{"id":"app-b","tag":"0002"}]}` {
		t.Fatalf("v0 tags: %s", v0.body)
	}
	v1 := decode[apiwire.TagsV1](t, do(t, http.MethodGet, s.External.URL+"/networking/v1/external/tags", token, ""))
	if len(v1.Tags) != 2 || v1.Tags[0].Type != "app" || v1.Tags[0].Tag == v1.Tags[1].Tag {
		t.Fatalf("v1 tags: %+v", v1)
	}

	for _, v := range []string{"v0", "v1"} {
		r := do(t, http.MethodGet, s.External.URL+"/networking/"+v+"/external/whoami", token, "")
		mustStatus(t, r, 200)
		if r.body != `{"user_name":"admin","user_id":"user-guid-1","client_id":"cf","scope":["network.admin","openid"]}` {
			t.Fatalf("%s whoami: %s", v, r.body)
		}
	}
	c := authtest.Claims()
	c.UserName, c.UserID, c.ClientID = "", "", "network-automation"
	r := do(t, http.MethodGet, s.External.URL+"/networking/v1/external/whoami", s.Key.Token(t, c), "")
	if got := decode[apiwire.Whoami](t, r); got.UserName != "client:network-automation" {
		t.Fatalf("client token whoami: %s", r.body)
	}
}

func TestEveryExternalRouteNeedsAdmin(t *testing.T) {
	s := externalapitest.New(t, externalapitest.Options{JWKS: true})
	readOnly := authtest.Claims()
	readOnly.Scope = []string{"network.read"}
	writer := authtest.Claims()
	writer.Scope = []string{uaatoken.ScopeWrite}
	stranger := authtest.NewKey(t, "test-key")

	body := v1Body(v1Policy("a", "b", "tcp", 1, 1))
	routes := []struct{ method, path, body string }{
		{"GET", "/networking/v0/external/policies", ""},
		{"POST", "/networking/v0/external/policies", body},
		{"DELETE", "/networking/v0/external/policies", body},
		{"POST", "/networking/v0/external/policies/delete", body},
		{"GET", "/networking/v0/external/tags", ""},
		{"GET", "/networking/v0/external/whoami", ""},
		{"GET", "/networking/v1/external/policies", ""},
		{"POST", "/networking/v1/external/policies", body},
		{"DELETE", "/networking/v1/external/policies", body},
		{"POST", "/networking/v1/external/policies/delete", body},
		{"GET", "/networking/v1/external/tags", ""},
		{"GET", "/networking/v1/external/whoami", ""},
	}
	tokens := []struct {
		name, token string
		status      int
		want        string
	}{
		{"no token", "", 401, "missing bearer token"},
		{"foreign signature", stranger.AdminToken(t), 401, "signature is invalid"},
		{"network.read", s.Key.Token(t, readOnly), 403, "token lacks scope network.admin"},
		{"network.write", s.Key.Token(t, writer), 403, "needs a Cloud Controller integration"},
	}
	for _, rt := range routes {
		for _, tk := range tokens {
			t.Run(rt.method+" "+rt.path+" "+tk.name, func(t *testing.T) {
				r := do(t, rt.method, s.External.URL+rt.path, tk.token, rt.body)
				mustStatus(t, r, tk.status)
				if msg := r.errorText(t); !strings.Contains(msg, tk.want) {
					t.Errorf("error %q does not contain %q", msg, tk.want)
				}
				if tk.status == 401 && !strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Bearer") {
					t.Errorf("WWW-Authenticate = %q", r.header.Get("WWW-Authenticate"))
				}
			})
		}
	}
	if ps, _ := s.Store.All(context.Background()); len(ps) != 0 {
		t.Fatalf("refused requests created %v", ps)
	}
}

func TestTagExhaustionIsAllOrNothing(t *testing.T) {
	s := externalapitest.New(t, externalapitest.Options{TagLength: 1, MaxPolicies: 1000})
	token := s.AdminToken(t)
	url := s.External.URL + "/networking/v1/external/policies"

	// tag_length 1 gives 255 tags. 127 self-policies use 127 ids...
	var batch []string
	for i := range 127 {
		batch = append(batch, v1Policy(fmt.Sprintf("g%03d", i), fmt.Sprintf("g%03d", i), "tcp", 8080, 8080))
	}
	mustStatus(t, do(t, http.MethodPost, url, token, v1Body(batch...)), 200)
	// ...so a batch that is valid but needs 130 new ids cannot be stored: none of it is.
	var tooBig []string
	for i := range 65 {
		tooBig = append(tooBig, v1Policy(fmt.Sprintf("n%03d", 2*i), fmt.Sprintf("n%03d", 2*i+1), "tcp", 80, 80))
	}
	r := do(t, http.MethodPost, url, token, v1Body(tooBig...))
	mustStatus(t, r, http.StatusInsufficientStorage)
	want := "tags ran out (no tags left: the request needs 130 new tags, only 128 of the 255 tags that fit tag_length 1 are free)"
	if msg := r.errorText(t); !strings.Contains(msg, want) {
		t.Fatalf("exhaustion error %q, want it to contain %q", msg, want)
	}
	if got := decode[apiwire.PoliciesV1](t, do(t, http.MethodGet, url, token, "")); got.TotalPolicies != 127 {
		t.Fatalf("after the refused batch the store holds %d policies, want 127", got.TotalPolicies)
	}
	// 128 more ids fit exactly.
	mustStatus(t, do(t, http.MethodPost, url, token, v1Body(tooBig[:64]...)), 200)
	r = do(t, http.MethodPut, s.Internal.URL+"/networking/v1/internal/tags", "", `{"id":"one-more","type":"app"}`)
	mustStatus(t, r, http.StatusInsufficientStorage)
	if !strings.Contains(r.errorText(t), "tags ran out") {
		t.Fatalf("PUT tags on exhaustion: %s", r.body)
	}
	// Existing groups keep working: a new policy between known ids needs no tag.
	mustStatus(t, do(t, http.MethodPost, url, token, v1Body(v1Policy("g000", "g001", "udp", 53, 53))), 200)
}

func TestConcurrentCreatesOfTheSameNewIDs(t *testing.T) {
	s := externalapitest.New(t, externalapitest.Options{})
	token := s.AdminToken(t)
	url := s.External.URL + "/networking/v1/external/policies"
	var wg sync.WaitGroup
	results := make([]response, 16)
	for i := range results {
		wg.Go(func() {
			results[i] = do(t, http.MethodPost, url, token, v1Body(
				v1Policy("new-src", "new-dst", "tcp", 8080, 8080),
				v1Policy("new-dst", fmt.Sprintf("own-%d", i), "tcp", 9000+i, 9000+i),
			))
		})
	}
	wg.Wait()
	for i, r := range results {
		if r.status != 200 {
			t.Fatalf("request %d: %d %s", i, r.status, r.body)
		}
	}
	tags := decode[apiwire.TagsV1](t, do(t, http.MethodGet, s.External.URL+"/networking/v1/external/tags", token, ""))
	if len(tags.Tags) != 18 {
		t.Fatalf("%d groups, want 18: %+v", len(tags.Tags), tags)
	}
	seen := map[string]string{}
	for _, tg := range tags.Tags {
		if other, dup := seen[tg.Tag]; dup {
			t.Fatalf("tag %s given to %s and %s", tg.Tag, other, tg.ID)
		}
		seen[tg.Tag] = tg.ID
	}
	if got := decode[apiwire.PoliciesV1](t, do(t, http.MethodGet, url, token, "")); got.TotalPolicies != 17 {
		t.Fatalf("%d policies, want 17", got.TotalPolicies)
	}
}

func TestAuditLog(t *testing.T) {
	s := externalapitest.New(t, externalapitest.Options{})
	token := s.AdminToken(t)
	url := s.External.URL + "/networking/v1/external/policies"
	mustStatus(t, do(t, http.MethodPost, url, token, v1Body(v1Policy("a", "b", "tcp", 8080, 8090))), 200)
	mustStatus(t, do(t, http.MethodDelete, url, token, v1Body(v1Policy("a", "b", "tcp", 8080, 8090))), 200)
	mustStatus(t, do(t, http.MethodPost, url, token, v1Body(v1Policy("a", "b", "icmp", 1, 1))), 400)

	type line struct {
		Msg, Action, API, User, Result, Error, RequestID string
		Count                                            int
		Policies                                         []string
		Status                                           int
	}
	var audits []line
	for _, l := range strings.Split(strings.TrimSpace(s.Logs()), "\n") {
		var raw map[string]any
		if err := json.Unmarshal([]byte(l), &raw); err != nil {
			t.Fatalf("log line %q is not JSON", l)
		}
		if raw["msg"] != "audit" {
			continue
		}
		var a line
		_ = json.Unmarshal([]byte(l), &a)
		a.RequestID, _ = raw["request_id"].(string)
		audits = append(audits, a)
	}
	if len(audits) != 3 {
		t.Fatalf("%d audit lines, want 3:\n%s", len(audits), s.Logs())
	}
	want := []struct{ action, result string }{{"create_policies", "ok"}, {"delete_policies", "ok"}, {"create_policies", "refused"}}
	for i, a := range audits {
		if a.Action != want[i].action || a.Result != want[i].result || a.User != "admin" || a.API != "v1" || a.RequestID == "" {
			t.Errorf("audit line %d = %+v, want %v by admin", i, a, want[i])
		}
	}
	if !slices.Equal(audits[0].Policies, []string{"a -> b tcp/8080-8090"}) || audits[0].Count != 1 {
		t.Errorf("audit line names %v (count %d)", audits[0].Policies, audits[0].Count)
	}
	if !strings.Contains(audits[2].Error, "icmp") || audits[2].Status != 400 {
		t.Errorf("refused audit line: %+v", audits[2])
	}
	if strings.Contains(s.Logs(), token) {
		t.Error("the bearer token appears in the logs")
	}
}

func TestInternalV1(t *testing.T) {
	s := externalapitest.New(t, externalapitest.Options{})
	token := s.AdminToken(t)
	internal := s.Internal.URL + "/networking/v1/internal/"

	lastUpdated := func() int64 {
		t.Helper()
		r := do(t, http.MethodGet, internal+"policies_last_updated", "", "")
		mustStatus(t, r, 200)
		return decode[int64](t, r)
	}
	v0 := lastUpdated()

	mustStatus(t, do(t, http.MethodPost, s.External.URL+"/networking/v1/external/policies", token,
		v1Body(v1Policy("src", "dst", "tcp", 8080, 8090))), 200)
	v1 := lastUpdated()
	if v1 <= v0 {
		t.Fatalf("policies_last_updated %d -> %d after a create; want growth", v0, v1)
	}
	// A create that changes nothing leaves it alone.
	mustStatus(t, do(t, http.MethodPost, s.External.URL+"/networking/v1/external/policies", token,
		v1Body(v1Policy("src", "dst", "tcp", 8080, 8090))), 200)
	if v := lastUpdated(); v != v1 {
		t.Fatalf("policies_last_updated moved %d -> %d on a no-op create", v1, v)
	}

	tags := map[string]string{}
	for _, tg := range decode[apiwire.TagsV1](t, do(t, http.MethodGet, s.External.URL+"/networking/v1/external/tags", token, "")).Tags {
		tags[tg.ID] = tg.Tag
	}
	r := do(t, http.MethodGet, internal+"policies?id=dst", "", "")
	mustStatus(t, r, 200)
	want := fmt.Sprintf(`{"total_policies":1,"policies":[{"destination":{"id":"dst","ports":{"start":8080,"end":8090},"protocol":"tcp","tag":%q},"source":{"id":"src","tag":%q}}]}`, tags["dst"], tags["src"])
	if r.body != want {
		t.Fatalf("internal v1:\n got %s\nwant %s", r.body, want)
	}
	if r := do(t, http.MethodGet, internal+"policies?id=other", "", ""); r.body != `{"total_policies":0,"policies":[]}` {
		t.Fatalf("unmatched filter: %s", r.body)
	}

	// PUT tags: the first call makes a tag, repeats return the same one.
	first := do(t, http.MethodPut, internal+"tags", "", `{"id":"router-group-1","type":"router"}`)
	mustStatus(t, first, 200)
	tg := decode[apiwire.TagV1](t, first)
	if tg.ID != "router-group-1" || tg.Type != "router" || len(tg.Tag) != 4 {
		t.Fatalf("PUT tags: %s", first.body)
	}
	v2 := lastUpdated()
	if again := do(t, http.MethodPut, internal+"tags", "", `{"id":"router-group-1","type":"router"}`); again.body != first.body {
		t.Fatalf("second PUT: %s, first: %s", again.body, first.body)
	}
	if v2 <= v1 {
		t.Fatalf("policies_last_updated did not grow with a new tag: %d -> %d", v1, v2)
	}
	// An existing policy group keeps its tag (and type).
	existing := decode[apiwire.TagV1](t, do(t, http.MethodPut, internal+"tags", "", `{"id":"src","type":"app"}`))
	if existing.Tag != tags["src"] {
		t.Fatalf("PUT tags for src gave %s, policy shows %s", existing.Tag, tags["src"])
	}

	for _, bad := range []struct{ body, want string }{
		{`{"type":"app"}`, "id is missing"},
		{`{"id":"x"}`, "type is missing"},
		{`{"id":"","type":"app"}`, "id must not be empty"},
		{`{"id":"a,b","type":"app"}`, "comma"},
		{`{"id":"x","type":"app","tag":"0001"}`, `unknown field "tag"`},
		{`nope`, "not valid JSON"},
	} {
		r := do(t, http.MethodPut, internal+"tags", "", bad.body)
		mustStatus(t, r, 400)
		if !strings.Contains(r.errorText(t), bad.want) {
			t.Errorf("PUT tags %s: %s, want %q", bad.body, r.body, bad.want)
		}
	}
	if r := do(t, http.MethodPost, internal+"tags", "", `{}`); r.status != 405 || r.header.Get("Allow") != "PUT" {
		t.Fatalf("POST tags: %d Allow=%q", r.status, r.header.Get("Allow"))
	}
}

// The store keeps the policies; this checks the handler hands them over as the model says.
func TestStoreSeesWhatTheAPIWasGiven(t *testing.T) {
	s := externalapitest.New(t, externalapitest.Options{})
	mustStatus(t, do(t, http.MethodPost, s.External.URL+"/networking/v1/external/policies", s.AdminToken(t),
		v1Body(v1Policy("a", "b", "udp", 5000, 5010))), 200)
	ps, err := s.Store.All(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := models.Policy{Source: models.Source{ID: "a"}, Destination: models.Destination{ID: "b", Protocol: "udp", Ports: models.Ports{Start: 5000, End: 5010}}}
	if len(ps) != 1 {
		t.Fatalf("store holds %v", ps)
	}
	got := ps[0]
	got.Source.Tag, got.Destination.Tag = "", ""
	if got != want {
		t.Fatalf("store holds %+v, want %+v", got, want)
	}
}
