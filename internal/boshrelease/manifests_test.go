package boshrelease

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"netman/internal/testsupport/testenv"
	"netman/lib/mutualtls/mutualtlstest"
	"netman/wrapper"
)

// manifest is the part of a BOSH deployment manifest the tests look at.
type manifest struct {
	Name     string `json:"name"`
	Releases []struct {
		Name    string `json:"name"`
		Version any    `json:"version"`
	} `json:"releases"`
	Stemcells []struct {
		Alias string `json:"alias"`
		OS    string `json:"os"`
	} `json:"stemcells"`
	Addons         []addon         `json:"addons"`
	InstanceGroups []instanceGroup `json:"instance_groups"`
	Variables      []struct {
		Name    string         `json:"name"`
		Type    string         `json:"type"`
		Options map[string]any `json:"options"`
	} `json:"variables"`
}

type instanceGroup struct {
	Name     string   `json:"name"`
	Stemcell string   `json:"stemcell"`
	AZs      []string `json:"azs"`
	VMType   string   `json:"vm_type"`
	Networks []struct {
		Name string `json:"name"`
	} `json:"networks"`
	Jobs []manifestJob `json:"jobs"`
}

type manifestJob struct {
	Name       string         `json:"name"`
	Release    string         `json:"release"`
	Properties map[string]any `json:"properties"`
	// Link settings: name -> nil (off) or {from: ..., deployment: ...} / {as: ...}.
	Consumes        map[string]any `json:"consumes"`
	Provides        map[string]any `json:"provides"`
	CustomProviders []linkDecl     `json:"custom_provider_definitions"`
}

// addon is a runtime addon of a manifest: jobs the director places on the instance groups
// its include and exclude rules select.
type addon struct {
	Name    string        `json:"name"`
	Include *placement    `json:"include"`
	Exclude *placement    `json:"exclude"`
	Jobs    []manifestJob `json:"jobs"`
}

type placement struct {
	Stemcell []struct {
		OS string `json:"os"`
	} `json:"stemcell"`
	Jobs           []struct{ Name, Release string } `json:"jobs"`
	InstanceGroups []string                         `json:"instance_groups"`
}

func (m manifest) group(t testing.TB, name string) instanceGroup {
	t.Helper()
	for _, g := range m.InstanceGroups {
		if g.Name == name {
			return g
		}
	}
	t.Fatalf("no instance group %s", name)
	return instanceGroup{}
}

func (g instanceGroup) job(name string) (manifestJob, bool) {
	for _, j := range g.Jobs {
		if j.Name == name {
			return j, true
		}
	}
	return manifestJob{}, false
}

func (m manifest) hasRelease(name string) bool {
	for _, r := range m.Releases {
		if r.Name == name {
			return true
		}
	}
	return false
}

// checkDeclared fails for a property a manifest sets on a netman job that the job's spec
// does not declare: BOSH would ignore it without a word.
func checkDeclared(t testing.TB, job string, props map[string]any) {
	t.Helper()
	spec := readJobSpec(t, job)
	var walk func(prefix string, m map[string]any)
	walk = func(prefix string, m map[string]any) {
		for k, v := range m {
			name := k
			if prefix != "" {
				name = prefix + "." + k
			}
			if _, ok := spec.Properties[name]; ok {
				continue
			}
			if sub, ok := v.(map[string]any); ok {
				walk(name, sub)
				continue
			}
			t.Errorf("job %s: the manifest sets %s, which its spec does not declare", job, name)
		}
	}
	walk("", props)
}

// TestBoshLiteFilesAreYAML parses every YAML file under bosh-lite/; ops files must be lists
// of operations with a type and a path.
func TestBoshLiteFilesAreYAML(t *testing.T) {
	root := filepath.Join(repoRoot(t), "bosh-lite")
	var files []string
	filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(path, ".yml") && !strings.Contains(path, "/generated/") {
			files = append(files, path)
		}
		return nil
	})
	if len(files) < 4 {
		t.Fatalf("only %d YAML files under bosh-lite/", len(files))
	}
	for _, f := range files {
		rel, _ := filepath.Rel(root, f)
		t.Run(rel, func(t *testing.T) {
			var v any
			yamlFile(t, f, &v)
			if ops, isList := v.([]any); isList {
				for i, op := range ops {
					o, _ := op.(map[string]any)
					if o["type"] != "replace" && o["type"] != "remove" || !strings.HasPrefix(o["path"].(string), "/") {
						t.Errorf("operation %d is not a replace/remove with a path: %v", i+1, op)
					}
				}
			}
		})
	}
}

