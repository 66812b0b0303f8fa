package integration_test

import (
	"bufio"
	"crypto/tls"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"netman/lib/datastore"
	"netman/lib/rules/rulestest"
)

// family is one metric as a scrape shows it: its type and the label names its series
// carry (le and quantile left out).
type family struct {
	typ    string
	labels []string
}

// scrape reads Prometheus' text format: # TYPE lines and samples.
func scrape(t *testing.T, body string) map[string]*family {
	t.Helper()
	fams := map[string]*family{}
	sample := regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? \S+`)
	label := regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)="(?:[^"\\]|\\.)*"`)
	sc := bufio.NewScanner(strings.NewReader(body))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, "# TYPE "); ok {
			name, typ, _ := strings.Cut(rest, " ")
			fams[name] = &family{typ: typ}
			continue
		}
		m := sample.FindStringSubmatch(line)
		if m == nil || strings.HasPrefix(line, "#") {
			continue
		}
		name := m[1]
		f := fams[name]
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			if base, ok := strings.CutSuffix(name, suffix); ok && fams[base] != nil && (fams[base].typ == "histogram" || fams[base].typ == "summary") {
				f = fams[base]
			}
		}
		if f == nil {
			t.Fatalf("sample without a TYPE: %s", line)
		}
		for _, l := range label.FindAllStringSubmatch(m[3], -1) {
			if l[1] != "le" && l[1] != "quantile" && !slices.Contains(f.labels, l[1]) {
				f.labels = append(f.labels, l[1])
			}
		}
	}
	for _, f := range fams {
		slices.Sort(f.labels)
	}
	return fams
}

// documented reads the metric table of docs/operations.md.
func documented(t *testing.T) map[string]*family {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot(t), "docs", "operations.md"))
	if err != nil {
		t.Fatal(err)
	}
	row := regexp.MustCompile("^\\| `(netman_[a-z0-9_]+)` \\| (\\w+) \\|([^|]*)\\|")
	out := map[string]*family{}
	for line := range strings.SplitSeq(string(b), "\n") {
		m := row.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		f := &family{typ: m[2]}
		for l := range strings.SplitSeq(m[3], ",") {
			if l = strings.Trim(strings.TrimSpace(l), "`"); l != "" {
				f.labels = append(f.labels, l)
			}
		}
		slices.Sort(f.labels)
		out[m[1]] = f
	}
	if len(out) < 10 {
		t.Fatalf("found %d metrics in the table of docs/operations.md", len(out))
	}
	return out
}

