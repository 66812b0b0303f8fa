package config_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"netman/lib/mutualtls/mutualtlstest"
	"netman/policy-server/config"
)

// valid is a complete configuration; cases change one thing in it.
func valid() map[string]any {
	return map[string]any{
		"listen_host":          "0.0.0.0",
		"listen_port":          4002,
		"internal_listen_port": 4003,
		"health_check_port":    4004,
		"debug_server_port":    22222,
		"ca_cert_file":         "/var/vcap/jobs/policy-server/config/certs/ca.crt",
		"server_cert_file":     "/var/vcap/jobs/policy-server/config/certs/server.crt",
		"server_key_file":      "/var/vcap/jobs/policy-server/config/certs/server.key",
		"database": map[string]any{
			"type":                             "postgres",
			"connection_string":                "postgres://netman:s3cret@10.0.0.5:5432/netman?sslmode=disable",
			"max_open_connections":             30,
			"max_idle_connections":             5,
			"connections_max_lifetime_seconds": 600,
			"connect_timeout_seconds":          7,
		},
		"tag_length":              3,
		"request_timeout_seconds": 9,
		"log_level":               "debug",
	}
}

func encode(t *testing.T, m map[string]any) []byte {
	t.Helper()
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseValid(t *testing.T) {
	c, err := config.Parse(encode(t, valid()))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	want := config.Config{
		ListenHost: "0.0.0.0", ListenPort: 4002, InternalListenPort: 4003, HealthCheckPort: 4004,
		DebugServerPort: 22222,
		CACertFile:      "/var/vcap/jobs/policy-server/config/certs/ca.crt",
		ServerCertFile:  "/var/vcap/jobs/policy-server/config/certs/server.crt",
		ServerKeyFile:   "/var/vcap/jobs/policy-server/config/certs/server.key",
		Database: config.Database{
			Type: "postgres", ConnectionString: "postgres://netman:s3cret@10.0.0.5:5432/netman?sslmode=disable",
			MaxOpenConnections: 30, MaxIdleConnections: 5, ConnectionsMaxLifetimeSeconds: 600, ConnectTimeoutSeconds: 7,
		},
		TagLength: 3, RequestTimeoutSeconds: 9, LogLevel: "debug", MaxPolicyGroupIDs: 10000,
		External:        config.External{MaxPoliciesPerRequest: 10000},
		CloudController: config.Default().CloudController,
	}
	if *c != want {
		t.Fatalf("got %+v\nwant %+v", *c, want)
	}
}

// Port 0 binds any free port (tests start the binary so and read its log); several
// servers may each have 0.
func TestParseAcceptsPortZero(t *testing.T) {
	m := valid()
	for _, f := range []string{"listen_port", "internal_listen_port", "health_check_port", "debug_server_port"} {
		m[f] = 0
	}
	c, err := config.Parse(encode(t, m))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if c.InternalListenPort != 0 || c.HealthCheckPort != 0 {
		t.Fatalf("ports %d, %d: want 0", c.InternalListenPort, c.HealthCheckPort)
	}
}

func TestParseDefaults(t *testing.T) {
	c, err := config.Parse([]byte(`{
		"ca_cert_file": "ca", "server_cert_file": "crt", "server_key_file": "key",
		"database": {"connection_string": "host=db user=netman"}
	}`))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	d := config.Default()
	d.CACertFile, d.ServerCertFile, d.ServerKeyFile = "ca", "crt", "key"
	d.Database.ConnectionString = "host=db user=netman"
	if *c != d {
		t.Fatalf("got %+v\nwant %+v", *c, d)
	}
	if c.ListenPort != 4002 || c.InternalListenPort != 4003 || c.TagLength != 2 {
		t.Fatalf("defaults are not the spec's: %+v", *c)
	}
}

func TestParseRefuses(t *testing.T) {
	cases := []struct {
		name   string
		change func(m map[string]any)
		raw    string // used instead of the changed valid config when set
		field  string // the error must name it
	}{
		{name: "unknown top-level field", change: func(m map[string]any) { m["listen_prot"] = 1 }, field: "listen_prot"},
		{name: "unknown database field", change: func(m map[string]any) { m["database"].(map[string]any)["pasword"] = "x" }, field: "pasword"},
		{name: "wrong type", change: func(m map[string]any) { m["listen_port"] = "4002" }, field: "listen_port"},
		{name: "wrong nested type", change: func(m map[string]any) { m["database"].(map[string]any)["max_open_connections"] = "many" }, field: "database.max_open_connections"},
		{name: "negative port", change: func(m map[string]any) { m["internal_listen_port"] = -1 }, field: "internal_listen_port"},
		{name: "port too big", change: func(m map[string]any) { m["health_check_port"] = 70000 }, field: "health_check_port"},
		{name: "port used twice", change: func(m map[string]any) { m["debug_server_port"] = 4003 }, field: "debug_server_port"},
		{name: "bad listen host", change: func(m map[string]any) { m["listen_host"] = "not a host" }, field: "listen_host"},
		{name: "no CA file", change: func(m map[string]any) { delete(m, "ca_cert_file") }, field: "ca_cert_file"},
		{name: "no server key", change: func(m map[string]any) { m["server_key_file"] = "" }, field: "server_key_file"},
		{name: "database type", change: func(m map[string]any) { m["database"].(map[string]any)["type"] = "mysql" }, field: "database.type"},
		{name: "no connection string", change: func(m map[string]any) { delete(m["database"].(map[string]any), "connection_string") }, field: "database.connection_string"},
		{name: "garbage connection string", change: func(m map[string]any) { m["database"].(map[string]any)["connection_string"] = "nonsense" }, field: "database.connection_string"},
		{name: "no open connections", change: func(m map[string]any) { m["database"].(map[string]any)["max_open_connections"] = 0 }, field: "database.max_open_connections"},
		{name: "more idle than open", change: func(m map[string]any) { m["database"].(map[string]any)["max_idle_connections"] = 31 }, field: "database.max_idle_connections"},
		{name: "negative lifetime", change: func(m map[string]any) { m["database"].(map[string]any)["connections_max_lifetime_seconds"] = -1 }, field: "database.connections_max_lifetime_seconds"},
		{name: "zero connect timeout", change: func(m map[string]any) { m["database"].(map[string]any)["connect_timeout_seconds"] = 0 }, field: "database.connect_timeout_seconds"},
		{name: "tag length 0", change: func(m map[string]any) { m["tag_length"] = 0 }, field: "tag_length"},
		{name: "tag length 4", change: func(m map[string]any) { m["tag_length"] = 4 }, field: "tag_length"},
		{name: "zero request timeout", change: func(m map[string]any) { m["request_timeout_seconds"] = 0 }, field: "request_timeout_seconds"},
		{name: "log level", change: func(m map[string]any) { m["log_level"] = "chatty" }, field: "log_level"},
		{name: "id cap", change: func(m map[string]any) { m["max_policy_group_ids"] = 0 }, field: "max_policy_group_ids"},
		{name: "not JSON", raw: `{"listen_port": 4002`, field: "JSON"},
		{name: "two objects", raw: `{} {}`, field: "JSON"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			data := []byte(tc.raw)
			if tc.raw == "" {
				m := valid()
				tc.change(m)
				data = encode(t, m)
			}
			_, err := config.Parse(data)
			if err == nil {
				t.Fatalf("Parse accepted it")
			}
			if !strings.Contains(err.Error(), tc.field) {
				t.Fatalf("error %q does not name %q", err, tc.field)
			}
			if strings.Contains(err.Error(), "s3cret") {
				t.Fatalf("error %q repeats the database password", err)
			}
		})
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "policy-server.json")
	if err := os.WriteFile(path, encode(t, valid()), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := config.Load(path); err != nil {
		t.Fatalf("Load: %v", err)
	}
	missing := filepath.Join(dir, "missing.json")
	if _, err := config.Load(missing); err == nil || !strings.Contains(err.Error(), missing) {
		t.Fatalf("Load of a missing file: %v", err)
	}
}

func TestCheckFiles(t *testing.T) {
	dir := t.TempDir()
	f, _ := mutualtlstest.WriteFiles(t, dir)
	cases := []struct {
		name          string
		ca, cert, key string
		field         string // "" means the files are fine
	}{
		{"matching files", f.CACert, f.ServerCert, f.ServerKey, ""},
		{"missing CA", filepath.Join(dir, "nope"), f.ServerCert, f.ServerKey, "ca_cert_file"},
		{"missing cert", f.CACert, filepath.Join(dir, "nope"), f.ServerKey, "server_cert_file"},
		{"missing key", f.CACert, f.ServerCert, filepath.Join(dir, "nope"), "server_key_file"},
		{"key of another certificate", f.CACert, f.ServerCert, f.ClientKey, "server_key_file"},
		{"CA is not a certificate", f.ServerKey, f.ServerCert, f.ServerKey, "ca_cert_file"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := config.Default()
			c.CACertFile, c.ServerCertFile, c.ServerKeyFile = tc.ca, tc.cert, tc.key
			_, err := c.CheckFiles()
			if tc.field == "" {
				if err != nil {
					t.Fatalf("CheckFiles: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.field) {
				t.Fatalf("error %v does not name %s", err, tc.field)
			}
			if strings.Contains(err.Error(), "PRIVATE KEY") {
				t.Fatalf("error shows key material: %v", err)
			}
		})
	}
}

func TestDSNAppliesConnectTimeout(t *testing.T) {
	cases := []struct{ in, want string }{
		{"postgres://u:p@h:5432/db?sslmode=disable", "postgres://u:p@h:5432/db?connect_timeout=7&sslmode=disable"},
		{"host=h user=u", "host=h user=u connect_timeout=7"},
		{"postgres://h/db?connect_timeout=3", "postgres://h/db?connect_timeout=3"},
	}
	for _, tc := range cases {
		d := config.Database{ConnectionString: tc.in, ConnectTimeoutSeconds: 7}
		if got := d.DSN(); got != tc.want {
			t.Errorf("DSN(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
