package boshrelease

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestCreateRelease makes a dev release tarball the way docs/operations.md tells an
// operator to, from a copy of this checkout: scripts/add-release-blobs (with a local Go
// tarball and the module blob made from the local module cache, so no network), then the
// real `bosh create-release --force --tarball`. The tarball must hold every job and package
// of the release, and the module blob once.
func TestCreateRelease(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the module blob and a release (-short)")
	}
	cli := boshCLI(t)
	testenvRequireTar(t)
	root := repoRoot(t)

	// The checkout as a fresh clone has it: tracked files and new ones not ignored.
	release := t.TempDir()
	files, err := exec.Command("git", "-C", root, "ls-files", "-co", "--exclude-standard", "-z").Output()
	if err != nil {
		t.Fatalf("git ls-files: %v", err)
	}
	for _, f := range strings.Split(strings.TrimRight(string(files), "\x00"), "\x00") {
		info, err := os.Lstat(filepath.Join(root, f))
		if err != nil {
			continue // deleted in the working tree
		}
		dst := filepath.Join(release, f)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			t.Fatal(err)
		}
		if info.Mode()&os.ModeSymlink != 0 {
			target, _ := os.Readlink(filepath.Join(root, f))
			if err := os.Symlink(target, dst); err != nil {
				t.Fatal(err)
			}
			continue
		}
		copyFile(t, filepath.Join(root, f), dst)
		os.Chmod(dst, info.Mode().Perm())
	}

	// Blobs a developer added to this checkout are not part of the copy.
	writeFile(t, filepath.Join(release, "config", "blobs.yml"), "--- {}\n", 0o644)

	bin := t.TempDir()
	if err := os.Symlink(cli, filepath.Join(bin, "bosh")); err != nil {
		t.Fatal(err)
	}
	var goTarball string
	for _, f := range readPackageSpec(t, golangPackage).Files {
		if strings.HasPrefix(f, golangPackage+"/go") {
			goTarball = filepath.Join(releaseBlobsDir(t), f)
		}
	}
	env := append(os.Environ(), "PATH="+bin+":"+os.Getenv("PATH"), "HOME="+t.TempDir(),
		"GO_TARBALL="+goTarball, "MODULES_BLOB="+modulesBlobPath(t),
		"GOPROXY=file://"+goEnv(t, "GOMODCACHE")+"/cache/download", "GOSUMDB=off")
	run := func(name string, args ...string) {
		t.Helper()
		cmd := exec.Command(name, args...)
		cmd.Dir, cmd.Env = release, env
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s %v: %v\n%s", name, args, err, out)
		}
	}
	run(filepath.Join(release, "scripts", "add-release-blobs"))
	tarball := filepath.Join(t.TempDir(), "netman.tgz")
	run(filepath.Join(bin, "bosh"), "create-release", "--force", "--tarball", tarball)

	unpacked := t.TempDir()
	if out, err := exec.Command("tar", "-xzf", tarball, "-C", unpacked).CombinedOutput(); err != nil {
		t.Fatalf("unpacking the release: %v\n%s", err, out)
	}
	var mf struct {
		Name     string `json:"name"`
		Jobs     []struct{ Name string }
		Packages []struct {
			Name         string
			Dependencies []string
		}
	}
	yamlFile(t, filepath.Join(unpacked, "release.MF"), &mf)
	var jobs, pkgs []string
	for _, j := range mf.Jobs {
		jobs = append(jobs, j.Name)
	}
	for _, p := range mf.Packages {
		pkgs = append(pkgs, p.Name)
	}
	slices.Sort(jobs)
	slices.Sort(pkgs)
	var wantPkgs []string
	entries, _ := os.ReadDir(filepath.Join(root, "packages"))
	for _, e := range entries {
		wantPkgs = append(wantPkgs, e.Name())
	}
	if mf.Name != "netman" || !slices.Equal(jobs, jobNames(t)) || !slices.Equal(pkgs, wantPkgs) {
		t.Errorf("release %s: jobs %v (want %v), packages %v (want %v)", mf.Name, jobs, jobNames(t), pkgs, wantPkgs)
	}

	// The module blob: once in the release, in the package every Go package depends on.
	var copies []string
	for _, p := range pkgs {
		for _, f := range tarNames(t, filepath.Join(unpacked, "packages", p+".tgz")) {
			if filepath.Base(f) == "go-modules.tar.gz" {
				copies = append(copies, p+": "+f)
			}
		}
	}
	if len(copies) != 1 || !strings.HasPrefix(copies[0], modulesPackage+": ") {
		t.Errorf("the module blob is in the release %d times: %v", len(copies), copies)
	}
	info, _ := os.Stat(tarball)
	t.Logf("release tarball: %d bytes (Go toolchain blob replaced by a stand-in)", info.Size())
}
