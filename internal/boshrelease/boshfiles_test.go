package boshrelease

import (
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
)

// packageFile is one file bosh create-release puts into a package: rel is its path in the
// compile directory, path where it is read from.
type packageFile struct {
	rel, path string
	symlink   bool // a link inside src/ is packaged as the link itself
}

func (f packageFile) copyTo(t testing.TB, to string) {
	t.Helper()
	if !f.symlink {
		copyFile(t, f.path, to)
		return
	}
	target, err := os.Readlink(f.path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, to); err != nil {
		t.Fatal(err)
	}
}

// collectPackageFiles finds a package's files the way bosh create-release (bosh-cli v7)
// does, so that a spec the real command would refuse fails here too:
//   - every files pattern is matched under <release>/src and under the blobs directory;
//   - a match under src/ that is not itself a symlink counts only if its real path,
//     relative to the real src/, is the path it was found under: the CLI does not resolve
//     links for package files, so nothing reached through a linked directory counts;
//   - a pattern without a file that counts is an error, "Missing files for pattern";
//   - excluded_files patterns remove files afterwards.
func collectPackageFiles(release, blobs string, spec packageSpec) ([]packageFile, error) {
	src := filepath.Join(release, "src")
	realSrc, err := filepath.EvalSymlinks(src)
	if err != nil && !os.IsNotExist(err) {
		return nil, err
	}
	byRel := map[string]packageFile{}
	for _, pattern := range spec.Files {
		found := false
		for _, m := range globFollowing(src, pattern) {
			ok, link, err := packageable(src, realSrc, m)
			if err != nil {
				return nil, err
			}
			if ok {
				found = true
				if _, dup := byRel[m]; !dup {
					byRel[m] = packageFile{rel: m, path: filepath.Join(src, m), symlink: link}
				}
			}
		}
		for _, m := range globFollowing(blobs, pattern) {
			found = true
			if _, dup := byRel[m]; !dup {
				byRel[m] = packageFile{rel: m, path: filepath.Join(blobs, m)}
			}
		}
		if !found {
			return nil, fmt.Errorf("Missing files for pattern '%s'", pattern)
		}
	}
	for _, pattern := range spec.ExcludedFiles {
		ex := globRegexp(pattern)
		for rel := range byRel {
			if ex.MatchString(rel) {
				delete(byRel, rel)
			}
		}
	}
	var files []packageFile
	for _, f := range byRel {
		files = append(files, f)
	}
	sort.Slice(files, func(i, j int) bool { return files[i].rel < files[j].rel })
	return files, nil
}

// packageable applies bosh-cli's rule to src/rel: not a directory, and either a symlink
// (kept as one) or a file whose real path is where it was found.
func packageable(src, realSrc, rel string) (ok, symlink bool, err error) {
	path := filepath.Join(src, rel)
	info, err := os.Lstat(path)
	if err != nil {
		return false, false, err
	}
	if info.IsDir() {
		return false, false, nil
	}
	if info.Mode()&os.ModeSymlink != 0 {
		return true, true, nil
	}
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		return false, false, err
	}
	realRel, err := filepath.Rel(realSrc, real)
	if err != nil {
		return false, false, err
	}
	return realRel == rel, false, nil
}

// globFollowing returns the paths under dir (slash-separated, relative) that match a
// BOSH files pattern. Like a glob on the file system it walks through linked directories
// (each real directory once, so a link to a parent does not loop); whether what it finds
// counts is packageable's business.
func globFollowing(dir, pattern string) []string {
	re := globRegexp(pattern)
	var out []string
	seen := map[string]bool{}
	var walk func(path, rel string)
	walk = func(path, rel string) {
		real, err := filepath.EvalSymlinks(path)
		if err != nil || seen[real] {
			return
		}
		seen[real] = true
		entries, err := os.ReadDir(path)
		if err != nil {
			return
		}
		for _, e := range entries {
			p, r := filepath.Join(path, e.Name()), e.Name()
			if rel != "" {
				r = rel + "/" + e.Name()
			}
			if re.MatchString(r) {
				out = append(out, r)
			}
			if info, err := os.Stat(p); err == nil && info.IsDir() {
				walk(p, r)
			}
		}
	}
	walk(dir, "")
	return out
}

var (
	blobsOnce sync.Once
	blobsDir  string
	blobsErr  error
)

