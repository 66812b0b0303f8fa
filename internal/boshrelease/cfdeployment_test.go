package boshrelease

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"netman/internal/testsupport/testenv"
)

// boshCLI is the real bosh CLI named by BOSH_CLI (.ci/run sets it to ../shared/tools/bosh).
func boshCLI(t testing.TB) string {
	t.Helper()
	cli := os.Getenv("BOSH_CLI")
	if cli == "" {
		testenv.Unavailable(t, "BOSH_CLI is not set (the path of a bosh v2 CLI; .ci/run sets it)")
	}
	return cli
}

// cfDeploymentDir is a cf-deployment checkout: CF_DEPLOYMENT_DIR, or cf-deployment beside
// the directory of BOSH_CLI (as ../shared/tools/bosh and ../shared/cf-deployment are).
func cfDeploymentDir(t testing.TB) string {
	t.Helper()
	dir := os.Getenv("CF_DEPLOYMENT_DIR")
	if dir == "" {
		dir = filepath.Join(filepath.Dir(filepath.Dir(boshCLI(t))), "cf-deployment")
	}
	if _, err := os.Stat(filepath.Join(dir, "cf-deployment.yml")); err != nil {
		testenv.Unavailable(t, "no cf-deployment.yml in "+dir+" (set CF_DEPLOYMENT_DIR)")
	}
	return dir
}

// interpolate runs `bosh interpolate` on base with the ops files in order.
func interpolate(t testing.TB, base string, ops ...string) ([]byte, error) {
	t.Helper()
	args := []string{"interpolate", base}
	for _, o := range ops {
		args = append(args, "-o", o)
	}
	cmd := exec.Command(boshCLI(t), args...)
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir())
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, &cmdError{err: err, stderr: stderr.String() + string(out)}
	}
	return out, nil
}

func parseManifest(t testing.TB, raw []byte) manifest {
	t.Helper()
	path := filepath.Join(t.TempDir(), "manifest.yml")
	writeFile(t, path, string(raw), 0o644)
	var m manifest
	yamlFile(t, path, &m)
	return m
}

// Variables an operator of use-external-dbs.yml supplies with -v or a vars file.
var externalDBVars = []string{"external_database_type", "external_database_port",
	"external_policy_server_database_name", "external_policy_server_database_address",
	"external_policy_server_database_username", "external_policy_server_database_password",
	"external_cc_database_name", "external_cc_database_address", "external_cc_database_username", "external_cc_database_password",
	"external_uaa_database_name", "external_uaa_database_address", "external_uaa_database_username", "external_uaa_database_password",
	"external_bbs_database_name", "external_bbs_database_address", "external_bbs_database_username", "external_bbs_database_password",
	"external_routing_api_database_name", "external_routing_api_database_address", "external_routing_api_database_username", "external_routing_api_database_password",
	"external_locket_database_name", "external_locket_database_address", "external_locket_database_username", "external_locket_database_password",
	"external_credhub_database_name", "external_credhub_database_address", "external_credhub_database_username", "external_credhub_database_password",
	"external_silk_controller_database_name", "external_silk_controller_database_address", "external_silk_controller_database_username", "external_silk_controller_database_password",
	"system_domain"}

// TestCFDeploymentWithNetman interpolates the real cf-deployment.yml with netman's ops file
// after cf-deployment's common ops files, in the order operators apply them, and checks
// what a director would refuse and what netman must leave behind.
func TestCFDeploymentWithNetman(t *testing.T) {
	cfd := cfDeploymentDir(t)
	ops := func(names ...string) []string {
		var out []string
		for _, n := range names {
			out = append(out, filepath.Join(cfd, "operations", n))
		}
		return out
	}
	netman := filepath.Join(repoRoot(t), "bosh-lite", "deployments", "diego_with_netman.yml")
	common := []string{"use-jammy-stemcell.yml", "experimental/enable-iptables-logger.yml", "disable-dynamic-asgs.yml", "bosh-lite.yml", "scale-to-one-az.yml"}
	cases := []struct {
		name string
		ops  []string
	}{
		{"use-postgres", ops("use-postgres.yml")},
		{"use-external-dbs", ops("use-external-dbs.yml")},
		{"use-postgres and the common ops files", ops(append([]string{"use-postgres.yml"}, common...)...)},
		{"use-external-dbs and the common ops files", ops(append([]string{"use-external-dbs.yml"}, common...)...)},
		{"no database ops file (pre-start refuses MySQL)", nil},
	}
	for _, o := range common {
		cases = append(cases, struct {
			name string
			ops  []string
		}{"use-postgres and " + o, ops("use-postgres.yml", o)})
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			raw, err := interpolate(t, filepath.Join(cfd, "cf-deployment.yml"), append(c.ops, netman)...)
			if err != nil {
				t.Fatalf("bosh interpolate: %v", err)
			}
			m := parseManifest(t, raw)
			without, err := interpolate(t, filepath.Join(cfd, "cf-deployment.yml"), c.ops...)
			if err != nil {
				t.Fatalf("bosh interpolate without netman: %v", err)
			}
			checkNoSilk(t, m, raw)
			checkNoJobTwice(t, m)
			checkLinks(t, m, linkProblems(t, parseManifest(t, without)))
			checkVariablesDefined(t, m, raw, externalDBVars...)
			checkExternalTLS(t, m)
			checkNetmanJobs(t, m)
			checkScraped(t, m)
			cell := m.group(t, "diego-cell")
			gardenCNI, _ := cell.job("garden-cni")
			checkGardenCNI(t, gardenCNI)
			for _, job := range []string{"netman-cni", "policy-agent"} {
				if j, ok := cell.job(job); !ok || j.Release != "netman" {
					t.Errorf("diego-cell has no %s job of the netman release", job)
				}
			}
			// The database properties are the ones cf-deployment's ops files set.
			ps, _ := m.group(t, "api").job("policy-server")
			db, _ := ps.Properties["database"].(map[string]any)
			want := map[string]string{"use-postgres": "postgres", "use-external-dbs": "((external_database_type))", "no database": "mysql"}
			for prefix, typ := range want {
				if strings.HasPrefix(c.name, prefix) && db["type"] != typ {
					t.Errorf("database.type %v, want %s", db["type"], typ)
				}
			}
		})
	}
}

