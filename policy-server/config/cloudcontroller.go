package config

import (
	"fmt"
	"net/url"
	"os"
	"time"
)

// CloudController configures what the policy server asks Cloud Controller: app
// ownership for space developers' policies (network.write), the periodic cleanup of
// policies of deleted apps, and the application security groups it serves to agents.
// The names follow cf-networking's policy server and policy-server-asg-syncer where
// they have one. Without cc_url none of this runs: network.write tokens are refused,
// as before, and the security_groups endpoint serves whatever the database holds.
type CloudController struct {
	// CCURL is CC's API base URL (cf-networking: cc_url), e.g.
	// https://cloud-controller-ng.service.cf.internal:9024.
	CCURL        string `json:"cc_url"`
	CCCACertFile string `json:"cc_ca_cert_file"`
	// CCInternalURL is CC's mutual-TLS internal API, e.g.
	// https://cloud-controller-ng.service.cf.internal:9023, with the cc_internal client
	// certificate (cf-deployment's policy_server_asg_syncer_cc_client). Needed for ASG sync.
	CCInternalURL            string `json:"cc_internal_url"`
	CCInternalCACertFile     string `json:"cc_internal_ca_cert_file"`
	CCInternalClientCertFile string `json:"cc_internal_client_cert_file"`
	CCInternalClientKeyFile  string `json:"cc_internal_client_key_file"`
	// UAAClient and UAAClientSecret are the UAA client whose client-credentials token
	// CC accepts (cf-deployment: network-policy, uaa_clients_network_policy_secret).
	// The token comes from uaa_url with uaa_ca_cert_file, the same UAA that signs the
	// external API's tokens.
	UAAClient       string `json:"uaa_client"`
	UAAClientSecret string `json:"uaa_client_secret"`
	// CCAppRequestChunkSize is how many ids one CC request names (cf-networking: 100).
	CCAppRequestChunkSize int `json:"cc_app_request_chunk_size"`
	// CCRequestTimeoutSeconds bounds one attempt of a CC or UAA request.
	CCRequestTimeoutSeconds int `json:"cc_request_timeout_seconds"`
	// CCRequestAttempts is how many times a failing request is tried.
	CCRequestAttempts int `json:"cc_request_attempts"`

	// EnableSpaceDeveloperSelfService lets any user with a valid token (no network.write
	// scope needed) manage policies of apps in spaces they are a developer of, as
	// cf-networking's property of that name; cf-deployment turns it on.
	EnableSpaceDeveloperSelfService bool `json:"enable_space_developer_self_service"`
	// MaxPoliciesPerAppSource caps the policies one source app may have, for writes by
	// space developers (cf-networking: max_policies_per_app_source). Admins are not capped.
	MaxPoliciesPerAppSource int `json:"max_policies_per_app_source"`

	// CleanupIntervalSeconds is how often policies of apps CC no longer has are
	// deleted (cf-networking: policy_cleanup_interval, in minutes there).
	CleanupIntervalSeconds int `json:"cleanup_interval_seconds"`

	// ASGSyncEnabled turns on copying CC's security groups into the database every
	// ASGPollIntervalSeconds (cf-networking's policy-server-asg-syncer). Needs
	// cc_internal_url.
	ASGSyncEnabled         bool `json:"asg_sync_enabled"`
	ASGPollIntervalSeconds int  `json:"asg_poll_interval_seconds"`
}

// Enabled reports whether the policy server talks to Cloud Controller.
func (c CloudController) Enabled() bool { return c.CCURL != "" }

// SyncsASGs reports whether the security groups sync runs.
func (c CloudController) SyncsASGs() bool { return c.Enabled() && c.ASGSyncEnabled }

// CleanupInterval is cleanup_interval_seconds as a duration.
func (c CloudController) CleanupInterval() time.Duration {
	return time.Duration(c.CleanupIntervalSeconds) * time.Second
}

// ASGPollInterval is asg_poll_interval_seconds as a duration.
func (c CloudController) ASGPollInterval() time.Duration {
	return time.Duration(c.ASGPollIntervalSeconds) * time.Second
}

// CCRequestTimeout is cc_request_timeout_seconds as a duration.
func (c CloudController) CCRequestTimeout() time.Duration {
	return time.Duration(c.CCRequestTimeoutSeconds) * time.Second
}