// releaseBlobsDir is a blobs/ directory as `bosh add-blob` leaves it after
// scripts/add-release-blobs, once per test run: the source blob and the module blob, each
// made by its script, and in place of Go's release tarball one of the same shape whose
// bin/go only prints a version (the packages compile with the Go that runs the tests).
func releaseBlobsDir(t testing.TB) string {
	t.Helper()
	modules := modulesBlobPath(t)
	var goTarball string
	for _, f := range readPackageSpec(t, golangPackage).Files {
		if strings.HasPrefix(f, golangPackage+"/go") {
			goTarball = f
		}
	}
	blobsOnce.Do(func() {
		blobsDir = filepath.Join(binDir, "blobs")
		fake := filepath.Join(binDir, "fake-go")
		writeFile(t, filepath.Join(fake, "go", "bin", "go"), "#!/bin/sh\necho go version go1.26.8 linux/amd64\n", 0o755)
		writeFile(t, filepath.Join(blobsDir, goTarball), "", 0o644)
		if out, err := exec.Command("tar", "-czf", filepath.Join(blobsDir, goTarball), "-C", fake, "go").CombinedOutput(); err != nil {
			blobsErr = &cmdError{err: err, stderr: string(out)}
			return
		}
		source := filepath.Join(blobsDir, sourceBlob)
		out, err := exec.Command(filepath.Join(repoRoot(t), "scripts", "lib", "create-source-blob"), source).CombinedOutput()
		if err != nil {
			blobsErr = &cmdError{err: err, stderr: string(out)}
			return
		}
		if err := os.MkdirAll(filepath.Dir(filepath.Join(blobsDir, modulesBlob)), 0o755); err != nil {
			blobsErr = err
			return
		}
		blobsErr = os.Symlink(modules, filepath.Join(blobsDir, modulesBlob))
	})
	if blobsErr != nil {
		t.Fatalf("making the release's blobs: %v", blobsErr)
	}
	return blobsDir
}

// TestCollectPackageFilesLinkedSource shows the collector refuses what bosh create-release
// refuses: sources reached through a link in src/ (the layout src/netman -> .. once had).
func TestCollectPackageFilesLinkedSource(t *testing.T) {
	spec := packageSpec{Name: "p", Files: []string{"netman/go.mod", "netman/cmd/**/*"}}
	blobs := t.TempDir()

	linked := t.TempDir()
	writeFile(t, filepath.Join(linked, "go.mod"), "module netman\n", 0o644)
	writeFile(t, filepath.Join(linked, "cmd", "x", "main.go"), "package main\n", 0o644)
	if err := os.MkdirAll(filepath.Join(linked, "src"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("..", filepath.Join(linked, "src", "netman")); err != nil {
		t.Fatal(err)
	}
	_, err := collectPackageFiles(linked, blobs, spec)
	if err == nil || err.Error() != "Missing files for pattern 'netman/go.mod'" {
		t.Errorf("src/netman -> ..: %v, want bosh-cli's missing files error", err)
	}

	// The same files really under src/ are collected; a link to a file is kept as a link.
	plain := t.TempDir()
	writeFile(t, filepath.Join(plain, "src", "netman", "go.mod"), "module netman\n", 0o644)
	writeFile(t, filepath.Join(plain, "src", "netman", "cmd", "x", "main.go"), "package main\n", 0o644)
	if err := os.Symlink("main.go", filepath.Join(plain, "src", "netman", "cmd", "x", "link.go")); err != nil {
		t.Fatal(err)
	}
	files, err := collectPackageFiles(plain, blobs, spec)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, f := range files {
		got = append(got, fmt.Sprintf("%s link=%v", f.rel, f.symlink))
	}
	want := []string{"netman/cmd/x/link.go link=true", "netman/cmd/x/main.go link=false", "netman/go.mod link=false"}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("collected:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestSrcHoldsNoLinks: bosh create-release packages a link under src/ as a link, never
// what it points to, so none belongs there.
func TestSrcHoldsNoLinks(t *testing.T) {
	src := filepath.Join(repoRoot(t), "src")
	filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err == nil && d.Type()&fs.ModeSymlink != 0 {
			t.Errorf("%s is a link; package files must be real files (or blobs)", path)
		}
		return nil
	})
}

// TestJobTemplateLinks: bosh create-release follows links when it packs a job (unlike
// package files), so netman-cni may link to cni-flannel's templates; each link must still
// resolve to a regular file inside jobs/, or the job would differ between checkouts.
func TestJobTemplateLinks(t *testing.T) {
	jobs := filepath.Join(repoRoot(t), "jobs")
	links := 0
	filepath.WalkDir(jobs, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.Type()&fs.ModeSymlink == 0 {
			return err
		}
		links++
		real, err := filepath.EvalSymlinks(path)
		if err != nil {
			t.Errorf("%s: %v", path, err)
			return nil
		}
		info, err := os.Stat(real)
		if rel, _ := filepath.Rel(jobs, real); err != nil || !info.Mode().IsRegular() || strings.HasPrefix(rel, "..") {
			t.Errorf("%s -> %s is not a file inside jobs/", path, real)
		}
		return nil
	})
	if links == 0 {
		t.Log("no linked templates")
	}
}
