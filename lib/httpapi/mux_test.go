package httpapi_test

import (
	"bufio"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"netman/lib/httpapi"
)

// raw sends one request as written (Go's client would clean some of these) and
// returns the response.
func raw(t *testing.T, addr, request string) (*http.Response, string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, request); err != nil {
		t.Fatal(err)
	}
	method, _, _ := strings.Cut(request, " ")
	resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: method})
	if err != nil {
		t.Fatalf("%q: %v", request, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func TestMuxAnswersEverythingInJSON(t *testing.T) {
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		httpapi.WriteValue(w, r, http.StatusOK, r.URL.RawQuery)
	})
	mux := httpapi.NewMux(httpapi.Middleware{Server: "test", Logger: slog.New(slog.DiscardHandler)}, []httpapi.Route{
		{Name: "list", Method: http.MethodGet, Path: "/things", Handler: ok, Query: []string{"id"}},
		{Name: "make", Method: http.MethodPost, Path: "/things", Handler: ok},
		{Name: "root", Method: http.MethodGet, Path: "/{$}", Handler: ok},
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	addr := srv.Listener.Addr().String()

	cases := []struct {
		name, request string
		status        int
		want          string // in the error; "" for a success
	}{
		{"route", "GET /things?id=a HTTP/1.1\r\nHost: x\r\n\r\n", 200, ""},
		{"root", "GET / HTTP/1.1\r\nHost: x\r\n\r\n", 200, ""},
		{"HEAD", "HEAD /things HTTP/1.1\r\nHost: x\r\n\r\n", 200, ""},
		{"unknown path", "GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n", 404, "no such endpoint: /nothing"},
		{"double slash, not redirected", "GET //things HTTP/1.1\r\nHost: x\r\n\r\n", 404, "no such endpoint: //things"},
		{"dot dot, not redirected", "GET /x/../things HTTP/1.1\r\nHost: x\r\n\r\n", 404, "no such endpoint"},
		{"trailing double slash", "GET /things// HTTP/1.1\r\nHost: x\r\n\r\n", 404, "no such endpoint"},
		{"other method", "PUT /things HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", 405, "method PUT is not allowed; use GET, HEAD, POST"},
		{"CONNECT", "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", 405, "method CONNECT is not allowed"},
		{"CONNECT with a path", "CONNECT /things HTTP/1.1\r\nHost: x\r\n\r\n", 405, "method CONNECT is not allowed"},
		{"asterisk", "GET * HTTP/1.1\r\nHost: x\r\n\r\n", 400, "request target * is not a path"},
		{"unknown parameter", "GET /things?id=a&idz=b HTTP/1.1\r\nHost: x\r\n\r\n", 400, `unknown query parameter "idz": this route accepts id`},
		{"no parameters here", "POST /things?id=a HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", 400, `unknown query parameter "id": this route takes no query parameters`},
		{"malformed query", "GET /things?id=%zz HTTP/1.1\r\nHost: x\r\n\r\n", 400, "invalid query string"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := raw(t, addr, tc.request)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d; body %q", resp.StatusCode, tc.status, body)
			}
			if resp.Header.Get(httpapi.RequestIDHeader) == "" {
				t.Errorf("no %s header", httpapi.RequestIDHeader)
			}
			if tc.want == "" {
				return
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
			var e struct{ Error string }
			if err := json.Unmarshal([]byte(body), &e); err != nil || !strings.Contains(e.Error, tc.want) {
				t.Fatalf("body %q, want a JSON error containing %q", body, tc.want)
			}
		})
	}
}
