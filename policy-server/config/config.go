// Package config reads and checks the policy server's JSON configuration file.
//
// Field names are snake_case, as in Cloud Foundry's job properties. Unknown fields are
// refused so that a typo in a BOSH template fails the deploy instead of silently
// falling back to a default.
package config

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strings"
	"time"

	"netman/lib/jsonconfig"
	"netman/lib/mutualtls"
)

// Config is the whole configuration file. Fields a later API version needs are added
// here with their defaults in Default and their checks in Validate.
type Config struct {
	// A port of 0 binds any free port, for tests: the "listening" log line of each
	// server says which.
	ListenHost         string `json:"listen_host"`
	ListenPort         int    `json:"listen_port"`
	InternalListenPort int    `json:"internal_listen_port"`
	HealthCheckPort    int    `json:"health_check_port"`
	DebugServerPort    int    `json:"debug_server_port"`

	CACertFile     string `json:"ca_cert_file"`
	ServerCertFile string `json:"server_cert_file"`
	ServerKeyFile  string `json:"server_key_file"`

	Database Database `json:"database"`

	TagLength             int    `json:"tag_length"`
	RequestTimeoutSeconds int    `json:"request_timeout_seconds"`
	LogLevel              string `json:"log_level"`

	// MaxPolicyGroupIDs caps the ids one internal API request may ask for.
	MaxPolicyGroupIDs int `json:"max_policy_group_ids"`

	// External's fields sit at the top level of the file (uaa_url, ...), as in CF.
	External
	// CloudController's too (cc_url, ...), as in cf-networking.
	CloudController
}

// External configures the external API on listen_port: who may call it (UAA bearer
// tokens) and whether it speaks TLS. With neither uaa_url nor uaa_key_file set, the
// external API is not served: nothing could authenticate its callers.
type External struct {
	// UAAURL is UAA's https base URL; signing keys come from UAAURL + "/token_keys".
	UAAURL string `json:"uaa_url"`
	// UAACACertFile is the CA of UAA's certificate; empty: the system roots.
	UAACACertFile string `json:"uaa_ca_cert_file"`
	// UAAKeyFile is a PEM RSA public key that signs tokens (instead of, or as a
	// fallback to, uaa_url).
	UAAKeyFile string `json:"uaa_key_file"`
	// JWTIssuer and JWTAudience, when set, must match the token's iss and aud.
	JWTIssuer   string `json:"jwt_issuer"`
	JWTAudience string `json:"jwt_audience"`
	// ExternalCertFile and ExternalKeyFile, both set, make the external API HTTPS.
	ExternalCertFile string `json:"external_server_cert_file"`
	ExternalKeyFile  string `json:"external_server_key_file"`
	// MaxPoliciesPerRequest caps the policies of one create or delete.
	MaxPoliciesPerRequest int `json:"max_policies_per_request"`
}

// Enabled reports whether the external API is served.
func (e External) Enabled() bool { return e.UAAURL != "" || e.UAAKeyFile != "" }

func (e External) validate(bad func(field, format string, args ...any)) {
	if e.UAAURL != "" {
		if u, err := url.Parse(e.UAAURL); err != nil || u.Scheme != "https" || u.Host == "" {
			bad("uaa_url", "%q is not an https:// URL", e.UAAURL)
		}
	} else if e.UAACACertFile != "" {
		bad("uaa_ca_cert_file", "is set but uaa_url is not")
	}
	if (e.ExternalCertFile == "") != (e.ExternalKeyFile == "") {
		bad("external_server_cert_file", "external_server_cert_file and external_server_key_file must be set together")
	}
	if e.MaxPoliciesPerRequest < 1 {
		bad("max_policies_per_request", "%d must be at least 1", e.MaxPoliciesPerRequest)
	}
}

// Database says where the policies are kept.
type Database struct {
	Type                          string `json:"type"`
	ConnectionString              string `json:"connection_string"`
	MaxOpenConnections            int    `json:"max_open_connections"`
	MaxIdleConnections            int    `json:"max_idle_connections"`
	ConnectionsMaxLifetimeSeconds int    `json:"connections_max_lifetime_seconds"`
	ConnectTimeoutSeconds         int    `json:"connect_timeout_seconds"`
}

