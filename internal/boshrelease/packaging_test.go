package boshrelease

import (
	"bytes"
	"debug/elf"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// packageSpec is the part of a BOSH package spec the tests look at.
type packageSpec struct {
	Name          string   `json:"name"`
	Dependencies  []string `json:"dependencies"`
	Files         []string `json:"files"`
	ExcludedFiles []string `json:"excluded_files"`
}

const (
	golangPackage  = "golang-1.26-linux"
	modulesPackage = "netman-go-modules"
	modulesBlob    = "netman-go-modules/go-modules.tar.gz"
	sourceBlob     = "netman-source/netman-source.tar.gz"
)

// What each package must install, and how to tell the binary works.
var packageBinaries = map[string][]binaryCheck{
	"policy-server": {{"policy-server", helpCheck("-config-file")}, {"netman", helpCheck("")},
		{"policy-server", versionCheck("policy-server")}, {"netman", versionCheck("policy-server")}},
	"policy-agent": {{"policy-agent", helpCheck("-config-file")}, {"policy-agent", versionCheck("policy-agent")}},
	"flanneld":     {{"flanneld", flanneldCheck}},
	"etcd":         {{"etcd", versionFlagCheck("--version", "etcd Version: 3.6.16")}},
	"netman-cni": {
		{"wrapper", cniVersionCheck}, {"wrapper", versionCheck("netman-cni")}, {"bridge", cniVersionCheck}, {"host-local", cniVersionCheck},
		{"loopback", cniVersionCheck}, {"flannel", cniVersionCheck},
	},
}

type binaryCheck struct {
	name  string
	check func(t *testing.T, path string)
}

// helpCheck runs `BIN -help`: it must exit 0 and mention want.
func helpCheck(want string) func(t *testing.T, path string) {
	return func(t *testing.T, path string) {
		out, err := exec.Command(path, "-help").CombinedOutput()
		if err != nil {
			t.Errorf("%s -help: %v\n%s", filepath.Base(path), err, out)
		}
		if !strings.Contains(string(out), want) {
			t.Errorf("%s -help does not mention %q:\n%s", filepath.Base(path), want, out)
		}
	}
}

// versionCheck runs `BIN --version` with no environment (the wrapper too: an operator
// asks it without a CNI environment) and wants the stamp of the packaging script:
// BOSH_PACKAGE_NAME/BOSH_PACKAGE_VERSION, which runPackaging sets to PACKAGE/test.
func versionCheck(pkg string) func(t *testing.T, path string) {
	return func(t *testing.T, path string) {
		cmd := exec.Command(path, "--version")
		cmd.Env = []string{}
		out, err := cmd.Output()
		want := filepath.Base(path) + " " + pkg + "/test ("
		if err != nil || !strings.HasPrefix(string(out), want) {
			t.Errorf("%s --version: %v, %q, want it to start with %q", filepath.Base(path), err, out, want)
		}
	}
}

// versionFlagCheck runs `BIN flag`: it must exit 0 and print want.
func versionFlagCheck(flag, want string) func(t *testing.T, path string) {
	return func(t *testing.T, path string) {
		out, err := exec.Command(path, flag).CombinedOutput()
		if err != nil || !strings.Contains(string(out), want) {
			t.Errorf("%s %s: %v\n%s (want %q)", filepath.Base(path), flag, err, out, want)
		}
	}
}

// flanneldCheck: the binary is v0.26.7, and it accepts every flag the flanneld job's
// start script gives it (flanneld parses them all before --version makes it exit).
func flanneldCheck(t *testing.T, path string) {
	versionFlagCheck("--version", "v0.26.7")(t, path)
	_, tls, _ := etcdTLS(t)
	dir := mustRender(t, "flanneld", props(tls), etcdLink(2379, 2380, "10.0.1.5"))
	script := relocateScript(t, dir, "flanneld", "/var/vcap/packages/flanneld/bin/flanneld", path)
	data, _ := os.ReadFile(script)
	writeFile(t, script, strings.Replace(string(data), `"${args[@]}"`, `"${args[@]}" --version`, 1), 0o755)
	if out, err := exec.Command("bash", script).CombinedOutput(); err != nil || !strings.Contains(string(out), "v0.26.7") {
		t.Errorf("flanneld refuses the job's flags: %v\n%s", err, out)
	}
}

// cniVersionCheck asks a CNI plugin for its versions, as a runtime does.
func cniVersionCheck(t *testing.T, path string) {
	cmd := exec.Command(path)
	cmd.Env = []string{"CNI_COMMAND=VERSION"}
	cmd.Stdin = strings.NewReader(`{"cniVersion":"0.3.1"}`)
	out, err := cmd.Output()
	if err != nil {
		t.Errorf("%s VERSION: %v", filepath.Base(path), err)
		return
	}
	var v struct {
		SupportedVersions []string `json:"supportedVersions"`
	}
	if err := json.Unmarshal(out, &v); err != nil || len(v.SupportedVersions) == 0 {
		t.Errorf("%s VERSION answered %q (%v)", filepath.Base(path), out, err)
	}
}

func readPackageSpec(t testing.TB, name string) packageSpec {
	t.Helper()
	var s packageSpec
	yamlFile(t, filepath.Join(repoRoot(t), "packages", name, "spec"), &s)
	return s
}

// TestPackageSpecs checks the package metadata create-release reads, and collects each
// package's files the way bosh create-release does.
func TestPackageSpecs(t *testing.T) {
	root := repoRoot(t)
	entries, err := os.ReadDir(filepath.Join(root, "packages"))
	if err != nil {
		t.Fatal(err)
	}
	blobs := releaseBlobsDir(t)
	for _, e := range entries {
		t.Run(e.Name(), func(t *testing.T) {
			spec := readPackageSpec(t, e.Name())
			if spec.Name != e.Name() {
				t.Errorf("spec name %q, directory %q", spec.Name, e.Name())
			}
			if _, err := os.Stat(filepath.Join(root, "packages", e.Name(), "packaging")); err != nil {
				t.Errorf("no packaging script: %v", err)
			}
			for _, d := range spec.Dependencies {
				if _, err := os.Stat(filepath.Join(root, "packages", d, "spec")); err != nil {
					t.Errorf("dependency %s is not a package", d)
				}
			}
			if _, err := collectPackageFiles(root, blobs, spec); err != nil {
				t.Errorf("bosh create-release would fail: %v", err)
			}
			checkSourcesListed(t, e.Name(), spec)
		})
	}
}

var cmdTarget = regexp.MustCompile(`\./cmd/([\w-]+)`)

// checkSourcesListed fails when a Go file the package's programs are built from is not
// in the source blob the package unpacks: the compilation VM would not have it.
func checkSourcesListed(t *testing.T, name string, spec packageSpec) {
	script, err := os.ReadFile(filepath.Join(repoRoot(t), "packages", name, "packaging"))
	if err != nil {
		t.Fatal(err)
	}
	var targets []string
	for _, m := range cmdTarget.FindAllStringSubmatch(string(script), -1) {
		targets = append(targets, "./cmd/"+m[1])
	}
	if len(targets) == 0 {
		return
	}
	if !slices.Contains(spec.Files, sourceBlob) || !strings.Contains(string(script), "tar -xzf "+sourceBlob) {
		t.Errorf("package %s builds %v but does not list and unpack %s", name, targets, sourceBlob)
		return
	}
	cmd := exec.Command("go", append([]string{"list", "-deps", "-f",
		`{{if not .Standard}}{{$d := .Dir}}{{range .GoFiles}}{{$d}}/{{.}}{{"\n"}}{{end}}{{range .EmbedFiles}}{{$d}}/{{.}}{{"\n"}}{{end}}{{end}}`}, targets...)...)
	cmd.Dir = repoRoot(t)
	cmd.Env = append(os.Environ(), "GOOS=linux", "GOARCH=amd64", "CGO_ENABLED=0")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list %v: %v", targets, err)
	}
	have := map[string]bool{}
	for _, f := range tarNames(t, filepath.Join(releaseBlobsDir(t), sourceBlob)) {
		have[f] = true
	}
	root := repoRoot(t) + "/"
	for _, f := range append(strings.Fields(string(out)), root+"go.mod", root+"go.sum", root+"scripts/bosh-go-build") {
		if !strings.HasPrefix(f, root) {
			continue // a module from the module blob
		}
		if rel := "netman/" + strings.TrimPrefix(f, root); !have[rel] {
			t.Errorf("%s is needed by %v but not in %s", rel, targets, sourceBlob)
		}
	}
}