// TestLocalOnlyManifest checks local-only.yml against the cloud config and netman's jobs,
// and renders its netman-cni job into a configuration the wrapper accepts.
func TestLocalOnlyManifest(t *testing.T) {
	root := repoRoot(t)
	var m manifest
	yamlFile(t, filepath.Join(root, "bosh-lite", "local-only.yml"), &m)
	var cloud struct {
		AZs      []struct{ Name string } `json:"azs"`
		VMTypes  []struct{ Name string } `json:"vm_types"`
		Networks []struct{ Name string } `json:"networks"`
	}
	yamlFile(t, filepath.Join(root, "bosh-lite", "cloud-config.yml"), &cloud)
	names := func(items []struct{ Name string }) map[string]bool {
		s := map[string]bool{}
		for _, i := range items {
			s[i.Name] = true
		}
		return s
	}
	azs, vmTypes, networks := names(cloud.AZs), names(cloud.VMTypes), names(cloud.Networks)

	cell := m.group(t, "cell")
	if !vmTypes[cell.VMType] {
		t.Errorf("vm_type %q is not in cloud-config.yml", cell.VMType)
	}
	for _, az := range cell.AZs {
		if !azs[az] {
			t.Errorf("az %q is not in cloud-config.yml", az)
		}
	}
	for _, n := range cell.Networks {
		if !networks[n.Name] {
			t.Errorf("network %q is not in cloud-config.yml", n.Name)
		}
	}
	for _, j := range cell.Jobs {
		if !m.hasRelease(j.Release) {
			t.Errorf("job %s uses release %s, which the manifest does not list", j.Name, j.Release)
		}
	}
	if _, ok := cell.job("policy-agent"); ok {
		t.Error("local-only runs a policy agent")
	}
	garden, _ := cell.job("garden")
	gp, _ := garden.Properties["garden"].(map[string]any)
	if gp["network_plugin"] != "/var/vcap/packages/runc-cni/bin/garden-external-networker" {
		t.Errorf("garden does not run garden-external-networker: %v", gp["network_plugin"])
	}
	gardenCNI, ok := cell.job("garden-cni")
	if !ok {
		t.Fatal("no garden-cni job")
	}
	checkGardenCNI(t, gardenCNI)

	cni, ok := cell.job("netman-cni")
	if !ok || cni.Release != "netman" {
		t.Fatalf("no netman-cni job from the netman release")
	}
	checkDeclared(t, "netman-cni", cni.Properties)
	checkNoJobTwice(t, m)
	checkLinks(t, m, nil)
	cfg := renderWrapperConf(t, "netman-cni", cni.Properties)
	if cfg.DelegateType() != "bridge" {
		t.Errorf("local-only delegates to %s, want bridge", cfg.DelegateType())
	}
}