// Default returns the configuration used for every field a file leaves out.
func Default() Config {
	return Config{
		ListenHost:         "0.0.0.0",
		ListenPort:         4002,
		InternalListenPort: 4003,
		HealthCheckPort:    4004,
		DebugServerPort:    22222,
		Database: Database{
			Type:                          "postgres",
			MaxOpenConnections:            20,
			MaxIdleConnections:            10,
			ConnectionsMaxLifetimeSeconds: 3600,
			ConnectTimeoutSeconds:         10,
		},
		TagLength:             2,
		RequestTimeoutSeconds: 5,
		LogLevel:              "info",
		MaxPolicyGroupIDs:     10000,
		External:              External{MaxPoliciesPerRequest: 10000},
		CloudController:       defaultCloudController(),
	}
}

// Load reads, parses and validates the file at path.
func Load(path string) (*Config, error) {
	return jsonconfig.Load(path, Default(), (*Config).Validate)
}

// Parse decodes data over the defaults and validates the result.
func Parse(data []byte) (*Config, error) {
	return jsonconfig.Parse(data, Default(), (*Config).Validate)
}

// Validate checks every value. Each error names the field it is about.
func (c *Config) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("field %q: %s", field, fmt.Sprintf(format, args...)))
	}
	if c.ListenHost == "" {
		bad("listen_host", "must not be empty")
	} else if net.ParseIP(c.ListenHost) == nil && !validHostname(c.ListenHost) {
		bad("listen_host", "%q is neither an IP address nor a host name", c.ListenHost)
	}
	ports := []struct {
		field string
		port  int
	}{
		{"listen_port", c.ListenPort},
		{"internal_listen_port", c.InternalListenPort},
		{"health_check_port", c.HealthCheckPort},
		{"debug_server_port", c.DebugServerPort},
	}
	seen := map[int]string{}
	for _, p := range ports {
		if p.port < 0 || p.port > 65535 {
			bad(p.field, "%d is not a port (1-65535, or 0 for any free port)", p.port)
			continue
		}
		if p.port == 0 {
			continue // each gets a port of its own; the log says which
		}
		if other, dup := seen[p.port]; dup {
			bad(p.field, "port %d is already used by %q", p.port, other)
		}
		seen[p.port] = p.field
	}
	for _, f := range []struct{ field, path string }{
		{"ca_cert_file", c.CACertFile},
		{"server_cert_file", c.ServerCertFile},
		{"server_key_file", c.ServerKeyFile},
	} {
		if f.path == "" {
			bad(f.field, "must be set")
		}
	}

	d := c.Database
	if d.Type != "postgres" {
		bad("database.type", "%q is not supported (only \"postgres\")", d.Type)
	}
	if d.ConnectionString == "" {
		bad("database.connection_string", "must be set")
	} else if err := checkConnectionString(d.ConnectionString); err != nil {
		bad("database.connection_string", "%v", err)
	} else if err := checkDriverParams(d.DSN()); err != nil {
		bad("database.connection_string", "%v", err)
	}
	if d.MaxOpenConnections < 1 {
		bad("database.max_open_connections", "%d must be at least 1", d.MaxOpenConnections)
	}
	if d.MaxIdleConnections < 0 {
		bad("database.max_idle_connections", "%d must not be negative", d.MaxIdleConnections)
	} else if d.MaxOpenConnections >= 1 && d.MaxIdleConnections > d.MaxOpenConnections {
		bad("database.max_idle_connections", "%d exceeds max_open_connections %d", d.MaxIdleConnections, d.MaxOpenConnections)
	}
	if d.ConnectionsMaxLifetimeSeconds < 0 {
		bad("database.connections_max_lifetime_seconds", "%d must not be negative (0: no limit)", d.ConnectionsMaxLifetimeSeconds)
	}
	if d.ConnectTimeoutSeconds < 1 {
		bad("database.connect_timeout_seconds", "%d must be at least 1", d.ConnectTimeoutSeconds)
	}

	if c.TagLength < 1 || c.TagLength > 3 {
		bad("tag_length", "%d must be 1, 2 or 3 (bytes)", c.TagLength)
	}
	if c.RequestTimeoutSeconds < 1 || c.RequestTimeoutSeconds > 300 {
		bad("request_timeout_seconds", "%d must be between 1 and 300", c.RequestTimeoutSeconds)
	}
	if _, err := ParseLogLevel(c.LogLevel); err != nil {
		bad("log_level", "%v", err)
	}
	if c.MaxPolicyGroupIDs < 1 {
		bad("max_policy_group_ids", "%d must be at least 1", c.MaxPolicyGroupIDs)
	}
	c.External.validate(bad)
	c.CloudController.validate(c.UAAURL, c.Database.MaxOpenConnections, bad)
	return errors.Join(errs...)
}