// TestCFDeploymentOpsAfterNetman: applied after netman's ops file, the cf-deployment ops
// files that edit silk's jobs or variables cannot apply (netman removed them), and
// docs/operations.md says so; every other one applies. The policy server's own settings are
// never the reason: its properties keep cf-networking's shape.
func TestCFDeploymentOpsAfterNetman(t *testing.T) {
	cfd := cfDeploymentDir(t)
	netman := filepath.Join(repoRoot(t), "bosh-lite", "deployments", "diego_with_netman.yml")
	docs, err := os.ReadFile(filepath.Join(repoRoot(t), "docs", "operations.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range []string{"use-postgres.yml", "use-external-dbs.yml", "use-jammy-stemcell.yml",
		"experimental/enable-iptables-logger.yml", "disable-dynamic-asgs.yml", "bosh-lite.yml", "scale-to-one-az.yml"} {
		t.Run(o, func(t *testing.T) {
			_, err := interpolate(t, filepath.Join(cfd, "cf-deployment.yml"), netman, filepath.Join(cfd, "operations", o))
			documented := strings.Contains(string(docs), "`"+o+"`")
			if err == nil {
				return
			}
			msg := err.Error()
			if strings.Contains(msg, "policy-server/") {
				t.Errorf("%s fails on the policy server after netman's ops file: %v", o, err)
			}
			removed := false
			for _, name := range append(append([]string{}, replacedJobs...), replacedVariables...) {
				removed = removed || strings.Contains(msg, "name="+name+"'")
			}
			if !removed {
				t.Errorf("%s fails after netman's ops file for another reason than a removed silk job or variable: %v", o, err)
			}
			if !documented {
				t.Errorf("%s cannot follow netman's ops file, and docs/operations.md does not name it", o)
			}
		})
	}
}

// TestGenerateBoshLiteManifestsFromCFDeployment runs scripts/generate-bosh-lite-manifests on
// the real cf-deployment with the real bosh CLI in each of its modes: the manifests it
// writes resolve every link that cf-deployment itself resolves, and keep the checks above.
func TestGenerateBoshLiteManifestsFromCFDeployment(t *testing.T) {
	cfd := cfDeploymentDir(t)
	bin := t.TempDir()
	if err := os.Symlink(boshCLI(t), filepath.Join(bin, "bosh")); err != nil {
		t.Fatal(err)
	}
	without, err := interpolate(t, filepath.Join(cfd, "cf-deployment.yml"),
		filepath.Join(cfd, "operations", "bosh-lite.yml"), filepath.Join(cfd, "operations", "use-postgres.yml"))
	if err != nil {
		t.Fatal(err)
	}
	baseline := linkProblems(t, parseManifest(t, without))
	for _, c := range []struct {
		name     string
		env      []string
		agent    bool
		delegate string
	}{
		{"netman", nil, true, "bridge"},
		{"CNI_BRIDGE=true", []string{"CNI_BRIDGE=true"}, false, "bridge"},
		{"NETMAN_DELEGATE=flannel", []string{"NETMAN_DELEGATE=flannel"}, true, "flannel"},
	} {
		t.Run(c.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "cf.yml")
			cmd := exec.Command(filepath.Join(repoRoot(t), "scripts", "generate-bosh-lite-manifests"))
			cmd.Env = append(os.Environ(), "PATH="+bin+":"+os.Getenv("PATH"), "HOME="+t.TempDir(),
				"CF_DEPLOYMENT="+cfd, "OUTPUT="+out)
			cmd.Env = append(cmd.Env, c.env...)
			if stdout, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("generate-bosh-lite-manifests: %v\n%s", err, stdout)
			}
			raw, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			m := parseManifest(t, raw)
			checkGenerated(t, m, c.agent, c.delegate)
			checkNoSilk(t, m, raw)
			checkLinks(t, m, baseline)
			checkVariablesDefined(t, m, raw, "system_domain")
			checkExternalTLS(t, m)
		})
	}
}

// checkScraped: cf-deployment's prom_scraper addon runs wherever a netman job serves
// metrics, so the prom_scraper_config.yml the jobs write (TestPromScraperConfigs) is read.
func checkScraped(t testing.TB, m manifest) {
	t.Helper()
	for _, g := range m.InstanceGroups {
		jobs := m.placedJobs(g)
		serves := slices.ContainsFunc(jobs, func(j manifestJob) bool {
			return j.Release == "netman" && (j.Name == "policy-server" || j.Name == "policy-agent")
		})
		scraped := slices.ContainsFunc(jobs, func(j manifestJob) bool { return j.Name == "prom_scraper" })
		if serves && !scraped {
			t.Errorf("instance group %s runs netman's metrics but no prom_scraper", g.Name)
		}
	}
}
