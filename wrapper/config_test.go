package wrapper

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"

	"netman/lib/mtu"
)

// specExample is the spec's example configuration as the runtime sends it.
const specExample = `{
  "name": "cni-wrapper",
  "type": "wrapper",
  "cniVersion": "0.2.0",
  "datastore": "/path/to/datastore",
  "delegate": {
    "name": "cni-flannel",
    "type": "flannel",
    "subnetFile": "/var/vcap/data/flannel/subnet.env",
    "dataDir": "/var/vcap/data/flannel/data",
    "delegate": {"bridge": "cni-flannel0", "isDefaultGateway": true, "ipMasq": false}
  },
  "metadata": {
    "app_id": "d5bbc5ed-886a-44e6-945d-67df1013fa16",
    "org_id": "2ac41bbf-8eae-4f28-abab-51ca38dea3e4",
    "policy_group_id": "d5bbc5ed-886a-44e6-945d-67df1013fa16",
    "space_id": "4246c57d-aefc-49cc-afe0-5f734e2656e8",
    "instance_index": 12345678901234567890
  }
}`

func TestLoadConfigSpecExample(t *testing.T) {
	c, err := LoadConfig([]byte(specExample))
	if err != nil {
		t.Fatal(err)
	}
	if c.Name != "cni-wrapper" || c.CNIVersion != "0.2.0" || c.Datastore != "/path/to/datastore" || c.DelegateType() != "flannel" {
		t.Fatalf("unexpected config %+v", c)
	}
	if c.Metadata["policy_group_id"] != "d5bbc5ed-886a-44e6-945d-67df1013fa16" {
		t.Fatalf("metadata %v", c.Metadata)
	}
	b, _ := json.Marshal(c.Metadata["instance_index"])
	if string(b) != "12345678901234567890" {
		t.Fatalf("a large number in metadata became %s", b)
	}
}

func TestLoadConfigMetadataSources(t *testing.T) {
	for _, tc := range []struct {
		name, conf string
		want       map[string]any
	}{
		{"static file without runtime data", `{"name":"n","type":"wrapper","cniVersion":"1.0.0","datastore":"/d","delegate":{"type":"bridge"}}`, nil},
		{"network.properties", `{"name":"n","datastore":"/d","delegate":{"type":"bridge"},"network":{"properties":{"app_id":"a","ports":"8080"}}}`,
			map[string]any{"app_id": "a", "ports": "8080"}},
		{"metadata wins", `{"name":"n","datastore":"/d","delegate":{"type":"bridge"},"metadata":{"app_id":"m"},"network":{"properties":{"app_id":"p"}}}`,
			map[string]any{"app_id": "m"}},
	} {
		c, err := LoadConfig([]byte(tc.conf))
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if !reflect.DeepEqual(c.Metadata, tc.want) {
			t.Errorf("%s: metadata %v, want %v", tc.name, c.Metadata, tc.want)
		}
	}
}

func TestLoadConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name, conf string
		code       uint
	}{
		{"not json", `{"name":`, types.ErrDecodingFailure},
		{"wrong field type", `{"name":"n","datastore":"/d","delegate":{"type":"bridge"},"mtu":"1450"}`, types.ErrDecodingFailure},
		{"missing datastore", `{"name":"n","delegate":{"type":"bridge"}}`, types.ErrInvalidNetworkConfig},
		{"missing delegate", `{"name":"n","datastore":"/d"}`, types.ErrInvalidNetworkConfig},
		{"delegate without type", `{"name":"n","datastore":"/d","delegate":{"bridge":"b"}}`, types.ErrInvalidNetworkConfig},
		{"delegate is wrapper", `{"name":"n","datastore":"/d","delegate":{"type":"wrapper"}}`, types.ErrInvalidNetworkConfig},
		{"flannel inner delegate not an object", `{"name":"n","datastore":"/d","delegate":{"type":"flannel","delegate":"bridge"}}`, types.ErrInvalidNetworkConfig},
		{"mtu too small", `{"name":"n","datastore":"/d","delegate":{"type":"bridge"},"mtu":575}`, types.ErrInvalidNetworkConfig},
		{"negative mtu", `{"name":"n","datastore":"/d","delegate":{"type":"bridge"},"mtu":-1500}`, types.ErrInvalidNetworkConfig},
		{"negative overhead", `{"name":"n","datastore":"/d","delegate":{"type":"bridge"},"encapsulation_overhead":-1}`, types.ErrInvalidNetworkConfig},
		{"both underlay ip and interface", `{"name":"n","datastore":"/d","delegate":{"type":"bridge"},"underlay_ip":"10.0.0.1","underlay_interface":"eth0"}`, types.ErrInvalidNetworkConfig},
		{"operator's bridge mtu too small", `{"name":"n","datastore":"/d","delegate":{"type":"bridge","mtu":575}}`, types.ErrInvalidNetworkConfig},
		{"operator's flannel inner mtu negative", `{"name":"n","datastore":"/d","delegate":{"type":"flannel","delegate":{"mtu":-1500}}}`, types.ErrInvalidNetworkConfig},
		{"operator's bridge mtu not a number", `{"name":"n","datastore":"/d","delegate":{"type":"bridge","mtu":"1500"}}`, types.ErrInvalidNetworkConfig},
		{"bad underlay ip", `{"name":"n","datastore":"/d","delegate":{"type":"bridge"},"underlay_ip":"eth0"}`, types.ErrInvalidNetworkConfig},
		{"force poll address without port", `{"name":"n","datastore":"/d","delegate":{"type":"bridge"},"policy_agent_force_poll_address":"127.0.0.1"}`, types.ErrInvalidNetworkConfig},
		{"metadata over 64 KiB", `{"name":"n","datastore":"/d","delegate":{"type":"bridge"},"metadata":{"k":"` + strings.Repeat("x", 64<<10) + `"}}`, types.ErrInvalidNetworkConfig},
	} {
		_, err := LoadConfig([]byte(tc.conf))
		var e *types.Error
		if !errors.As(err, &e) || e.Code != tc.code || e.Msg == "" {
			t.Errorf("%s: got %v, want a CNI error with code %d", tc.name, err, tc.code)
		}
	}
}

