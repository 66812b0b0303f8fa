package integration_test

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"netman/internal/testsupport/ccstub"
	"netman/lib/mutualtls"
	"netman/lib/policyclient"
)

// Cloud Controller (and UAA's token endpoint) is the ccstub stand-in: it cannot run
// here. The policy server is the real binary on a real Postgres.

// securityGroups reads the groups of spaces with netman's client, as an agent does.
func (s *server) securityGroups(t *testing.T, spaces ...string) ([]string, error) {
	t.Helper()
	tlsConfig, err := mutualtls.ClientConfig(filepath.Join(s.certs, "client.crt"), filepath.Join(s.certs, "client.key"), filepath.Join(s.certs, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	tlsConfig.ServerName = serverName
	c, err := policyclient.New(fmt.Sprintf("https://127.0.0.1:%d", s.ports.internal), tlsConfig, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	groups, err := c.SecurityGroups(context.Background(), spaces)
	var guids []string
	for _, g := range groups {
		guids = append(guids, g.GUID)
		if g.GUID == "sg-1" && len(g.Rules) > 0 && g.Rules[0].Ports != "443" {
			t.Errorf("sg-1's rules as the client reads them: %+v", g.Rules)
		}
	}
	return guids, err
}

// waitForGroup polls the internal API until space's groups include guid.
func (s *server) waitForGroup(t *testing.T, space, guid string, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		if guids, _ := s.securityGroups(t, space); slices.Contains(guids, guid) {
			return time.Since(start)
		}
		if time.Since(start) > within {
			t.Fatalf("%s did not reach space %s's security groups within %v\n%s", guid, space, within, s.out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestSecurityGroupsFromCloudController(t *testing.T) {
	cc := ccstub.New(t)
	cc.SetSecurityGroup(ccstub.SecurityGroup{GUID: "sg-1", Name: "one", RunningSpaces: []string{"space-1"},
		Rules: []ccstub.Rule{{Protocol: "tcp", Destination: "10.0.0.0/8", Ports: "443"}}})
	const interval = 2 * time.Second
	dir := certs(t)
	s := startWith(t, dir, newDatabase(t), map[string]any{
		"uaa_url": cc.UAAURL, "uaa_ca_cert_file": cc.CAFile,
		"cc_url": cc.URL, "cc_ca_cert_file": cc.CAFile,
		"cc_internal_url": cc.InternalURL, "cc_internal_ca_cert_file": cc.CAFile,
		"cc_internal_client_cert_file": cc.ClientCertFile, "cc_internal_client_key_file": cc.ClientKeyFile,
		"uaa_client_secret":         ccstub.ClientSecret,
		"asg_poll_interval_seconds": int(interval / time.Second),
	})
	s.waitForGroup(t, "space-1", "sg-1", 10*time.Second)

	// A change in CC is served within one sync interval (plus the time of a sync).
	cc.SetSecurityGroup(ccstub.SecurityGroup{GUID: "sg-1", Name: "one", RunningSpaces: []string{"space-2"}})
	took := s.waitForGroup(t, "space-2", "sg-1", interval+3*time.Second)
	t.Logf("the change reached the internal API after %v (sync interval %v)", took, interval)

	// CC down: the stored groups and the policies keep being served.
	cc.SetDown(true)
	if guids, err := s.securityGroups(t, "space-2"); err != nil || !slices.Contains(guids, "sg-1") {
		t.Fatalf("with CC down: %v %v", err, guids)
	}
	s.policies(t, "")
	if err := s.stop(t); err != nil {
		t.Fatalf("exit: %v", err)
	}
	if strings.Contains(s.out.String(), ccstub.ClientSecret) {
		t.Fatal("the log shows uaa_client_secret")
	}
}

func TestValidateConfigChecksCloudControllerFiles(t *testing.T) {
	cc := ccstub.New(t)
	other := ccstub.New(t)
	dir := certs(t)
	base := map[string]any{
		"uaa_url": cc.UAAURL, "uaa_ca_cert_file": cc.CAFile, "cc_url": cc.URL, "cc_ca_cert_file": cc.CAFile,
		"cc_internal_url": cc.InternalURL, "cc_internal_ca_cert_file": cc.CAFile,
		"cc_internal_client_cert_file": cc.ClientCertFile, "cc_internal_client_key_file": cc.ClientKeyFile,
		"uaa_client_secret": ccstub.ClientSecret,
	}
	with := func(k string, v any) map[string]any {
		m := map[string]any{}
		for bk, bv := range base {
			m[bk] = bv
		}
		m[k] = v
		return m
	}
	for _, tc := range []struct {
		name  string
		extra map[string]any
		field string
	}{
		{"valid", base, ""},
		{"client key of another certificate", with("cc_internal_client_key_file", other.ClientKeyFile), "cc_internal_client_key_file"},
		{"missing CC CA", with("cc_ca_cert_file", filepath.Join(t.TempDir(), "nope.crt")), "cc_ca_cert_file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := writeConfig(t, dir, "postgres://netman@127.0.0.1:1/netman?sslmode=disable", ports{4003, 4004, 22222}, tc.extra)
			out, err := exec.Command(binary, "-config-file", cfg, "-validate-config").CombinedOutput()
			switch {
			case tc.field == "" && err != nil:
				t.Fatalf("valid config refused: %v\n%s", err, out)
			case tc.field != "" && (err == nil || !strings.Contains(string(out), tc.field)):
				t.Fatalf("want a refusal naming %s, got %v: %s", tc.field, err, out)
			}
			if strings.Contains(string(out), ccstub.ClientSecret) {
				t.Fatalf("output shows uaa_client_secret: %s", out)
			}
		})
	}
}
