package integration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"

	"netman/lib/rules/rulestest"
)

// networker runs the real garden-external-networker in the cell's namespace, as Garden
// does, with the wrapper as its only network config.
type networker struct {
	bin, configFile string
	c               *cell
}

// requireNetworker returns the real garden-external-networker, or skips the test.
func requireNetworker(t *testing.T) string {
	t.Helper()
	bin := os.Getenv("GARDEN_EXTERNAL_NETWORKER")
	if bin == "" {
		t.Skip("GARDEN_EXTERNAL_NETWORKER is not set: it names the real garden-external-networker binary (.ci/run sets it to ../shared/tools/garden-external-networker when that exists)")
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("GARDEN_EXTERNAL_NETWORKER=%s: %v", bin, err)
	}
	return bin
}

func (c *cell) newNetworker(t *testing.T, bin string) *networker {
	t.Helper()
	// The plugin directory holds the wrapper and its delegates: libcni runs the wrapper
	// from it, and hands it on as CNI_PATH.
	pluginDir := filepath.Join(c.dir, "cni-bin")
	confDir := filepath.Join(c.dir, "cni-conf")
	for _, d := range []string{pluginDir, confDir, filepath.Join(c.dir, "bind")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	links := map[string]string{"wrapper": c.wrapper}
	for _, p := range []string{"bridge", "host-local", "loopback"} {
		links[p] = filepath.Join(c.cniPath, p)
	}
	for name, target := range links {
		if err := os.Symlink(target, filepath.Join(pluginDir, name)); err != nil {
			t.Fatal(err)
		}
	}
	// What the netman-cni job renders: the static conf, no metadata or runtimeConfig.
	conf := c.rulesConf(map[string]any{
		"iptables_logging": true,
		"dns_servers":      []string{"169.254.0.2"},
		"deny_networks":    map[string]any{"running": []string{"10.30.0.11/32"}},
	})
	if err := os.WriteFile(filepath.Join(confDir, "30-cni-wrapper-plugin.conf"), conf, 0o644); err != nil {
		t.Fatal(err)
	}
	proxyUID := 0
	cfg := map[string]any{
		"cni_plugin_dir":     pluginDir,
		"cni_config_dir":     confDir,
		"bind_mount_dir":     filepath.Join(c.dir, "bind"),
		"state_file":         filepath.Join(c.dir, "external-networker-state.json"),
		"start_port":         61000,
		"total_ports":        100,
		"log_prefix":         "cfnetworking",
		"iptables_lock_file": filepath.Join(c.dir, "iptables.lock"),
		"search_domains":     []string{"service.cf.internal"},
		"proxy_port":         15001,
		"proxy_uid":          proxyUID,
	}
	b, _ := json.Marshal(cfg)
	file := filepath.Join(c.dir, "garden-external-networker.json")
	if err := os.WriteFile(file, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return &networker{bin: bin, configFile: file, c: c}
}

func (n *networker) run(t *testing.T, action, handle string, stdin any) []byte {
	t.Helper()
	in, _ := json.Marshal(stdin)
	cmd := exec.Command(n.bin, "--action="+action, "--handle="+handle, "--configFile="+n.configFile)
	cmd.Stdin = bytes.NewReader(in)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := n.c.host.Do(func(ns.NetNS) error { return cmd.Run() })
	if err != nil {
		t.Fatalf("garden-external-networker --action=%s --handle=%s: %v\nstdout: %s\nstderr: %s", action, handle, err, stdout.String(), stderr.String())
	}
	return stdout.Bytes()
}

// upOutput is what garden-external-networker prints on up.
type upOutput struct {
	Properties struct {
		ContainerIP string `json:"garden.network.container-ip"`
		MappedPorts string `json:"garden.network.mapped-ports"`
	} `json:"properties"`
	DNSServers []string `json:"dns_servers"`
}

// The real garden-external-networker drives the wrapper for several containers with
// port mappings and security groups: each app is reached through the host port the
// networker allocated, its egress follows its rules, and down leaves the cell as it was.
func TestGardenExternalNetworker(t *testing.T) {
	bin := requireNetworker(t)
	rulestest.RequireEnforcement(t)
	c := newCell(t, 1500)
	gen := c.newNetworker(t, bin)
	router := c.addRouter(t, "10.30.0.11")
	serveSource(t, router, routerAddress+":8443")
	serveSource(t, router, routerAddress+":9000")
	serveSource(t, router, "10.30.0.11:8443")
	before := c.iptablesSave(t)

	asg := []map[string]any{{
		"protocol": 1, "networks": []map[string]any{{"start": "10.30.0.0", "end": "10.30.0.255"}},
		"ports": []map[string]any{{"start": 8443, "end": 8443}}, "log": true,
	}}
	const n = 3
	handles := make([]string, n)
	for i := range n {
		handles[i] = fmt.Sprintf("gen-app-%d-%d", i, os.Getpid())
		container := newNS(t)
		serveSource(t, container, ":8080")
		// A process in the container's namespace, whose pid Garden would pass.
		sleep := exec.Command("sleep", "600")
		if err := container.Do(func(ns.NetNS) error { return sleep.Start() }); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = sleep.Process.Kill(); _ = sleep.Wait() })

		out := gen.run(t, "up", handles[i], map[string]any{
			"pid": sleep.Process.Pid,
			"properties": map[string]any{
				"app_id": "app-" + handles[i], "space_id": "space-1", "org_id": "org-1",
				"policy_group_id": "app-" + handles[i], "container_workload": "app",
			},
			"netin":        []map[string]any{{"host_port": 0, "container_port": 8080}},
			"netout_rules": asg,
		})
		var up upOutput
		if err := json.Unmarshal(out, &up); err != nil {
			t.Fatalf("up output %q: %v", out, err)
		}
		var mapped []struct{ HostPort, ContainerPort int }
		if err := json.Unmarshal([]byte(up.Properties.MappedPorts), &mapped); err != nil || len(mapped) != 1 || mapped[0].ContainerPort != 8080 {
			t.Fatalf("mapped ports %q: %v", up.Properties.MappedPorts, err)
		}
		if len(up.DNSServers) != 1 || up.DNSServers[0] != "169.254.0.2" {
			t.Errorf("dns servers %v, want the wrapper's dns_servers", up.DNSServers)
		}
		rec, ok := c.recordOf(handles[i])
		if !ok || rec.IP != up.Properties.ContainerIP || rec.Metadata["container_workload"] != "app" {
			t.Errorf("record %+v (found %v), want ip %s and the properties", rec, ok, up.Properties.ContainerIP)
		}

		hostPort := fmt.Sprintf("%s:%d", instanceAddress, mapped[0].HostPort)
		if got := mustReach(t, handles[i]+" through its mapping", router, hostPort); got != routerAddress {
			t.Errorf("%s saw the router as %s", handles[i], got)
		}
		mustRefuse(t, handles[i]+" directly", router, up.Properties.ContainerIP+":8080")
		if got := mustReach(t, handles[i]+" egress allowed", container, routerAddress+":8443"); got != instanceAddress {
			t.Errorf("%s egress seen as %s, want masqueraded to %s", handles[i], got, instanceAddress)
		}
		mustRefuse(t, handles[i]+" egress to another port", container, routerAddress+":9000")
		mustRefuse(t, handles[i]+" egress to a running deny network", container, "10.30.0.11:8443")
	}

	for _, h := range handles {
		gen.run(t, "down", h, map[string]any{})
	}
	c.expectIPTablesAsBefore(t, before, "iptables after down")
	for _, h := range handles {
		if _, ok := c.recordOf(h); ok {
			t.Errorf("%s: record left after down", h)
		}
	}
	c.expectNothingLeft(t, "netman-test", "after down")
}
