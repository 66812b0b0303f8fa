package main_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// BenchmarkCreate100kThenList creates 100,000 policies through the external v1 API of
// the real policy-server binary, in batches of 1,000 (one request each, sequentially),
// then lists them with the netman binary as a table and as JSON.
//
//	scripts/with-postgres go test -run '^$' -bench Create100k -benchtime 1x ./cmd/netman/
func BenchmarkCreate100kThenList(b *testing.B) {
	const total, batch = 100_000, 1_000
	for range b.N {
		b.StopTimer()
		s := start(b, nil)
		client := &http.Client{Timeout: time.Minute}
		b.StartTimer()

		rebuildsBefore := strings.Count(s.logs.String(), `"msg":"policy snapshot rebuilt"`)
		began := time.Now()
		for i := 0; i < total; i += batch {
			body := policyBatch(i, batch)
			req, _ := http.NewRequest(http.MethodPost, s.api+"/networking/v1/external/policies", bytes.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+s.token)
			resp, err := client.Do(req)
			if err != nil {
				b.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				b.Fatalf("batch at %d: status %d", i, resp.StatusCode)
			}
		}
		created := time.Since(began)
		// The server's policy cache rebuilds its snapshot as the version moves; each
		// rebuild reads every policy, competing with the creates for the machine.
		rebuilds := strings.Count(s.logs.String(), `"msg":"policy snapshot rebuilt"`) - rebuildsBefore

		// The first read after a bulk insert is slower: Postgres sets the new rows'
		// hint bits then. Both the first and a later listing are reported.
		began = time.Now()
		table := runB(b, s, "policies", "list")
		listedCold := time.Since(began)
		began = time.Now()
		js := runB(b, s, "policies", "list", "--json")
		listedJSON := time.Since(began)
		began = time.Now()
		runB(b, s, "policies", "list")
		listed := time.Since(began)
		if !bytes.HasSuffix(table, []byte(fmt.Sprintf("%d policies\n", total))) {
			b.Fatalf("list ends with %q", table[max(0, len(table)-40):])
		}
		b.ReportMetric(created.Seconds(), "create-100k-s")
		b.ReportMetric(float64(rebuilds), "snapshot-rebuilds")
		b.ReportMetric(float64(total)/created.Seconds(), "policies/s")
		b.ReportMetric(listedCold.Seconds(), "cli-first-list-table-s")
		b.ReportMetric(listed.Seconds(), "cli-list-table-s")
		b.ReportMetric(listedJSON.Seconds(), "cli-list-json-s")
		b.ReportMetric(float64(len(js))/(1<<20), "json-MiB")
	}
}

// policyBatch is {"policies":[...]} for n policies from index first on: each source
// app reaches 3 destination apps on tcp 8080. 100,000 policies name about 58,000 apps,
// which fit tag_length 2.
func policyBatch(first, n int) []byte {
	type ports struct {
		Start int `json:"start"`
		End   int `json:"end"`
	}
	type dst struct {
		ID       string `json:"id"`
		Protocol string `json:"protocol"`
		Ports    ports  `json:"ports"`
	}
	type src struct {
		ID string `json:"id"`
	}
	type policy struct {
		Source      src `json:"source"`
		Destination dst `json:"destination"`
	}
	ps := make([]policy, n)
	for j := range n {
		i := first + j
		ps[j] = policy{
			Source:      src{ID: fmt.Sprintf("a5e9c7d0-0000-4000-8000-%012d", i/3)},
			Destination: dst{ID: fmt.Sprintf("b7f1d2e3-0000-4000-8000-%012d", (i*7919)%25_000), Protocol: "tcp", Ports: ports{8080, 8080}},
		}
	}
	body, _ := json.Marshal(map[string]any{"policies": ps})
	return body
}

func runB(b *testing.B, s *system, args ...string) []byte {
	b.Helper()
	cmd := exec.Command(s.netman, args...)
	cmd.Env = []string{"NETMAN_API=" + s.api, "NETMAN_TOKEN=" + s.token}
	out, err := cmd.Output()
	if err != nil {
		b.Fatalf("netman %v: %v", args, err)
	}
	return out
}