func defaultCloudController() CloudController {
	return CloudController{
		UAAClient:               "network-policy",
		CCAppRequestChunkSize:   100,
		CCRequestTimeoutSeconds: 10,
		CCRequestAttempts:       3,
		MaxPoliciesPerAppSource: 150,
		CleanupIntervalSeconds:  3600,
		ASGSyncEnabled:          true,
		ASGPollIntervalSeconds:  60,
	}
}

// minConnectionsWithCC is the least max_open_connections with cc_url: each periodic job
// holds one connection for its lock while it works through others, and requests must
// still get theirs.
const minConnectionsWithCC = 4

func (c CloudController) validate(uaaURL string, maxOpenConnections int, bad func(field, format string, args ...any)) {
	httpsURL := func(field, s string) {
		if u, err := url.Parse(s); err != nil || u.Scheme != "https" || u.Host == "" {
			bad(field, "%q is not an https:// URL", s)
		}
	}
	if c.CCAppRequestChunkSize < 1 || c.CCAppRequestChunkSize > 5000 {
		bad("cc_app_request_chunk_size", "%d must be between 1 and 5000 (CC's largest page)", c.CCAppRequestChunkSize)
	}
	if c.CCRequestTimeoutSeconds < 1 || c.CCRequestTimeoutSeconds > 300 {
		bad("cc_request_timeout_seconds", "%d must be between 1 and 300", c.CCRequestTimeoutSeconds)
	}
	if c.CCRequestAttempts < 1 || c.CCRequestAttempts > 10 {
		bad("cc_request_attempts", "%d must be between 1 and 10", c.CCRequestAttempts)
	}
	if c.MaxPoliciesPerAppSource < 1 {
		bad("max_policies_per_app_source", "%d must be at least 1", c.MaxPoliciesPerAppSource)
	}
	if c.CleanupIntervalSeconds < 60 {
		bad("cleanup_interval_seconds", "%d must be at least 60", c.CleanupIntervalSeconds)
	}
	if c.ASGPollIntervalSeconds < 1 {
		bad("asg_poll_interval_seconds", "%d must be at least 1", c.ASGPollIntervalSeconds)
	}
	if !c.Enabled() {
		for _, f := range []struct{ field, value string }{
			{"cc_internal_url", c.CCInternalURL}, {"uaa_client_secret", c.UAAClientSecret},
		} {
			if f.value != "" {
				bad(f.field, "is set but cc_url is not")
			}
		}
		if c.EnableSpaceDeveloperSelfService {
			bad("enable_space_developer_self_service", "needs cc_url: app ownership comes from Cloud Controller")
		}
		return
	}
	httpsURL("cc_url", c.CCURL)
	if maxOpenConnections < minConnectionsWithCC {
		bad("database.max_open_connections", "%d is too few with cc_url: the security group sync and the cleanup each hold a connection while they run; use at least %d",
			maxOpenConnections, minConnectionsWithCC)
	}
	if uaaURL == "" {
		bad("uaa_url", "must be set with cc_url: the UAA client token for Cloud Controller comes from it")
	}
	if c.UAAClient == "" {
		bad("uaa_client", "must be set with cc_url")
	}
	if c.UAAClientSecret == "" {
		bad("uaa_client_secret", "must be set with cc_url")
	}
	if c.CCInternalURL != "" {
		httpsURL("cc_internal_url", c.CCInternalURL)
		if c.CCInternalClientCertFile == "" || c.CCInternalClientKeyFile == "" {
			bad("cc_internal_client_cert_file", "cc_internal_client_cert_file and cc_internal_client_key_file must be set with cc_internal_url")
		}
	}
	if c.ASGSyncEnabled && c.CCInternalURL == "" {
		bad("asg_sync_enabled", "needs cc_internal_url (the sync reads CC's last_update there); set asg_sync_enabled to false to serve no security groups")
	}
}

// checkFiles makes sure the certificate files exist, so a deploy fails before start.
func (c CloudController) checkFiles() error {
	if !c.Enabled() {
		return nil
	}
	for _, f := range []struct{ field, path string }{
		{"cc_ca_cert_file", c.CCCACertFile},
		{"cc_internal_ca_cert_file", c.CCInternalCACertFile},
		{"cc_internal_client_cert_file", c.CCInternalClientCertFile},
		{"cc_internal_client_key_file", c.CCInternalClientKeyFile},
	} {
		if f.path == "" {
			continue
		}
		if _, err := os.Stat(f.path); err != nil {
			return fmt.Errorf("field %q: %w", f.field, err)
		}
	}
	return nil
}