func tarNames(t testing.TB, path string) []string {
	t.Helper()
	out, err := exec.Command("tar", "-tzf", path).Output()
	if err != nil {
		t.Fatalf("tar -tzf %s: %v", path, err)
	}
	return strings.Fields(string(out))
}

// TestPackagingScripts runs each package's packaging script the way a BOSH compilation VM
// does (see packageInstall), then runs the binaries it installed.
func TestPackagingScripts(t *testing.T) {
	if testing.Short() {
		t.Skip("compiles every package (-short)")
	}
	testenvRequireTar(t)

	t.Run(golangPackage, func(t *testing.T) {
		// The real blob is Go's release tarball; a tarball of the same shape shows the
		// script unpacks it so that bin/go sits at the package root.
		compile, install := t.TempDir(), t.TempDir()
		files, err := collectPackageFiles(repoRoot(t), releaseBlobsDir(t), readPackageSpec(t, golangPackage))
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			f.copyTo(t, filepath.Join(compile, f.rel))
		}
		out := runPackaging(t, golangPackage, compile, install, t.TempDir(), "")
		if _, err := os.Stat(filepath.Join(install, "bin", "go")); err != nil || !strings.Contains(out, "go1.26.8") {
			t.Errorf("bin/go not installed at the package root: %v\n%s", err, out)
		}
	})

	t.Run(modulesPackage, func(t *testing.T) {
		// The Go packages depend on it; it installs the blob as it is.
		got, err := os.ReadFile(filepath.Join(packageInstall(t, modulesPackage), "go-modules.tar.gz"))
		want, _ := os.ReadFile(modulesBlobPath(t))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("go-modules.tar.gz is not the module blob (%d bytes, %v)", len(got), err)
		}
	})

	for name, binaries := range packageBinaries {
		t.Run(name, func(t *testing.T) {
			install := packageInstall(t, name)
			for _, b := range binaries {
				path := filepath.Join(install, "bin", b.name)
				if _, err := os.Stat(path); err != nil {
					t.Errorf("bin/%s not installed: %v", b.name, err)
					continue
				}
				checkStatic(t, path)
				b.check(t, path)
			}
		})
	}
}

