package externalapi

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"

	"netman/lib/httpapi"
	"netman/policy-server/auth"
	"netman/policy-server/config"
)

// Routes are what the policy server serves from this package.
type Routes struct {
	// External are the external routes; nil when neither uaa_url nor uaa_key_file
	// is configured, because no caller could be authenticated.
	External []httpapi.Route
	// ExternalTLS is set when the external API serves HTTPS.
	ExternalTLS *tls.Config
}

// Configure builds the routes from the configuration. Bad key, CA or certificate files
// fail here, at start.
func Configure(ctx context.Context, cfg *config.Config, st Store, cc CloudController, logger *slog.Logger) (Routes, error) {
	verifier, externalTLS, err := loadFiles(cfg, logger)
	if err != nil {
		return Routes{}, err
	}
	if verifier != nil {
		verifier.Prefetch(ctx)
	}
	a, err := New(Options{Store: st, Verifier: verifier, MaxPolicies: cfg.External.MaxPoliciesPerRequest, MaxIDs: cfg.MaxPolicyGroupIDs, CloudController: cc})
	if err != nil {
		return Routes{}, err
	}
	r := Routes{External: a.ExternalRoutes()}
	if r.External == nil {
		logger.Warn("external API disabled: set uaa_url or uaa_key_file to serve it on listen_port")
		return r, nil
	}
	r.ExternalTLS = externalTLS
	return r, nil
}

// CheckFiles loads the external API's key, CA and certificate files without contacting
// UAA, so `policy-server -validate-config` refuses a bad one before a deploy starts.
func CheckFiles(cfg *config.Config) error {
	_, _, err := loadFiles(cfg, slog.New(slog.DiscardHandler))
	return err
}

// loadFiles reads every file the external settings name: the token verifier's key or
// CA, and the HTTPS certificate. Both results are nil when the setting is off.
func loadFiles(cfg *config.Config, logger *slog.Logger) (*auth.Verifier, *tls.Config, error) {
	e := cfg.External
	if !e.Enabled() {
		return nil, nil, nil
	}
	verifier, err := auth.New(auth.Options{
		UAAURL: e.UAAURL, UAACAFile: e.UAACACertFile, KeyFile: e.UAAKeyFile,
		Issuer: e.JWTIssuer, Audience: e.JWTAudience,
		Logger: logger.With("component", "auth"),
	})
	if err != nil {
		return nil, nil, fmt.Errorf("external API: %w", err)
	}
	if e.ExternalCertFile == "" {
		return verifier, nil, nil
	}
	cert, err := tls.LoadX509KeyPair(e.ExternalCertFile, e.ExternalKeyFile)
	if err != nil {
		return nil, nil, fmt.Errorf("fields \"external_server_cert_file\", \"external_server_key_file\": %w", err)
	}
	return verifier, &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}, nil
}
