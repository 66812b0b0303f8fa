package cli

import (
	"context"
	"flag"
	"fmt"
	"strings"

	"netman/lib/apiwire"
	"netman/lib/mutualtls"
	"netman/lib/policyclient"
)

var internalPoliciesCommand = &command{
	name:     "internal policies",
	summary:  "what an agent sees (mutual TLS to the internal API)",
	synopsis: "internal policies --url URL --ca FILE --cert FILE --key FILE [--id ID,...] [--v1] [--json]",
	details: `Shows the policies exactly as an agent gets them from the internal API, over the same
mutual TLS (TLS 1.2, TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, a client certificate).
Without --v1 it asks GET /networking/v0/internal/policies, the route agents poll.
`,
	setup: func(fs *flag.FlagSet, _ *common, env Env) runFunc {
		base := fs.String("url", "https://policy-server.service.cf.internal:4003", "internal API base `URL`")
		ca := fs.String("ca", "", "CA certificate `file` that signed the server's certificate")
		cert := fs.String("cert", "", "client certificate `file`")
		key := fs.String("key", "", "client key `file`")
		ids := fs.String("id", "", "only policies whose source or destination is one of these comma-separated `ids`")
		useV1 := fs.Bool("v1", false, "ask GET /networking/v1/internal/policies instead")
		asJSON := fs.Bool("json", false, "print the server's JSON")
		timeout := fs.Duration("timeout", defaultTimeout, "give up after this `duration`")
		return func(ctx context.Context, pos []string) error {
			if len(pos) > 0 {
				return usageError{msg: fmt.Sprintf("internal policies takes no arguments, got %s; filter with --id", quoteList(pos))}
			}
			if *ca == "" || *cert == "" || *key == "" {
				return usageError{msg: "internal policies needs --ca, --cert and --key (the internal API requires mutual TLS)"}
			}
			tlsConfig, err := mutualtls.ClientConfig(*cert, *key, *ca)
			if err != nil {
				return fmt.Errorf("loading the client certificate: %w", err)
			}
			if *timeout <= 0 {
				return usageError{msg: "--timeout must be positive"}
			}
			c, err := policyclient.New(*base, tlsConfig, *timeout)
			if err != nil {
				return usageError{msg: fmt.Sprintf("--url: %v", err)}
			}
			q := policyclient.Query{V1: *useV1, All: !isSet(fs, "id")}
			if !q.All {
				q.IDs = strings.Split(*ids, ",")
			}
			policies, body, err := c.List(ctx, q)
			if err != nil {
				return explain("", err, true)
			}
			if *asJSON {
				return printJSON(env.Stdout, body)
			}
			rows := make([][]string, len(policies))
			for i, p := range policies {
				d := p.Destination
				ports := apiwire.Ports{Start: d.Ports.Start, End: d.Ports.End}
				rows[i] = []string{p.Source.ID, p.Source.Tag, d.ID, d.Tag, d.Protocol, portsString(ports)}
			}
			if err := writeTable(env.Stdout, []string{"SOURCE", "SOURCE TAG", "DESTINATION", "DESTINATION TAG", "PROTOCOL", "PORTS"}, rows); err != nil {
				return err
			}
			_, err = fmt.Fprintln(env.Stdout, countPolicies(len(policies)))
			return err
		}
	},
}
