package buildinfo_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Every binary answers --version (and -version) with the version stamped the way
// `make build` stamps it, with no environment at all: the wrapper included, which an
// operator runs by hand, without the CNI variables the runtime sets.
func TestEveryBinaryAnswersVersion(t *testing.T) {
	dir := t.TempDir()
	build := exec.Command("go", "build", "-trimpath", "-ldflags", "-X netman/lib/buildinfo.stamp=v9.8.7-test", "-o", dir+"/", "./cmd/...")
	build.Dir = filepath.Join("..", "..")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	entries, err := os.ReadDir(filepath.Join("..", "..", "cmd"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		for _, flag := range []string{"--version", "-version"} {
			cmd := exec.Command(filepath.Join(dir, e.Name()), flag)
			cmd.Env = []string{}
			out, err := cmd.Output()
			want := e.Name() + " v9.8.7-test (go1."
			if err != nil || !strings.HasPrefix(string(out), want) || strings.Count(string(out), "\n") != 1 {
				t.Errorf("%s %s: %v, stdout %q, want one line starting %q", e.Name(), flag, err, out, want)
			}
		}
	}
	// netman's subcommand says the same.
	out, err := exec.Command(filepath.Join(dir, "netman"), "version").Output()
	if err != nil || !strings.HasPrefix(string(out), "netman v9.8.7-test (") {
		t.Errorf("netman version: %v, %q", err, out)
	}
}
