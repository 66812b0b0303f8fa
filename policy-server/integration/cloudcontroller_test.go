package integration_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"netman/internal/testsupport/ccstub"
	"netman/lib/apiwire"
)

// Cloud Controller (and UAA's token endpoint) is the ccstub stand-in: it cannot run
// here. The policy server is the real binary on a real Postgres.

func (s *server) securityGroups(t *testing.T, spaces ...string) ([]string, int) {
	t.Helper()
	resp, err := s.client.Get(fmt.Sprintf("https://127.0.0.1:%d%s?per_page=5000&space_guids=%s",
		s.ports.internal, apiwire.InternalSecurityGroupsV1Path, strings.Join(spaces, ",")))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, resp.Body)
		return nil, resp.StatusCode
	}
	var page apiwire.SecurityGroupsV1
	if err := json.NewDecoder(resp.Body).Decode(&page); err != nil {
		t.Fatal(err)
	}
	var guids []string
	for _, g := range page.SecurityGroups {
		guids = append(guids, g.GUID)
	}
	return guids, resp.StatusCode
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
	if guids, status := s.securityGroups(t, "space-2"); status != 200 || !slices.Contains(guids, "sg-1") {
		t.Fatalf("with CC down: %d %v", status, guids)
	}
	s.policies(t, "")
	if err := s.stop(t); err != nil {
		t.Fatalf("exit: %v", err)
	}
	if strings.Contains(s.out.String(), ccstub.ClientSecret) {
		t.Fatal("the log shows uaa_client_secret")
	}
}
