package config_test

import (
	"strings"
	"testing"
	"time"

	"netman/policy-server/config"
)

func withCC(m map[string]any) map[string]any {
	m["uaa_url"] = "https://uaa.service.cf.internal:8443"
	m["cc_url"] = "https://cloud-controller-ng.service.cf.internal:9024"
	m["cc_ca_cert_file"] = "/var/vcap/jobs/policy-server/config/certs/cc_ca.crt"
	m["cc_internal_url"] = "https://cloud-controller-ng.service.cf.internal:9023"
	m["cc_internal_client_cert_file"] = "/var/vcap/jobs/policy-server/config/certs/cc_internal_client.crt"
	m["cc_internal_client_key_file"] = "/var/vcap/jobs/policy-server/config/certs/cc_internal_client.key"
	m["uaa_client_secret"] = "s3cret"
	return m
}

func TestCloudControllerFields(t *testing.T) {
	m := withCC(valid())
	m["enable_space_developer_self_service"] = true
	m["max_policies_per_app_source"] = 20
	m["cleanup_interval_seconds"] = 600
	m["asg_poll_interval_seconds"] = 30
	c, err := config.Parse(encode(t, m))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	cc := c.CloudController
	if !cc.Enabled() || !cc.SyncsASGs() || !cc.EnableSpaceDeveloperSelfService || cc.MaxPoliciesPerAppSource != 20 ||
		cc.CleanupInterval() != 10*time.Minute || cc.ASGPollInterval() != 30*time.Second || cc.UAAClient != "network-policy" ||
		cc.CCAppRequestChunkSize != 100 {
		t.Fatalf("got %+v", cc)
	}
	if c, _ := config.Parse(encode(t, valid())); c.CloudController.Enabled() || c.CloudController.SyncsASGs() {
		t.Fatal("Cloud Controller integration on without cc_url")
	}
}

func TestCloudControllerFieldsRefused(t *testing.T) {
	cases := []struct {
		name  string
		cc    bool
		set   map[string]any
		field string
	}{
		{"cc_url not https", true, map[string]any{"cc_url": "http://cc:9022"}, "cc_url"},
		{"no secret", true, map[string]any{"uaa_client_secret": ""}, "uaa_client_secret"},
		{"no uaa_url", true, map[string]any{"uaa_url": ""}, "uaa_url"},
		{"internal url without client cert", true, map[string]any{"cc_internal_client_key_file": ""}, "cc_internal_client_cert_file"},
		{"asg sync without internal url", true, map[string]any{"cc_internal_url": ""}, "asg_sync_enabled"},
		{"chunk size too big", true, map[string]any{"cc_app_request_chunk_size": 5001}, "cc_app_request_chunk_size"},
		{"quota zero", true, map[string]any{"max_policies_per_app_source": 0}, "max_policies_per_app_source"},
		{"cleanup too often", true, map[string]any{"cleanup_interval_seconds": 5}, "cleanup_interval_seconds"},
		{"pool too small", true, map[string]any{"database": map[string]any{"type": "postgres", "connection_string": "postgres://h/db", "max_open_connections": 2, "max_idle_connections": 1}}, "database.max_open_connections"},
		{"self service without cc", false, map[string]any{"enable_space_developer_self_service": true}, "enable_space_developer_self_service"},
		{"secret without cc", false, map[string]any{"uaa_client_secret": "x"}, "uaa_client_secret"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := valid()
			if tc.cc {
				m = withCC(m)
			}
			for k, v := range tc.set {
				m[k] = v
			}
			_, err := config.Parse(encode(t, m))
			if err == nil || !strings.Contains(err.Error(), `"`+tc.field+`"`) {
				t.Fatalf("err = %v, want one naming %q", err, tc.field)
			}
			if strings.Contains(err.Error(), "s3cret") {
				t.Errorf("error shows the secret: %v", err)
			}
		})
	}
}
