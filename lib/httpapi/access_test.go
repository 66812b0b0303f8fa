package httpapi_test

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"netman/internal/testsupport/syncbuf"
	"netman/lib/httpapi"
	"netman/lib/mutualtls"
	"netman/lib/mutualtls/mutualtlstest"
)

type accessLine struct {
	Level, Msg, Server, Route, Method, Path, Remote string
	Status                                          int
	DurationMs                                      *float64 `json:"duration_ms"`
	ClientCN                                        string   `json:"client_cn"`
	TokenSubject                                    string   `json:"token_subject"`
	UserName                                        string   `json:"user_name"`
	Suppressed                                      int64
	RequestID                                       string `json:"request_id"`
}

func lines(t *testing.T, logs *syncbuf.Buffer) []accessLine {
	t.Helper()
	var out []accessLine
	for _, l := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		if l == "" {
			continue
		}
		var a accessLine
		if err := json.Unmarshal([]byte(l), &a); err != nil {
			t.Fatalf("%q: %v", l, err)
		}
		out = append(out, a)
	}
	return out
}

// An internal request over real mutual TLS: the access line is at info level and
// names the agent by its certificate's CN. Polls after the first are sampled: one line
// per client and route and minute, failures always.
func TestAccessLineNamesTheClientCertificate(t *testing.T) {
	var logs syncbuf.Buffer
	mw := httpapi.Middleware{
		Server: "internal", Logger: slog.New(slog.NewJSONHandler(&logs, nil)),
		Metrics: httpapi.NewMetrics(prometheus.NewRegistry()), Access: httpapi.NewAccessLog(true),
	}
	mux := httpapi.NewMux(mw, []httpapi.Route{
		{Name: "policies_v0", Method: http.MethodGet, Path: "/policies", Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, `{"policies":[]}`)
		})},
	})
	files, _ := mutualtlstest.WriteFiles(t, t.TempDir())
	serverTLS, err := mutualtls.ServerConfig(files.ServerCert, files.ServerKey, files.CACert)
	if err != nil {
		t.Fatal(err)
	}
	clientTLS, err := mutualtls.ClientConfig(files.ClientCert, files.ClientKey, files.CACert)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(mux)
	srv.TLS = serverTLS
	srv.StartTLS()
	defer srv.Close()
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: clientTLS}}
	get := func(path string) {
		resp, err := client.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	for range 20 {
		get("/policies")
	}
	get("/nope")
	got := lines(t, &logs)
	if len(got) != 2 {
		t.Fatalf("%d lines for 20 polls and one 404, want 2 (the first poll, the 404):\n%s", len(got), logs.String())
	}
	first := got[0]
	if first.Level != "INFO" || first.Msg != "request" || first.Server != "internal" || first.Route != "policies_v0" ||
		first.Status != 200 || first.ClientCN != "policy-agent" || first.DurationMs == nil || first.RequestID == "" || first.Remote == "" {
		t.Errorf("access line %+v", first)
	}
	if got[1].Status != 404 || got[1].ClientCN != "policy-agent" {
		t.Errorf("404 line %+v", got[1])
	}
}

// On the external API every request is logged, with whom the token was issued to.
func TestAccessLineNamesTheTokenSubject(t *testing.T) {
	var logs syncbuf.Buffer
	mw := httpapi.Middleware{Server: "external", Logger: slog.New(slog.NewJSONHandler(&logs, nil)), Access: httpapi.NewAccessLog(false)}
	mux := httpapi.NewMux(mw, []httpapi.Route{
		{Name: "whoami", Method: http.MethodGet, Path: "/whoami", Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			// What auth.Require does once the token is verified.
			httpapi.SetCaller(r.Context(), "user-guid-1", "admin", "cf")
			io.WriteString(w, `{}`)
		})},
	})
	for range 3 {
		mux.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/whoami", nil))
	}
	got := lines(t, &logs)
	if len(got) != 3 {
		t.Fatalf("%d lines for 3 external requests, want 3", len(got))
	}
	if a := got[0]; a.TokenSubject != "user-guid-1" || a.UserName != "admin" || a.ClientCN != "" || a.Server != "external" {
		t.Errorf("access line %+v", a)
	}
}
