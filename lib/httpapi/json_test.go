package httpapi_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"netman/lib/httpapi"
)

// encoding/json turns invalid UTF-8 and unpaired surrogate escapes into U+FFFD; a
// body holding either must be refused before that, or different ids become one.
func TestDecodeBodyRefusesWhatJSONWouldReplace(t *testing.T) {
	cases := []struct {
		name, body string
		want       string // "" means accepted
	}{
		{"plain", `{"id":"app-a"}`, ""},
		{"escaped UTF-8", `{"id":"caf\u00e9"}`, ""},
		{"raw UTF-8", `{"id":"café 😀"}`, ""},
		{"surrogate pair", `{"id":"\uD83D\uDE00"}`, ""},
		{"lower-case pair", `{"id":"\ud83d\ude00"}`, ""},
		{"escaped backslash then u", `{"id":"\\uD800"}`, ""},
		{"escaped quote", `{"id":"a\"b\uD83D\uDE00"}`, ""},
		{"invalid byte", "{\"id\":\"a\xffb\"}", "not valid UTF-8 (byte 8)"},
		{"truncated sequence", "{\"id\":\"caf\xc3\"}", "not valid UTF-8"},
		{"overlong encoding", "{\"id\":\"\xc0\xaf\"}", "not valid UTF-8"},
		{"encoded surrogate", "{\"id\":\"\xed\xa0\x80\"}", "not valid UTF-8"},
		{"lone high surrogate", `{"id":"a\uD800"}`, `\uD800 without its surrogate pair`},
		{"lone low surrogate", `{"id":"\uDC00x"}`, `\uDC00 without its surrogate pair`},
		{"high then non-low", `{"id":"\uD800\u0041"}`, `\uD800 without`},
		{"two highs", `{"id":"\uD800\uD800\uDC00"}`, `\uD800 without`},
		{"high at the end of the body", `{"id":"\uD800`, `\uD800 without`},
		{"in a key", `{"\uDFFF":1}`, `\uDFFF without`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(tc.body))
			var v map[string]any
			status, err := httpapi.DecodeBody(r, &v)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("refused: %d %v", status, err)
				}
				return
			}
			if err == nil || status != http.StatusBadRequest || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %d %v, want 400 containing %q", status, err, tc.want)
			}
		})
	}
}
