package config_test

import (
	"strings"
	"testing"

	"netman/policy-server/config"
)

func TestExternalFields(t *testing.T) {
	m := valid()
	m["uaa_url"] = "https://uaa.service.cf.internal:8443"
	m["uaa_ca_cert_file"] = "/var/vcap/jobs/policy-server/config/certs/uaa_ca.crt"
	m["jwt_issuer"] = "https://uaa.example.com/oauth/token"
	m["jwt_audience"] = "network"
	m["external_server_cert_file"] = "ext.crt"
	m["external_server_key_file"] = "ext.key"
	m["max_policies_per_request"] = 500
	c, err := config.Parse(encode(t, m))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	want := config.External{
		UAAURL: "https://uaa.service.cf.internal:8443", UAACACertFile: "/var/vcap/jobs/policy-server/config/certs/uaa_ca.crt",
		JWTIssuer: "https://uaa.example.com/oauth/token", JWTAudience: "network",
		ExternalCertFile: "ext.crt", ExternalKeyFile: "ext.key", MaxPoliciesPerRequest: 500,
	}
	if c.External != want || !c.External.Enabled() {
		t.Fatalf("got %+v, want %+v", c.External, want)
	}
	if c, _ := config.Parse(encode(t, valid())); c.External.Enabled() {
		t.Fatal("external API enabled without uaa_url or uaa_key_file")
	}
}

func TestExternalFieldsRefused(t *testing.T) {
	cases := []struct {
		name  string
		set   map[string]any
		field string
	}{
		{"http uaa_url", map[string]any{"uaa_url": "http://uaa:8080"}, "uaa_url"},
		{"uaa_url without host", map[string]any{"uaa_url": "https://"}, "uaa_url"},
		{"CA without uaa_url", map[string]any{"uaa_key_file": "k.pem", "uaa_ca_cert_file": "ca.pem"}, "uaa_ca_cert_file"},
		{"cert without key", map[string]any{"external_server_cert_file": "a.crt"}, "external_server_cert_file"},
		{"key without cert", map[string]any{"external_server_key_file": "a.key"}, "external_server_cert_file"},
		{"zero max policies", map[string]any{"max_policies_per_request": 0}, "max_policies_per_request"},
		{"typo", map[string]any{"uaa_uri": "https://uaa"}, "uaa_uri"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := valid()
			for k, v := range tc.set {
				m[k] = v
			}
			_, err := config.Parse(encode(t, m))
			if err == nil || !strings.Contains(err.Error(), `"`+tc.field+`"`) {
				t.Fatalf("err = %v, want it to name %q", err, tc.field)
			}
		})
	}
}
