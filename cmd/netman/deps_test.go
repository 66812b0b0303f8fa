package main

import (
	"os/exec"
	"strings"
	"testing"
)

// The CLI runs on operators' laptops: it must not carry the server's database driver,
// store, metrics or profiler. Mint tokens through lib/uaatoken, never policy-server/auth.
func TestCLILinksNothingOfTheServer(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("go tool not found: %v", err)
	}
	out, err := exec.Command(goTool, "list", "-deps", "netman/cmd/netman").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	// Whole packages, and prefixes ending in "/" (every package of the server).
	forbidden := []string{"github.com/lib/pq", "net/http/pprof", "github.com/prometheus/", "netman/policy-server/"}
	deps := strings.Fields(string(out))
	if !contains(deps, "netman/cli") || !contains(deps, "netman/lib/uaatoken") {
		t.Fatalf("go list -deps printed no plausible package list:\n%s", out)
	}
	for _, dep := range deps {
		for _, f := range forbidden {
			if dep == f || strings.HasSuffix(f, "/") && strings.HasPrefix(dep, f) {
				t.Errorf("netman links %s", dep)
			}
		}
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
