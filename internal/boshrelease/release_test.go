package boshrelease

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"testing"

	"netman/internal/testsupport/testenv"
)

// binDir holds the binaries the tests build, for the whole test run.
var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "netman-boshrelease-")
	if err != nil {
		panic(err)
	}
	binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// repoRoot is the release's root directory (the module root).
func repoRoot(t testing.TB) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("cannot locate the test source")
	}
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// yamlFile parses a YAML file with Ruby's Psych (the module has no YAML library) and
// decodes the result into v, so the tests read manifests the way YAML tools do.
func yamlFile(t testing.TB, path string, v any) {
	t.Helper()
	out, err := yamlToJSON(t, path)
	if err != nil {
		t.Fatalf("%s is not valid YAML: %v", path, err)
	}
	if err := json.Unmarshal(out, v); err != nil {
		t.Fatalf("decoding %s: %v", path, err)
	}
}

func yamlToJSON(t testing.TB, path string) ([]byte, error) {
	t.Helper()
	ruby := testenv.RequireCommand(t, "ruby")
	cmd := exec.Command(ruby, "-ryaml", "-rjson", "-e",
		`puts JSON.generate(YAML.safe_load(File.read(ARGV[0]), aliases: true))`, path)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, &cmdError{err: err, stderr: stderr.String()}
	}
	return out, nil
}

type cmdError struct {
	err    error
	stderr string
}

func (e *cmdError) Error() string { return e.err.Error() + ": " + strings.TrimSpace(e.stderr) }

// jobSpec is the part of a BOSH job spec the tests look at.
type jobSpec struct {
	Name       string                       `json:"name"`
	Templates  map[string]string            `json:"templates"`
	Packages   []string                     `json:"packages"`
	Properties map[string]*propertySpec     `json:"properties"`
	Provides   []map[string]json.RawMessage `json:"provides"`
	Consumes   []map[string]json.RawMessage `json:"consumes"`
}

type propertySpec struct {
	Description string `json:"description"`
	Default     any    `json:"default"`
}

func jobNames(t testing.TB) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(repoRoot(t), "jobs"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		if e.IsDir() {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	if len(names) == 0 {
		t.Fatal("no jobs under jobs/")
	}
	return names
}

func readJobSpec(t testing.TB, job string) jobSpec {
	t.Helper()
	var s jobSpec
	yamlFile(t, filepath.Join(repoRoot(t), "jobs", job, "spec"), &s)
	return s
}

// renderRequest is what render.rb reads on stdin.
type renderRequest struct {
	JobDir     string         `json:"job_dir"`
	OutDir     string         `json:"out_dir"`
	Properties map[string]any `json:"properties"`
	Spec       map[string]any `json:"spec,omitempty"`
	Links      map[string]any `json:"links,omitempty"`
}

// render renders every template of job with the given manifest properties into a new
// directory laid out like /var/vcap/jobs/<job>, and returns it. A rendering error (a
// missing or invalid property) is returned with render.rb's message.
func render(t testing.TB, job string, props map[string]any, links map[string]any) (string, error) {
	t.Helper()
	return renderWith(t, job, props, links, nil)
}

// renderWith is render with the instance's spec (address, id, ...) given.
func renderWith(t testing.TB, job string, props, links, spec map[string]any) (string, error) {
	t.Helper()
	ruby := testenv.RequireCommand(t, "ruby")
	out := t.TempDir()
	req, err := json.Marshal(renderRequest{
		JobDir:     filepath.Join(repoRoot(t), "jobs", job),
		OutDir:     out,
		Properties: props,
		Spec:       spec,
		Links:      links,
	})
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(ruby, filepath.Join(repoRoot(t), "internal", "boshrelease", "render.rb"))
	cmd.Stdin = bytes.NewReader(req)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return "", &cmdError{err: err, stderr: stderr.String()}
	}
	return out, nil
}

func mustRender(t testing.TB, job string, props map[string]any, links map[string]any) string {
	t.Helper()
	dir, err := render(t, job, props, links)
	if err != nil {
		t.Fatalf("rendering job %s: %v", job, err)
	}
	return dir
}

func readJSON(t testing.TB, path string) map[string]any {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var v map[string]any
	if err := json.Unmarshal(data, &v); err != nil {
		t.Fatalf("%s is not a JSON object: %v\n%s", path, err, data)
	}
	return v
}

// props builds nested manifest properties from dotted names, as an operator writes them.
func props(kv map[string]any) map[string]any {
	root := map[string]any{}
	for name, value := range kv {
		node := root
		parts := strings.Split(name, ".")
		// Job-level names like "policy-server.ca_cert" nest at each dot.
		for _, p := range parts[:len(parts)-1] {
			next, ok := node[p].(map[string]any)
			if !ok {
				next = map[string]any{}
				node[p] = next
			}
			node = next
		}
		node[parts[len(parts)-1]] = value
	}
	return root
}

// without returns a copy of kv without the named key.
func without(kv map[string]any, name string) map[string]any {
	c := make(map[string]any, len(kv))
	for k, v := range kv {
		if k != name {
			c[k] = v
		}
	}
	return c
}

// with returns a copy of kv with the given keys set.
func with(kv map[string]any, set map[string]any) map[string]any {
	c := without(kv, "")
	for k, v := range set {
		c[k] = v
	}
	return c
}