// checkGardenCNI: garden-cni must point at the netman-cni package's binaries and the
// netman-cni job's config directory, the two settings the spec tells operators to change.
func checkGardenCNI(t testing.TB, j manifestJob) {
	t.Helper()
	if j.Properties["cni_plugin_dir"] != "/var/vcap/packages/netman-cni/bin" ||
		j.Properties["cni_config_dir"] != "/var/vcap/jobs/netman-cni/config/cni" {
		t.Errorf("garden-cni dirs: %v %v", j.Properties["cni_plugin_dir"], j.Properties["cni_config_dir"])
	}
	// Older garden-cni jobs read the same settings under other names.
	older, _ := j.Properties["garden-cni"].(map[string]any)
	adapter, _ := older["adapter"].(map[string]any)
	cfn, _ := j.Properties["cf_networking"].(map[string]any)
	for name, m := range map[string]map[string]any{"garden-cni": older, "garden-cni.adapter": adapter, "cf_networking": cfn} {
		if m["cni_plugin_dir"] != j.Properties["cni_plugin_dir"] || m["cni_config_dir"] != j.Properties["cni_config_dir"] {
			t.Errorf("garden-cni's %s.* dirs differ: %v", name, m)
		}
	}
	spec := readJobSpec(t, "netman-cni")
	if _, listed := spec.Templates["30-cni-wrapper-plugin.conf.erb"]; !listed || spec.Templates["30-cni-wrapper-plugin.conf.erb"] != "config/cni/30-cni-wrapper-plugin.conf" {
		t.Errorf("netman-cni does not render its conf into config/cni: %v", spec.Templates)
	}
}

func renderWrapperConf(t testing.TB, job string, props map[string]any) *wrapper.Config {
	t.Helper()
	dir := mustRender(t, job, props, nil)
	data, err := os.ReadFile(filepath.Join(dir, "config", "cni", "30-cni-wrapper-plugin.conf"))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := wrapper.LoadConfig(data)
	if err != nil {
		t.Fatalf("wrapper.LoadConfig: %v\n%s", err, data)
	}
	return cfg
}

// TestGenerateBoshLiteManifests runs the script on a cf-deployment stand-in in each of its
// modes and checks what netman's ops files did to it. The ops files are applied by
// scripts/lib/apply-ops.rb here (no bosh CLI needed).
func TestGenerateBoshLiteManifests(t *testing.T) {
	testenv.RequireCommand(t, "ruby")
	cases := []struct {
		name      string
		env       []string
		agent     bool
		delegate  string
		modeWords string
	}{
		{"netman", nil, true, "bridge", "policy agent"},
		{"CNI_BRIDGE=true", []string{"CNI_BRIDGE=true"}, false, "bridge", "no container-to-container"},
		{"NETMAN_DELEGATE=flannel", []string{"NETMAN_DELEGATE=flannel"}, true, "flannel", "flannel"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "cf.yml")
			stdout, err := generate(t, append(c.env, "OUTPUT="+out))
			if err != nil {
				t.Fatalf("generate-bosh-lite-manifests: %v", err)
			}
			if !strings.Contains(stdout, "wrote "+out) || !strings.Contains(stdout, c.modeWords) ||
				!strings.Contains(stdout, "bosh -e lite -d cf deploy "+out) {
				t.Errorf("output does not say what it wrote and how to deploy it:\n%s", stdout)
			}
			var m manifest
			yamlFile(t, out, &m)
			checkGenerated(t, m, c.agent, c.delegate)
		})
	}
}