// dashboardQueries returns every PromQL expression of the Grafana dashboard.
func dashboardQueries(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot(t), "docs", "grafana", "netman.json"))
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Title  string `json:"title"`
		Panels []struct {
			Title   string `json:"title"`
			Type    string `json:"type"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("the dashboard is not JSON: %v", err)
	}
	var exprs []string
	for _, p := range d.Panels {
		if p.Type != "row" && len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			exprs = append(exprs, tg.Expr)
		}
	}
	return exprs
}

// TestMetricsMatchDocsAndDashboard runs a policy server and an agent, makes them do
// everything the dashboard shows (polls, a write, a failed handshake), and checks that
// the names and labels the binaries export, the table in docs/operations.md and the
// queries of docs/grafana/netman.json are the same set.
func TestMetricsMatchDocsAndDashboard(t *testing.T) {
	rulestest.RequireEnforcement(t)
	dir := t.TempDir()
	bins := build(t, dir, "cmd/policy-server", "cmd/policy-agent", "cmd/netman", "internal/tools/netprobe")
	srv := startPolicyServer(t, bins, dir)

	cell := rulestest.NewNS(t)
	forward(t, bins["netprobe"], cell, "127.0.0.1:"+strconv.Itoa(srv.internalPort), dir)
	store := filepath.Join(dir, "store.json")
	ds, err := datastore.New(store, datastore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ds.Add(t.Context(), datastore.Container{Handle: "c1", IP: "10.255.9.2",
		Metadata: map[string]any{"policy_group_id": appA, "app_id": appA}}); err != nil {
		t.Fatal(err)
	}
	// The agent's ports are in the cell, a network namespace of this test's own: nothing
	// else can hold them.
	health, debug := 4005, 22223
	config := filepath.Join(dir, "policy-agent.json")
	writeJSON(t, config, agentSettings(srv, store, dir, map[string]any{
		"poll_interval_seconds": 1, "health_check_port": health, "debug_server_port": debug,
	}))
	start(t, cell, "policy-agent", filepath.Join(dir, "policy-agent.log"), bins["policy-agent"], "-config-file", config)
	waitHTTP(t, cell, "http://127.0.0.1:"+strconv.Itoa(health)+"/health", 30*time.Second)
	agentMetrics := "http://127.0.0.1:" + strconv.Itoa(debug) + "/metrics"

	srv.policy(t, "add", appA, appB, "tcp", 8080)
	// A client without a certificate: a failed handshake on the internal listener.
	if c, err := tls.Dial("tcp", "127.0.0.1:"+strconv.Itoa(srv.internalPort), &tls.Config{InsecureSkipVerify: true, MaxVersion: tls.VersionTLS12}); err == nil {
		_, _ = c.Read(make([]byte, 1)) // the server's alert arrives after the handshake on the client's side
		c.Close()
	}
	// Wait for the agent to fetch and apply the new policy, so every cycle outcome has a series.
	fetched := regexp.MustCompile(`(?m)^netman_agent_policies 1$`)
	for deadline := time.Now().Add(20 * time.Second); !fetched.MatchString(getBody(t, cell, agentMetrics)); {
		if time.Now().After(deadline) {
			t.Fatal("the agent's netman_agent_policies did not reach 1 within 20s of the policy's creation")
		}
		time.Sleep(100 * time.Millisecond)
	}

	// Both log their build first and export it; the same version --version prints.
	for _, p := range []struct{ name, log string }{{"policy-server", srv.log}, {"policy-agent", filepath.Join(dir, "policy-agent.log")}} {
		b, err := os.ReadFile(p.log)
		if err != nil {
			t.Fatal(err)
		}
		first, _, _ := strings.Cut(string(b), "\n")
		if !strings.Contains(first, `"msg":"`+p.name+` starting"`) || !strings.Contains(first, `"version":"dev"`) || !strings.Contains(first, `"go_version":"go1.`) {
			t.Errorf("%s's first log line does not name its build: %s", p.name, first)
		}
	}
	serverMetrics := getBody(t, nil, srv.metrics)
	if !strings.Contains(serverMetrics, `netman_server_build_info{goversion="go1.`) || !strings.Contains(serverMetrics, `version="dev"} 1`) {
		t.Errorf("no netman_server_build_info with the version")
	}
	live := scrape(t, serverMetrics)
	for name, f := range scrape(t, getBody(t, cell, agentMetrics)) {
		live[name] = f
	}
	docs := documented(t)
	for name, f := range live {
		if !strings.HasPrefix(name, "netman_") {
			if !strings.HasPrefix(name, "go_") && !strings.HasPrefix(name, "process_") && !strings.HasPrefix(name, "promhttp_") {
				t.Errorf("%s: every netman series starts with netman_", name)
			}
			continue
		}
		d, ok := docs[name]
		switch {
		case !ok:
			t.Errorf("%s (%s %v) is exported but not in the table of docs/operations.md", name, f.typ, f.labels)
		case d.typ != f.typ || !slices.Equal(d.labels, f.labels):
			t.Errorf("%s: exported as %s %v, documented as %s %v", name, f.typ, f.labels, d.typ, d.labels)
		}
	}
	for name := range docs {
		if live[name] == nil {
			t.Errorf("%s is documented but neither binary exports it", name)
		}
	}

	ident := regexp.MustCompile(`netman_[a-z0-9_]+`)
	selector := regexp.MustCompile(`(netman_[a-z0-9_]+)\{([^}]*)\}`)
	matcher := regexp.MustCompile(`([a-z_]+)\s*(?:=~|!~|!=|=)`)
	by := regexp.MustCompile(`by \(([^)]*)\)`)
	used := map[string]bool{}
	for _, expr := range dashboardQueries(t) {
		var inExpr []*family
		for _, name := range ident.FindAllString(expr, -1) {
			base := name
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				if b, ok := strings.CutSuffix(name, suffix); ok && live[b] != nil && live[b].typ == "histogram" {
					base = b
				}
			}
			f := live[base]
			if f == nil {
				t.Errorf("the dashboard queries %s, which neither binary exports: %s", name, expr)
				continue
			}
			used[base] = true
			inExpr = append(inExpr, f)
		}
		for _, m := range selector.FindAllStringSubmatch(expr, -1) {
			if f := live[strings.TrimSuffix(m[1], "_bucket")]; f != nil {
				for _, l := range matcher.FindAllStringSubmatch(m[2], -1) {
					if !slices.Contains(f.labels, l[1]) {
						t.Errorf("the dashboard selects label %s of %s, which has %v: %s", l[1], m[1], f.labels, expr)
					}
				}
			}
		}
		for _, m := range by.FindAllStringSubmatch(expr, -1) {
			for l := range strings.SplitSeq(m[1], ",") {
				l = strings.TrimSpace(l)
				found := l == "le" || l == "instance" || l == "job"
				for _, f := range inExpr {
					found = found || slices.Contains(f.labels, l)
				}
				if !found {
					t.Errorf("the dashboard groups by %s, which no metric of the query has: %s", l, expr)
				}
			}
		}
	}
	// The panels the issue asks for: each of these must be on the dashboard.
	for _, name := range []string{"netman_server_http_requests_total", "netman_server_http_request_duration_seconds",
		"netman_server_cache_version", "netman_server_cache_age_seconds", "netman_server_cache_fallbacks_total", "netman_agent_cycle_duration_seconds",
		"netman_agent_rules_age_seconds", "netman_agent_poll_errors_total", "netman_agent_server_requests_total"} {
		if !used[name] {
			t.Errorf("the dashboard does not show %s", name)
		}
	}
}