var (
	packageMu       sync.Mutex
	packageInstalls = map[string]string{}
)

// packageInstall compiles a package as a BOSH compilation VM would, once per test run, and
// returns its install directory (what a VM gets as /var/vcap/packages/<name>). The
// compile directory holds exactly what collectPackageFiles finds for the spec in this
// release's src/ and in a blobs/ directory holding the blobs scripts/add-release-blobs adds
// (the Go source and module blobs, made by the same scripts). BOSH_INSTALL_TARGET and BOSH_PACKAGES_DIR are set,
// the golang dependency is the toolchain running the tests, Go gets no network, and the
// environment is otherwise bare.
func packageInstall(t testing.TB, name string) string {
	t.Helper()
	packageMu.Lock()
	defer packageMu.Unlock()
	return packageInstallLocked(t, name)
}

// packageInstallLocked is packageInstall with packageMu held; it compiles the package's
// dependencies first, as the director does, and links them into BOSH_PACKAGES_DIR.
func packageInstallLocked(t testing.TB, name string) string {
	t.Helper()
	if dir, ok := packageInstalls[name]; ok {
		return dir
	}
	root := repoRoot(t)
	script, err := os.ReadFile(filepath.Join(root, "packages", name, "packaging"))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range cmdTarget.FindAllStringSubmatch(string(script), -1) {
		if _, err := os.Stat(filepath.Join(root, "cmd", m[1])); err != nil {
			t.Fatalf("package %s builds cmd/%s, which does not exist", name, m[1])
		}
	}
	base := filepath.Join(binDir, "packages", name)
	compile, install, packagesDir := filepath.Join(base, "compile"), filepath.Join(base, "install"), filepath.Join(base, "deps")
	for _, d := range []string{compile, install, packagesDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, dep := range readPackageSpec(t, name).Dependencies {
		target := runtime.GOROOT() // the golang package: the toolchain running the tests
		if dep != golangPackage {
			target = packageInstallLocked(t, dep)
		}
		if err := os.Symlink(target, filepath.Join(packagesDir, dep)); err != nil {
			t.Fatal(err)
		}
	}
	files, err := collectPackageFiles(root, releaseBlobsDir(t), readPackageSpec(t, name))
	if err != nil {
		t.Fatalf("collecting the files of package %s as bosh create-release does: %v", name, err)
	}
	for _, f := range files {
		f.copyTo(t, filepath.Join(compile, f.rel))
	}
	runPackaging(t, name, compile, install, packagesDir, goEnv(t, "GOCACHE"))
	packageInstalls[name] = install
	return install
}

// checkStatic fails for a dynamically linked binary: it would depend on the stemcell's libc.
func checkStatic(t *testing.T, path string) {
	f, err := elf.Open(path)
	if err != nil {
		t.Errorf("%s: %v", filepath.Base(path), err)
		return
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("%s is dynamically linked", filepath.Base(path))
		}
	}
}

