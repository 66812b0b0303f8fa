package boshrelease

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestSpecPathsExist: the 3rd-party plugin development guide links these files of the
// release; they must be there and be what it says they are.
func TestSpecPathsExist(t *testing.T) {
	root := repoRoot(t)
	for path, mustContain := range map[string][]string{
		// "The Network Configuration data that is passed to the wrapper plugin is generated
		// from this template."
		"jobs/cni-flannel/templates/30-cni-wrapper-plugin.conf.erb": {`"type" => "wrapper"`, `"delegate" => delegate`},
		// "This CA is configured ... in properties.policy-server.ca_cert. An example can be found ..."
		"bosh-lite/deployments/diego_with_netman.yml": {"policy-server:", "ca_cert: ((netman_ca.certificate))"},
		// "We provide a script to generate all required certs & keys."
		"scripts/generate-certs": {"ca.crt", "server.crt", "client.crt"},
		// "bosh update cloud-config cloud-config.yml; bosh deployment local-only.yml"
		"bosh-lite/cloud-config.yml": {"networks:"},
		"bosh-lite/local-only.yml":   {"delegate: bridge"},
		// "CNI_BRIDGE=true ./scripts/generate-bosh-lite-manifests"
		"scripts/generate-bosh-lite-manifests": {"CNI_BRIDGE"},
	} {
		data, err := os.ReadFile(filepath.Join(root, path))
		if err != nil {
			t.Errorf("%s: %v", path, err)
			continue
		}
		for _, s := range mustContain {
			if !strings.Contains(string(data), s) {
				t.Errorf("%s does not contain %q", path, s)
			}
		}
	}
	// netman-cni renders the very same template.
	link, err := filepath.EvalSymlinks(filepath.Join(root, "jobs/netman-cni/templates/30-cni-wrapper-plugin.conf.erb"))
	if err != nil || link != filepath.Join(root, "jobs/cni-flannel/templates/30-cni-wrapper-plugin.conf.erb") {
		t.Errorf("netman-cni's wrapper template is not the cni-flannel one: %s %v", link, err)
	}
}

var mdLink = regexp.MustCompile(`\]\(([^)\s]+)\)`)

// TestDocLinksResolve: every relative link in the release's docs names a file that exists.
func TestDocLinksResolve(t *testing.T) {
	root := repoRoot(t)
	for _, doc := range []string{"docs/3rd-party.md", "docs/operations.md"} {
		data, err := os.ReadFile(filepath.Join(root, doc))
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range mdLink.FindAllStringSubmatch(string(data), -1) {
			target := m[1]
			if strings.Contains(target, "://") || strings.HasPrefix(target, "#") {
				continue
			}
			target, _, _ = strings.Cut(target, "#")
			if _, err := os.Stat(filepath.Join(root, filepath.Dir(doc), target)); err != nil {
				t.Errorf("%s links to %s, which does not exist", doc, m[1])
			}
		}
	}
}
