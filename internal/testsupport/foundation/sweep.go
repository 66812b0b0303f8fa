package foundation

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// claims holds one file per running foundation, named by its prefix and holding the pid
// that owns it. A foundation whose owner is gone (killed with SIGKILL, the machine's
// test timeout) left its namespaces behind; the next New removes them.
const claims = "/run/netman-foundation"

func claim(prefix string) error {
	if err := os.MkdirAll(claims, 0o755); err != nil {
		return fmt.Errorf("foundation: %w", err)
	}
	return os.WriteFile(filepath.Join(claims, prefix), []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644)
}

func release(prefix string) error { return os.Remove(filepath.Join(claims, prefix)) }

func alive(pid int) bool { return pid > 0 && syscall.Kill(pid, 0) == nil }

// sweep removes the namespaces and /etc/netns entries of foundations whose owner died.
// Only names with NamePrefix and a claim whose pid is gone are touched, so foundations
// of other test binaries running at the same time are left alone.
func sweep() {
	entries, _ := os.ReadDir(claims)
	var dead []string
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), NamePrefix) {
			continue
		}
		b, _ := os.ReadFile(filepath.Join(claims, e.Name()))
		pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		if !alive(pid) {
			dead = append(dead, e.Name())
		}
	}
	if len(dead) == 0 {
		return
	}
	netns, _ := os.ReadDir("/run/netns")
	for _, prefix := range dead {
		for _, n := range netns {
			if strings.HasPrefix(n.Name(), prefix+"-") {
				_ = removeNS(n.Name())
			}
		}
		matches, _ := filepath.Glob(filepath.Join(os.TempDir(), prefix+"-*"))
		for _, m := range matches {
			_ = os.RemoveAll(m)
		}
		_ = release(prefix)
	}
}
