package boshrelease

import (
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	agentconfig "netman/policy-agent/config"
	serverconfig "netman/policy-server/config"
)

// jsonFields lists the JSON field names of a config struct, nested ones as "a.b", with
// embedded structs flattened as encoding/json does.
func jsonFields(t reflect.Type, prefix string) []string {
	var out []string
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if f.Anonymous && f.Type.Kind() == reflect.Struct {
			out = append(out, jsonFields(f.Type, prefix)...)
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "" || name == "-" {
			continue
		}
		if f.Type.Kind() == reflect.Struct {
			out = append(out, jsonFields(f.Type, prefix+name+".")...)
			continue
		}
		out = append(out, prefix+name)
	}
	return out
}

func hasField(cfg map[string]any, dotted string) bool {
	var node any = cfg
	for _, k := range strings.Split(dotted, ".") {
		m, ok := node.(map[string]any)
		if !ok {
			return false
		}
		if node, ok = m[k]; !ok {
			return false
		}
	}
	return true
}

// TestTemplatesCoverConfigFields keeps the job templates in step with the programs: with
// every optional property set, the rendered config has every field the program's config
// type reads, so a field added to a program without a job property shows up here.
func TestTemplatesCoverConfigFields(t *testing.T) {
	t.Run("policy-server", func(t *testing.T) {
		p := with(with(with(policyServerProps(t), externalAPIProps(t)), ccProps(t)), map[string]any{
			"policy-server.uaa_public_key": "-----BEGIN PUBLIC KEY-----\n-----END PUBLIC KEY-----",
			"policy-server.jwt_audience":   "network-policy",
			"database.require_ssl":         true,
		})
		cfg := readJSON(t, filepath.Join(mustRender(t, "policy-server", props(p), nil), "config", "policy-server.json"))
		fields := jsonFields(reflect.TypeOf(serverconfig.Config{}), "")
		if len(fields) < 20 {
			t.Fatalf("found only %d config fields: %v", len(fields), fields)
		}
		for _, f := range fields {
			if !hasField(cfg, f) {
				t.Errorf("policy-server's config field %s has no job property", f)
			}
		}
	})
	t.Run("policy-agent", func(t *testing.T) {
		// The egress settings come from the netman-cni link (dynamic security groups).
		cni := map[string]any{"netman-cni": map[string]any{"properties": props(map[string]any{
			"delegate": "bridge", "enforce_egress": true, "overlay_network": "", "bridge.subnet": "10.255.0.0/16",
			"flannel.subnet_file": "/var/vcap/data/flannel/subnet.env", "deny_networks.always": []any{},
			"deny_networks.running": []any{}, "deny_networks.staging": []any{}, "iptables_logging": false,
			"iptables_denied_logs_per_sec": 1, "iptables_accepted_logs_per_sec": 100,
		})}}
		cfg := readJSON(t, filepath.Join(mustRender(t, "policy-agent", props(policyAgentProps(t)), cni), "config", "policy-agent.json"))
		fields := jsonFields(reflect.TypeOf(agentconfig.Config{}), "")
		if len(fields) < 9 {
			t.Fatalf("found only %d config fields: %v", len(fields), fields)
		}
		for _, f := range fields {
			if !hasField(cfg, f) {
				t.Errorf("policy-agent's config field %s has no job property", f)
			}
		}
	})
}
