package external

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"

	"netman/policy-server/api"
	"netman/policy-server/auth"
	"netman/policy-server/config"
)

// Routes are what the policy server serves from this package.
type Routes struct {
	// Internal are the v1 internal routes, served whatever the external settings.
	Internal []api.Route
	// External are the external routes; nil when neither uaa_url nor uaa_key_file
	// is configured, because no caller could be authenticated.
	External []api.Route
	// ExternalTLS is set when the external API serves HTTPS.
	ExternalTLS *tls.Config
}

// Configure builds the routes from the configuration. Bad key, CA or certificate files
// fail here, at start.
func Configure(ctx context.Context, cfg *config.Config, st Store, logger *slog.Logger) (Routes, error) {
	var verifier *auth.Verifier
	e := cfg.External
	if e.Enabled() {
		v, err := auth.New(auth.Options{
			UAAURL: e.UAAURL, UAACAFile: e.UAACACertFile, KeyFile: e.UAAKeyFile,
			Issuer: e.JWTIssuer, Audience: e.JWTAudience,
			Logger: logger.With("component", "auth"),
		})
		if err != nil {
			return Routes{}, fmt.Errorf("external API: %w", err)
		}
		v.Prefetch(ctx)
		verifier = v
	}
	a, err := New(Options{Store: st, Verifier: verifier, MaxPolicies: e.MaxPoliciesPerRequest, MaxIDs: cfg.MaxPolicyGroupIDs})
	if err != nil {
		return Routes{}, err
	}
	r := Routes{Internal: a.InternalRoutes(), External: a.ExternalRoutes()}
	if r.External == nil {
		logger.Warn("external API disabled: set uaa_url or uaa_key_file to serve it on listen_port")
		return r, nil
	}
	if e.ExternalCertFile != "" {
		cert, err := tls.LoadX509KeyPair(e.ExternalCertFile, e.ExternalKeyFile)
		if err != nil {
			return Routes{}, fmt.Errorf("fields \"external_server_cert_file\", \"external_server_key_file\": %w", err)
		}
		r.ExternalTLS = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
	}
	return r, nil
}
