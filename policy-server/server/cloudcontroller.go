package server

import (
	"fmt"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/tedsuo/ifrit/grouper"

	"netman/policy-server/api/externalapi"
	"netman/policy-server/asgsync"
	"netman/policy-server/auth"
	"netman/policy-server/ccclient"
	"netman/policy-server/cleanup"
	"netman/policy-server/config"
	"netman/policy-server/store"
)

// CloudController is what the Cloud Controller integration adds to the server: what
// the external API gets (the guard it asks about space developers, the cleaner behind
// the cleanup route), and the periodic members (security group sync, stale-policy
// cleanup), which go into Deps.Extra.
type CloudController struct {
	API     externalapi.CloudController
	Members grouper.Members
}

// NewCloudController builds the integration from the cc_* fields; nil without cc_url.
// It loads the certificate files now, so a bad one fails at start (and in
// -validate-config), but does not contact CC or UAA.
func NewCloudController(cfg *config.Config, st *store.Store, reg prometheus.Registerer, logger *slog.Logger) (*CloudController, error) {
	c := cfg.CloudController
	if !c.Enabled() {
		return nil, nil
	}
	cli, err := ccclient.New(ccclient.Options{
		URL: c.CCURL, CACertFile: c.CCCACertFile,
		InternalURL: c.CCInternalURL, InternalCACertFile: c.CCInternalCACertFile,
		InternalClientCertFile: c.CCInternalClientCertFile, InternalClientKeyFile: c.CCInternalClientKeyFile,
		UAAURL: cfg.UAAURL, UAACACertFile: cfg.UAACACertFile,
		ClientID: c.UAAClient, ClientSecret: c.UAAClientSecret,
		ChunkSize: c.CCAppRequestChunkSize, Timeout: c.CCRequestTimeout(), Attempts: c.CCRequestAttempts,
		Registerer: reg, Logger: logger.With("component", "cc-client"),
	})
	if err != nil {
		return nil, fmt.Errorf("Cloud Controller client: %w", err)
	}
	if st == nil { // -validate-config: files checked, nothing to run
		return &CloudController{}, nil
	}
	cleaner := &cleanup.Cleaner{CC: cli, Store: st, Interval: c.CleanupInterval(),
		Logger: logger.With("component", "policy-cleanup"), Registerer: reg}
	cc := &CloudController{API: externalapi.CloudController{
		Guard:       &auth.SpaceGuard{CC: cli, Policies: st, MaxPoliciesPerSource: c.MaxPoliciesPerAppSource},
		SelfService: c.EnableSpaceDeveloperSelfService,
		Cleaner:     cleaner,
	}}
	cc.Members = append(cc.Members, grouper.Member{Name: "policy-cleanup", Runner: contextRunner(cleaner.Run)})
	if c.SyncsASGs() {
		syncer := &asgsync.Syncer{CC: cli, Store: st, Interval: c.ASGPollInterval(),
			Logger: logger.With("component", "asg-sync"), Registerer: reg}
		cc.Members = append(cc.Members, grouper.Member{Name: "asg-sync", Runner: contextRunner(syncer.Run)})
	} else {
		logger.Warn("security group sync disabled (asg_sync_enabled is false): /networking/v1/internal/security_groups serves what the database holds")
	}
	return cc, nil
}