// runPackaging runs packages/<name>/packaging from compile with BOSH's variables only.
func runPackaging(t testing.TB, name, compile, install, packagesDir, gocache string) string {
	t.Helper()
	cmd := exec.Command("bash", filepath.Join(repoRoot(t), "packages", name, "packaging"))
	cmd.Dir = compile
	cmd.Env = []string{
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"BOSH_COMPILE_TARGET=" + compile,
		"BOSH_INSTALL_TARGET=" + install,
		"BOSH_PACKAGE_NAME=" + name,
		"BOSH_PACKAGE_VERSION=test",
		"BOSH_PACKAGES_DIR=" + packagesDir,
	}
	if gocache != "" {
		// Shared with the developer's builds only to save time; a VM starts without one.
		cmd.Env = append(cmd.Env, "GOCACHE="+gocache)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("packaging %s: %v\n%s", name, err, out)
	}
	return string(out)
}

var (
	blobOnce sync.Once
	blobPath string
	blobErr  error
)

// modulesBlobPath makes the module blob with scripts/create-go-modules-blob from the local
// module cache only (no network), once per test run.
func modulesBlobPath(t testing.TB) string {
	t.Helper()
	blobOnce.Do(func() {
		blobPath = filepath.Join(binDir, "go-modules.tar.gz")
		cmd := exec.Command(filepath.Join(repoRoot(t), "scripts", "create-go-modules-blob"), blobPath)
		cmd.Env = append(os.Environ(),
			"GOPROXY=file://"+goEnv(t, "GOMODCACHE")+"/cache/download",
			"GOSUMDB=off")
		if out, err := cmd.CombinedOutput(); err != nil {
			blobErr = &cmdError{err: err, stderr: string(out)}
		}
	})
	if blobErr != nil {
		t.Fatalf("scripts/create-go-modules-blob from the local module cache: %v", blobErr)
	}
	return blobPath
}

// globRegexp translates a BOSH files pattern (doublestar: ** spans directories, * does
// not) into a regular expression over slash-separated relative paths.
func globRegexp(pattern string) *regexp.Regexp {
	var b strings.Builder
	b.WriteString("^")
	for i := 0; i < len(pattern); i++ {
		switch c := pattern[i]; {
		case strings.HasPrefix(pattern[i:], "**/"):
			b.WriteString("(?:.*/)?")
			i += 2
		case strings.HasPrefix(pattern[i:], "**"):
			b.WriteString(".*")
			i++
		case c == '*':
			b.WriteString("[^/]*")
		case c == '?':
			b.WriteString("[^/]")
		default:
			b.WriteString(regexp.QuoteMeta(string(c)))
		}
	}
	b.WriteString("$")
	return regexp.MustCompile(b.String())
}

func goEnv(t testing.TB, name string) string {
	t.Helper()
	out, err := exec.Command("go", "env", name).Output()
	if err != nil {
		t.Fatalf("go env %s: %v", name, err)
	}
	return string(bytes.TrimSpace(out))
}

func copyFile(t testing.TB, from, to string) {
	t.Helper()
	data, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	info, err := os.Stat(from)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, to, string(data), info.Mode().Perm())
}

func writeFile(t testing.TB, path, data string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), mode); err != nil {
		t.Fatal(err)
	}
}

func testenvRequireTar(t testing.TB) {
	t.Helper()
	for _, c := range []string{"tar", "gzip", "bash"} {
		if _, err := exec.LookPath(c); err != nil {
			t.Fatalf("%s is needed to run packaging scripts: %v", c, err)
		}
	}
}