func checkGenerated(t *testing.T, m manifest, agent bool, delegate string) {
	if !m.hasRelease("netman") || !m.hasRelease("postgres") {
		t.Errorf("releases: %+v", m.Releases)
	}
	cell := m.group(t, "diego-cell")
	for _, gone := range []string{"silk-cni", "silk-daemon", "vxlan-policy-agent", "netmon"} {
		if _, ok := cell.job(gone); ok {
			t.Errorf("diego-cell still runs %s", gone)
		}
	}
	if _, ok := m.group(t, "diego-api").job("silk-controller"); ok {
		t.Error("diego-api still runs silk-controller")
	}
	gardenCNI, _ := cell.job("garden-cni")
	checkGardenCNI(t, gardenCNI)
	if !slices.ContainsFunc(m.placedJobs(cell), func(j manifestJob) bool { return j.Name == "bpm" }) {
		t.Error("diego-cell has no bpm job (nor the bpm addon) for the policy agent")
	}
	checkNoJobTwice(t, m)

	certs := testCerts(t)
	cni, ok := cell.job("netman-cni")
	if !ok || cni.Release != "netman" {
		t.Fatal("diego-cell has no netman-cni job")
	}
	checkDeclared(t, "netman-cni", cni.Properties)
	if cfg := renderWrapperConf(t, "netman-cni", cni.Properties); cfg.DelegateType() != delegate {
		t.Errorf("delegate %s, want %s", cfg.DelegateType(), delegate)
	}

	// The flannel delegate needs flanneld on every cell and etcd before them.
	fl, withFlanneld := cell.job("flanneld")
	if withFlanneld != (delegate == "flannel") {
		t.Errorf("flanneld on diego-cell: %v, delegate %s", withFlanneld, delegate)
	}
	if withFlanneld {
		checkDeclared(t, "flanneld", fl.Properties)
		if dig(fl.Properties, "subnet_file") != dig(cni.Properties, "flannel", "subnet_file") {
			t.Errorf("flanneld writes %v, the CNI job reads %v", dig(fl.Properties, "subnet_file"), dig(cni.Properties, "flannel", "subnet_file"))
		}
		etcd, ok := m.group(t, "diego-api").job("etcd")
		if !ok || etcd.Release != "netman" {
			t.Fatal("no etcd job on diego-api")
		}
		checkDeclared(t, "etcd", etcd.Properties)
	}

	pa, ok := cell.job("policy-agent")
	if ok != agent {
		t.Fatalf("policy-agent on diego-cell: %v, want %v", ok, agent)
	}
	if agent {
		checkDeclared(t, "policy-agent", pa.Properties)
		if pa.Properties["datastore"] != cni.Properties["datastore"] {
			t.Errorf("agent reads %v, wrapper writes %v", pa.Properties["datastore"], cni.Properties["datastore"])
		}
		mustRender(t, "policy-agent", substitute(t, pa.Properties, certs), nil)
	}

	api := m.group(t, "api")
	if _, ok := api.job("policy-server-internal"); ok {
		t.Error("api still runs cf-networking's policy-server-internal")
	}
	ps, ok := api.job("policy-server")
	if !ok || ps.Release != "netman" {
		t.Fatalf("api's policy-server is not netman's: %+v", ps)
	}
	checkNetmanJobs(t, m)
	psProps := ps.Properties["policy-server"].(map[string]any)
	if psProps["ca_cert"] != "((network_policy_server.ca))" {
		t.Errorf("policy-server.ca_cert = %v, want cf-deployment's network_policy_server CA", psProps["ca_cert"])
	}
	if _, ok := api.job("policy-server-asg-syncer"); ok {
		t.Error("api still runs policy-server-asg-syncer")
	}
	dir := mustRender(t, "policy-server", substitute(t, ps.Properties, certs), nil)
	cfgPath := relocate(t, dir, "policy-server", "policy-server.json")
	if out, err := exec.Command(buildCmd(t, "policy-server"), "-config-file", cfgPath, "-validate-config").CombinedOutput(); err != nil {
		t.Errorf("policy-server -validate-config refuses the generated manifest's config: %v\n%s", err, out)
	}

	// The certificates are cf-deployment's: the internal API's server certificate names
	// the address agents dial, and the agent's client certificate is from the same CA.
	vars := map[string]map[string]any{}
	for _, v := range m.Variables {
		vars[v.Name] = v.Options
	}
	if vars["network_policy_server"]["ca"] != "network_policy_ca" || vars["network_policy_client"]["ca"] != "network_policy_ca" {
		t.Errorf("certificate variables: %v", vars)
	}
	if names, _ := vars["network_policy_server"]["alternative_names"].([]any); !containsAny(names, mutualtlstest.ServerName) {
		t.Errorf("server certificate names %v lack %s", names, mutualtlstest.ServerName)
	}
	for _, gone := range replacedVariables {
		if _, ok := vars[gone]; ok {
			t.Errorf("variable %s is left", gone)
		}
	}
}

func containsAny(list []any, want string) bool {
	for _, v := range list {
		if v == want {
			return true
		}
	}
	return false
}