// CheckFiles loads the certificate files, so a deploy fails on a missing, unreadable
// or mismatched file before the server starts.
func (c *Config) CheckFiles() (*tls.Config, error) {
	if _, err := os.Stat(c.CACertFile); err != nil {
		return nil, fmt.Errorf("field \"ca_cert_file\": %w", err)
	}
	if _, err := os.Stat(c.ServerCertFile); err != nil {
		return nil, fmt.Errorf("field \"server_cert_file\": %w", err)
	}
	if _, err := os.Stat(c.ServerKeyFile); err != nil {
		return nil, fmt.Errorf("field \"server_key_file\": %w", err)
	}
	if err := c.CloudController.checkFiles(); err != nil {
		return nil, err
	}
	tlsConfig, err := mutualtls.ServerConfig(c.ServerCertFile, c.ServerKeyFile, c.CACertFile)
	if err != nil {
		return nil, fmt.Errorf("fields \"server_cert_file\", \"server_key_file\", \"ca_cert_file\": %w", err)
	}
	return tlsConfig, nil
}

// RequestTimeout is request_timeout_seconds as a duration.
func (c *Config) RequestTimeout() time.Duration {
	return time.Duration(c.RequestTimeoutSeconds) * time.Second
}

// ParseLogLevel maps log_level ("debug", "info", "warn", "error") to a slog level.
func ParseLogLevel(s string) (slog.Level, error) {
	switch strings.ToLower(s) {
	case "debug":
		return slog.LevelDebug, nil
	case "info":
		return slog.LevelInfo, nil
	case "warn", "warning":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("%q is not one of debug, info, warn, error", s)
}

func validHostname(h string) bool {
	if len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 {
			return false
		}
		for _, r := range label {
			if !(r == '-' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
				return false
			}
		}
	}
	return true
}

// checkConnectionString accepts the URL and the key=value forms lib/pq understands.
// Its errors never repeat the string: it may hold a password.
func checkConnectionString(s string) error {
	if strings.HasPrefix(s, "postgres://") || strings.HasPrefix(s, "postgresql://") {
		u, err := url.Parse(s)
		if err != nil {
			return errors.New("is not a valid postgres:// URL")
		}
		if u.Host == "" {
			return errors.New("names no host")
		}
		return nil
	}
	if !strings.Contains(s, "=") {
		return errors.New("is neither a postgres:// URL nor key=value pairs")
	}
	return nil
}

// DSN is connection_string with connect_timeout_seconds applied, unless the string
// already sets connect_timeout itself.
func (d Database) DSN() string {
	s := d.ConnectionString
	if strings.Contains(s, "connect_timeout") {
		return s
	}
	if strings.HasPrefix(s, "postgres://") || strings.HasPrefix(s, "postgresql://") {
		u, err := url.Parse(s)
		if err != nil {
			return s
		}
		q := u.Query()
		q.Set("connect_timeout", fmt.Sprint(d.ConnectTimeoutSeconds))
		u.RawQuery = q.Encode()
		return u.String()
	}
	return fmt.Sprintf("%s connect_timeout=%d", s, d.ConnectTimeoutSeconds)
}
