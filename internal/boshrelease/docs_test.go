package boshrelease

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"netman/wrapper"
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
		// (properties.policy-server.ca_cert of the policy-server job: the ops file replaces
		// /properties/policy-server with a map holding ca_cert.)
		"bosh-lite/deployments/diego_with_netman.yml": {"jobs/name=policy-server/properties/policy-server?\n  value:\n    ca_cert: ((network_policy_server.ca))"},
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
	for _, doc := range []string{"docs/3rd-party.md", "docs/operations.md", "README.md"} {
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

var jsonBlock = regexp.MustCompile("(?s)```json\n(.*?)```")

// TestThirdPartyGuideJSON: every JSON example in docs/3rd-party.md is valid JSON; the
// rendered-file example is what the netman-cni job renders with delegate: flannel (so its
// cniVersion is the job's default); the per-container example is what the wrapper's own
// loader accepts, metadata included; the policy examples are in the server's order.
func TestThirdPartyGuideJSON(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(repoRoot(t), "docs", "3rd-party.md"))
	if err != nil {
		t.Fatal(err)
	}
	blocks := jsonBlock.FindAllStringSubmatch(string(data), -1)
	if len(blocks) < 3 {
		t.Fatalf("only %d JSON examples in docs/3rd-party.md", len(blocks))
	}
	var rendered, perContainer, policies int
	for i, b := range blocks {
		var v map[string]any
		if err := json.Unmarshal([]byte(b[1]), &v); err != nil {
			t.Errorf("JSON example %d is not valid JSON: %v\n%s", i+1, err, b[1])
			continue
		}
		switch {
		case v["type"] == "wrapper" && v["metadata"] == nil:
			rendered++
			dir := mustRender(t, "netman-cni", props(map[string]any{"delegate": "flannel"}), nil)
			got := readJSON(t, filepath.Join(dir, "config", "cni", "30-cni-wrapper-plugin.conf"))
			if !reflect.DeepEqual(got, v) {
				t.Errorf("the guide's rendered configuration differs from the job's:\nguide: %v\njob:   %v", v, got)
			}
		case v["type"] == "wrapper":
			perContainer++
			cfg, err := wrapper.LoadConfig([]byte(b[1]))
			if err != nil {
				t.Errorf("the wrapper refuses the guide's per-container example: %v", err)
			} else if cfg.DelegateType() != "flannel" || cfg.Metadata["policy_group_id"] == nil {
				t.Errorf("per-container example: delegate %s, metadata %v", cfg.DelegateType(), cfg.Metadata)
			}
		case v["policies"] != nil:
			policies++
			var resp struct {
				Policies []struct {
					Source      struct{ ID string }
					Destination struct {
						ID, Protocol string
						Port         int
					}
				}
			}
			json.Unmarshal([]byte(b[1]), &resp)
			key := func(i int) string {
				p := resp.Policies[i]
				return fmt.Sprintf("%s %s %s %05d", p.Source.ID, p.Destination.ID, p.Destination.Protocol, p.Destination.Port)
			}
			for j := 1; j < len(resp.Policies); j++ {
				if key(j-1) > key(j) {
					t.Errorf("policy example %d is not in the server's order: %s before %s", i+1, key(j-1), key(j))
				}
			}
		}
	}
	if rendered != 1 || perContainer != 1 || policies == 0 {
		t.Errorf("examples found: %d rendered, %d per-container, %d policy lists", rendered, perContainer, policies)
	}
}

// TestReadmeLinksDocs: the README's first screen stays short; the guides are linked below.
func TestReadmeLinksDocs(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(repoRoot(t), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, doc := range []string{"docs/3rd-party.md", "docs/operations.md", "docs/api.md", "docs/quickstart.md"} {
		if !strings.Contains(string(data), "]("+doc+")") {
			t.Errorf("README.md does not link %s", doc)
		}
	}
}