// DEL checks what DEL uses and nothing else.
func TestLoadDelConfig(t *testing.T) {
	for _, conf := range []string{
		`{"name":"n","datastore":"/d","delegate":{"type":"bridge"},"mtu":575}`,
		`{"name":"n","datastore":"/d","delegate":{"type":"bridge","mtu":100},"encapsulation_overhead":-1}`,
		`{"name":"n","datastore":"/d","delegate":{"type":"bridge"},"underlay_ip":"eth0","underlay_interface":"eth0"}`,
		`{"name":"n","datastore":"/d","delegate":{"type":"bridge"},"policy_agent_force_poll_address":"nonsense"}`,
		`{"name":"n","datastore":"/d","delegate":{"type":"bridge"},"metadata":{"k":"` + strings.Repeat("x", 64<<10) + `"}}`,
	} {
		if _, err := LoadDelConfig([]byte(conf)); err != nil {
			t.Errorf("LoadDelConfig(%.90s): %v", conf, err)
		}
		if _, err := LoadConfig([]byte(conf)); err == nil {
			t.Errorf("LoadConfig(%.90s) accepted an ADD-only setting the case is about", conf)
		}
	}
	for _, conf := range []string{
		`{"name":"n","delegate":{"type":"bridge"}}`,
		`{"name":"n","datastore":"/d","delegate":{"type":"wrapper"}}`,
		`{"name":"n","datastore":"/d"}`,
		`{"name":`,
	} {
		if _, err := LoadDelConfig([]byte(conf)); err == nil {
			t.Errorf("LoadDelConfig(%s) accepted a config DEL cannot use", conf)
		}
	}
}

func TestCommonVersion(t *testing.T) {
	for _, tc := range []struct {
		want      string
		supported []string
		got       string
		ok        bool
	}{
		{"1.0.0", []string{"0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0"}, "0.4.0", true}, // flannel v0.9.1
		{"1.1.0", []string{"0.3.1", "1.0.0", "0.4.0"}, "1.0.0", true},
		{"0.3.1", []string{"0.3.1", "1.1.0"}, "0.3.1", true},
		{"0.2.0", []string{"1.1.0", "0.4.0", "1.0.0"}, "0.4.0", true}, // nothing older: the oldest
		{"1.0.0", []string{"junk"}, "", false},
		{"1.0.0", nil, "", false},
	} {
		got, ok := commonVersion(tc.want, tc.supported)
		if got != tc.got || ok != tc.ok {
			t.Errorf("commonVersion(%s, %v) = %q, %v; want %q, %v", tc.want, tc.supported, got, ok, tc.got, tc.ok)
		}
	}
}

func fixedMTU(m int) func(mtu.Underlay) (int, error) {
	return func(mtu.Underlay) (int, error) { return m, nil }
}

func noDetection(t *testing.T) func(mtu.Underlay) (int, error) {
	return func(mtu.Underlay) (int, error) {
		t.Error("MTU detection ran although the MTU was given")
		return 0, errors.New("unexpected")
	}
}

