// Package iptablestest compares iptables states in tests.
package iptablestest

import (
	"os/exec"
	"strings"
	"testing"
)

// Save returns iptables-save of the nat and filter tables of the calling thread's network
// namespace without comments and counters, so that two saves of the same rules are equal.
func Save(tb testing.TB) string {
	tb.Helper()
	var b strings.Builder
	for _, table := range []string{"nat", "filter"} {
		out, err := exec.Command("iptables-save", "-t", table).Output()
		if err != nil {
			tb.Fatalf("iptables-save -t %s: %v", table, err)
		}
		for _, l := range strings.Split(string(out), "\n") {
			if strings.HasPrefix(l, "#") {
				continue
			}
			if strings.HasPrefix(l, ":") {
				l = l[:strings.LastIndex(l, " ")] // the counters
			}
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}