// TestGolangPackageMatchesGoMod: the toolchain the release compiles with must be at least
// the go.mod's go version (GOTOOLCHAIN=local on the compilation VM would refuse it).
func TestGolangPackageMatchesGoMod(t *testing.T) {
	gomod, err := os.ReadFile(filepath.Join(repoRoot(t), "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^go (\d+)\.(\d+)(?:\.(\d+))?$`).FindStringSubmatch(string(gomod))
	spec := readPackageSpec(t, golangPackage)
	var blob []string
	for _, f := range spec.Files {
		if b := regexp.MustCompile(`^golang-1\.26-linux/go(\d+)\.(\d+)(?:\.(\d+))?\.linux-amd64\.tar\.gz$`).FindStringSubmatch(f); b != nil {
			blob = b
		}
	}
	if m == nil || blob == nil {
		t.Fatalf("go.mod go line %v, golang package blob %v", m, spec.Files)
	}
	num := func(s string) int { n, _ := strconv.Atoi(s); return n }
	for i := 1; i <= 3; i++ {
		if num(blob[i]) != num(m[i]) {
			if num(blob[i]) < num(m[i]) {
				t.Errorf("golang package has Go %s, go.mod needs %s", blob[0], m[0])
			}
			break
		}
	}
}

// TestAddReleaseBlobs runs scripts/add-release-blobs with a stand-in bosh CLI that keeps
// what it is given, a local Go tarball and the module blob the packaging test made: it must
// add every blob the package specs name, the source blob byte for byte as
// scripts/lib/create-source-blob makes it.
func TestAddReleaseBlobs(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the module blob (-short)")
	}
	blob := modulesBlobPath(t)
	dir := t.TempDir()
	log, added := filepath.Join(dir, "bosh.log"), filepath.Join(dir, "added")
	writeFile(t, filepath.Join(dir, "bin", "bosh"), "#!/bin/sh\necho \"$*\" >>"+log+
		"\nmkdir -p \""+added+"/$(dirname \"$3\")\" && cp \"$2\" \""+added+"/$3\"\n", 0o755)
	tarball := filepath.Join(dir, "go1.26.8.linux-amd64.tar.gz")
	writeFile(t, tarball, "not really go", 0o644)

	run := func(goTarball string) (string, error) {
		cmd := exec.Command(filepath.Join(repoRoot(t), "scripts", "add-release-blobs"))
		cmd.Env = append(os.Environ(),
			"PATH="+filepath.Join(dir, "bin")+":"+os.Getenv("PATH"),
			"GO_TARBALL="+goTarball, "MODULES_BLOB="+blob)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := run(tarball); err != nil {
		t.Fatalf("add-release-blobs: %v\n%s", err, out)
	}
	calls, _ := os.ReadFile(log)
	lines := strings.Split(strings.TrimSpace(string(calls)), "\n")
	if len(lines) != 3 ||
		lines[0] != "add-blob "+tarball+" golang-1.26-linux/go1.26.8.linux-amd64.tar.gz" ||
		lines[1] != "add-blob "+blob+" "+modulesBlob ||
		!strings.HasSuffix(lines[2], " "+sourceBlob) {
		t.Errorf("bosh calls:\n%s", calls)
	}
	entries, _ := os.ReadDir(filepath.Join(repoRoot(t), "packages"))
	for _, e := range entries {
		for _, f := range readPackageSpec(t, e.Name()).Files {
			if _, err := os.Stat(filepath.Join(added, f)); err != nil {
				t.Errorf("package %s names %s, which the script does not add", e.Name(), f)
			}
		}
	}
	got, _ := os.ReadFile(filepath.Join(added, sourceBlob))
	want, err := os.ReadFile(filepath.Join(releaseBlobsDir(t), sourceBlob))
	if err != nil || !bytes.Equal(got, want) {
		t.Errorf("the source blob added (%d bytes) differs from create-source-blob's (%d bytes, %v): not reproducible", len(got), len(want), err)
	}

	wrong := filepath.Join(dir, "go1.25.0.linux-amd64.tar.gz")
	writeFile(t, wrong, "x", 0o644)
	if out, err := run(wrong); err == nil || !strings.Contains(out, "go1.26.8.linux-amd64.tar.gz") {
		t.Errorf("a Go tarball of another version was accepted: %v\n%s", err, out)
	}
}