func TestDelegateConfMTU(t *testing.T) {
	for _, tc := range []struct {
		name     string
		conf     string
		hostMTU  func(mtu.Underlay) (int, error)
		wantPath []string // where the MTU must be in the delegate config
		want     float64
	}{
		{"bridge gets host mtu", `{"delegate":{"type":"bridge"}}`, fixedMTU(9000), []string{"mtu"}, 9000},
		{"flannel inner delegate gets host mtu minus 50", `{"delegate":{"type":"flannel","delegate":{"bridge":"b"}}}`, fixedMTU(1460), []string{"delegate", "mtu"}, 1410},
		{"flannel without inner delegate", `{"delegate":{"type":"flannel"}}`, fixedMTU(1500), []string{"delegate", "mtu"}, 1450},
		{"overhead override", `{"encapsulation_overhead":100,"delegate":{"type":"bridge"}}`, fixedMTU(1500), []string{"mtu"}, 1400},
		{"explicit mtu wins", `{"mtu":1300,"delegate":{"type":"flannel"}}`, noDetection(t), []string{"delegate", "mtu"}, 1300},
		{"operator's bridge mtu kept", `{"delegate":{"type":"bridge","mtu":1200}}`, noDetection(t), []string{"mtu"}, 1200},
		{"operator's flannel inner mtu kept", `{"mtu":1300,"delegate":{"type":"flannel","delegate":{"mtu":1234}}}`, noDetection(t), []string{"delegate", "mtu"}, 1234},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := mustConfig(t, tc.conf)
			before, _ := json.Marshal(c.Delegate)
			b, err := c.delegateConf(delegateOptions{mtu: true}, tc.hostMTU)
			if err != nil {
				t.Fatal(err)
			}
			var d map[string]any
			if err := json.Unmarshal(b, &d); err != nil {
				t.Fatal(err)
			}
			var v any = d
			for _, k := range tc.wantPath {
				v = v.(map[string]any)[k]
			}
			if v != tc.want {
				t.Fatalf("mtu at %v = %v, want %v (conf %s)", tc.wantPath, v, tc.want, b)
			}
			if after, _ := json.Marshal(c.Delegate); string(after) != string(before) {
				t.Fatalf("rendering changed the config's delegate: %s -> %s", before, after)
			}
		})
	}
}

func TestDelegateConfMTUErrors(t *testing.T) {
	for _, tc := range []struct {
		name    string
		hostMTU func(mtu.Underlay) (int, error)
	}{
		{"detection fails", func(mtu.Underlay) (int, error) { return 0, errors.New("no default route") }},
		{"too small after overhead", fixedMTU(600)},
	} {
		c := mustConfig(t, `{"delegate":{"type":"flannel"}}`)
		_, err := c.delegateConf(delegateOptions{mtu: true}, tc.hostMTU)
		var e *types.Error
		if !errors.As(err, &e) || e.Code != ErrMTU {
			t.Errorf("%s: %v, want code %d", tc.name, err, ErrMTU)
		}
	}
}

func TestDelegateConfCarriesParentFields(t *testing.T) {
	c := mustConfig(t, `{"cniVersion":"1.1.0","delegate":{"type":"bridge","cniVersion":"0.3.1","bridge":"b0"},
		"runtimeConfig":{"portMappings":[{"hostPort":8080,"containerPort":80}]},
		"prevResult":{"cniVersion":"1.1.0","ips":[]},
		"cni.dev/valid-attachments":[{"containerID":"c1","ifname":"eth0"}]}`)
	b, err := c.delegateConf(delegateOptions{prevResult: true, validAttachments: true}, noDetection(t))
	if err != nil {
		t.Fatal(err)
	}
	var d map[string]any
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatal(err)
	}
	if d["name"] != "n" || d["cniVersion"] != "1.1.0" || d["bridge"] != "b0" || d["runtimeConfig"] == nil ||
		d["prevResult"] == nil || d["cni.dev/valid-attachments"] == nil || d["mtu"] != nil {
		t.Fatalf("delegate config %s", b)
	}
	named := mustConfig(t, `{"delegate":{"type":"bridge","name":"own"}}`)
	b, _ = named.delegateConf(delegateOptions{}, noDetection(t))
	if err := json.Unmarshal(b, &d); err != nil || d["name"] != "own" {
		t.Fatalf("the delegate's own name was not kept: %s", b)
	}
}

func mustConfig(t *testing.T, extra string) *Config {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(extra), &m); err != nil {
		t.Fatal(err)
	}
	base := map[string]any{"name": "n", "type": "wrapper", "cniVersion": "0.4.0", "datastore": "/d"}
	for k, v := range m {
		base[k] = v
	}
	b, _ := json.Marshal(base)
	c, err := LoadConfig(b)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