// testCerts stands in for what the director's config server generates for the ((vars)).
func testCerts(t testing.TB) map[string]string {
	t.Helper()
	ca := mutualtlstest.NewAuthority(t, "netman_ca")
	sc, sk := ca.Issue(t, mutualtlstest.ServerLeaf())
	cc, ck := ca.Issue(t, mutualtlstest.ClientLeaf())
	uaa := mutualtlstest.NewAuthority(t, "uaa_ca")
	ec, ek := ca.Issue(t, mutualtlstest.Leaf{CommonName: "api.bosh-lite.com", DNSNames: []string{"api.bosh-lite.com"}})
	return map[string]string{
		"((network_policy_server.ca))":                   string(ca.CertPEM),
		"((network_policy_server.certificate))":          string(sc),
		"((network_policy_server.private_key))":          string(sk),
		"((network_policy_client.ca))":                   string(ca.CertPEM),
		"((network_policy_client.certificate))":          string(cc),
		"((network_policy_client.private_key))":          string(ck),
		"((network_policy_server_external.certificate))": string(ec),
		"((network_policy_server_external.private_key))": string(ek),
		"((uaa_ssl.ca))":                                 string(uaa.CertPEM),
		"((uaa_clients_network_policy_secret))":          "generated-secret",
		"((network_policy_database_password))":           "generated-password",
		"((mysql_server_certificate.ca))":                string(mutualtlstest.NewAuthority(t, "mysql CA").CertPEM),
		"https://uaa.((system_domain))/oauth/token":      "https://uaa.bosh-lite.com/oauth/token",
	}
}

// substitute replaces ((variables)) in property values, as the director does at deploy time.
func substitute(t testing.TB, props map[string]any, values map[string]string) map[string]any {
	t.Helper()
	data, _ := json.Marshal(props)
	var v any
	json.Unmarshal(data, &v)
	var walk func(any) any
	walk = func(x any) any {
		switch x := x.(type) {
		case map[string]any:
			for k, e := range x {
				x[k] = walk(e)
			}
		case []any:
			for i, e := range x {
				x[i] = walk(e)
			}
		case string:
			if r, ok := values[x]; ok {
				return r
			}
			if strings.Contains(x, "((") {
				t.Errorf("no test value for %s", x)
			}
		}
		return x
	}
	return walk(v).(map[string]any)
}

// TestGenerateBoshLiteManifestsErrors: a missing cf-deployment or a bad mode is a clear
// error and leaves no output behind.
func TestGenerateBoshLiteManifestsErrors(t *testing.T) {
	testenv.RequireCommand(t, "ruby")
	dir := t.TempDir()
	out := filepath.Join(dir, "cf.yml")
	for _, c := range []struct {
		name string
		env  []string
		want string
	}{
		{"no cf-deployment", []string{"CF_DEPLOYMENT=" + dir}, "set CF_DEPLOYMENT"},
		{"bad delegate", []string{"NETMAN_DELEGATE=silk"}, "NETMAN_DELEGATE"},
		{"ops file that does not apply", []string{"OPS_FILES=" + writeOps(t, dir)}, "no-such-group"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := generate(t, append(c.env, "OUTPUT="+out))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %v, want one mentioning %q", err, c.want)
			}
			left, _ := filepath.Glob(filepath.Join(dir, "cf.yml*"))
			if len(left) != 0 {
				t.Errorf("left behind: %v", left)
			}
		})
	}
}

func writeOps(t testing.TB, dir string) string {
	path := filepath.Join(dir, "bad-ops.yml")
	writeFile(t, path, "- type: remove\n  path: /instance_groups/name=no-such-group/jobs/name=x\n", 0o644)
	return path
}

// generate runs scripts/generate-bosh-lite-manifests on the cf-deployment stand-in.
func generate(t testing.TB, env []string) (string, error) {
	t.Helper()
	root := repoRoot(t)
	cmd := exec.Command(filepath.Join(root, "scripts", "generate-bosh-lite-manifests"))
	cmd.Env = append(os.Environ(), "NETMAN_OPS_APPLIER=ruby",
		"CF_DEPLOYMENT="+filepath.Join(root, "internal", "boshrelease", "testdata", "cf-deployment"))
	cmd.Env = append(cmd.Env, env...)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), &cmdError{err: err, stderr: stderr.String()}
	}
	return stdout.String(), nil
}

// fakeBoshV1 puts a stand-in for the old v1 bosh CLI first on PATH: it reports a 1.x
// version, answers `status --uuid` with uuid and logs every call to the returned file.
func fakeBoshV1(t *testing.T, uuid string) (log string) {
	t.Helper()
	dir := t.TempDir()
	log = filepath.Join(dir, "bosh.log")
	writeFile(t, filepath.Join(dir, "bosh"), `#!/bin/sh
echo "$*" >>`+log+`
case "$*" in
  --version) echo "BOSH 1.3262.26.0" ;;
  "status --uuid") echo `+uuid+` ;;
esac
`, 0o755)
	t.Setenv("PATH", dir+":"+os.Getenv("PATH"))
	return log
}

// yamlAfterERB reads a manifest the way the v1 CLI does: ERB first, then YAML.
func yamlAfterERB(t *testing.T, path string, v any) {
	t.Helper()
	ruby := testenv.RequireCommand(t, "ruby")
	out, err := exec.Command(ruby, "-rerb", "-ryaml", "-rjson", "-e",
		`puts JSON.generate(YAML.safe_load(ERB.new(File.read(ARGV[0])).result, aliases: true))`, path).Output()
	if err != nil {
		t.Fatalf("%s through ERB and YAML: %v", path, err)
	}
	if err := json.Unmarshal(out, v); err != nil {
		t.Fatal(err)
	}
}

// TestManifestsForBoshV1 covers the spec's v1 CLI commands: local-only.yml carries a
// director_uuid the v1 CLI fills in (and that is a plain string to the v2 CLI), and with a
// v1 CLI on PATH generate-bosh-lite-manifests sets the deployment and writes a manifest a
// bare `bosh deploy` takes: the director's UUID and no ((system_domain)) left for -v.
func TestManifestsForBoshV1(t *testing.T) {
	const uuid = "2f3c1c4a-9a1e-4c3b-8f0e-5d6c7b8a9f01"
	root := repoRoot(t)
	var raw map[string]any
	yamlFile(t, filepath.Join(root, "bosh-lite", "local-only.yml"), &raw)
	if _, ok := raw["director_uuid"].(string); !ok {
		t.Errorf("local-only.yml has no director_uuid: %v", raw["director_uuid"])
	}

	log := fakeBoshV1(t, uuid)
	var v1 map[string]any
	yamlAfterERB(t, filepath.Join(root, "bosh-lite", "local-only.yml"), &v1)
	if v1["director_uuid"] != uuid || v1["name"] != "netman-local" {
		t.Errorf("local-only.yml as the v1 CLI reads it: director_uuid %v, name %v", v1["director_uuid"], v1["name"])
	}

	out := filepath.Join(t.TempDir(), "cf.yml")
	cmd := exec.Command(filepath.Join(root, "scripts", "generate-bosh-lite-manifests"))
	cmd.Env = append(os.Environ(), "CNI_BRIDGE=true", "OUTPUT="+out,
		"CF_DEPLOYMENT="+filepath.Join(root, "internal", "boshrelease", "testdata", "cf-deployment"))
	stdout, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("generate-bosh-lite-manifests with a v1 CLI: %v\n%s", err, stdout)
	}
	calls, _ := os.ReadFile(log)
	if !strings.Contains(string(calls), "deployment "+out+"\n") || !strings.Contains(string(stdout), "run: bosh deploy") {
		t.Errorf("the deployment was not set for a bare bosh deploy; bosh calls:\n%s\noutput:\n%s", calls, stdout)
	}
	data, _ := os.ReadFile(out)
	if strings.Contains(string(data), "((system_domain))") {
		t.Error("the v1 manifest still needs -v system_domain")
	}
	var m manifest
	yamlAfterERB(t, out, &m)
	var top map[string]any
	yamlAfterERB(t, out, &top)
	if top["director_uuid"] != uuid {
		t.Errorf("director_uuid %v, want the director's %s", top["director_uuid"], uuid)
	}
	checkGenerated(t, m, false, "bridge")
}
