package cli

import (
	"context"
	"fmt"
	"netman/lib/apiwire"
	"strings"

	"netman/lib/mutualtls"
	"netman/lib/policyclient"
)

const internalUsage = `Usage: netman internal policies --url URL --ca FILE --cert FILE --key FILE [--id ID,...] [--v1] [--json]

Shows the policies exactly as an agent gets them from the internal API, over the same
mutual TLS (TLS 1.2, TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, a client certificate).
Without --v1 it asks GET /networking/v0/internal/policies, the route agents poll.
`

func internalPolicies(ctx context.Context, args []string, env Env) error {
	fs := flagSet("internal policies", internalUsage, env)
	base := fs.String("url", "https://policy-server.service.cf.internal:4003", "internal API base `URL`")
	ca := fs.String("ca", "", "CA certificate `file` that signed the server's certificate")
	cert := fs.String("cert", "", "client certificate `file`")
	key := fs.String("key", "", "client key `file`")
	ids := fs.String("id", "", "only policies whose source or destination is one of these comma-separated `ids`")
	useV1 := fs.Bool("v1", false, "ask GET /networking/v1/internal/policies instead")
	asJSON := fs.Bool("json", false, "print the server's JSON")
	timeout := fs.Duration("timeout", 0, "give up after this `duration` (default 30s)")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usageError{"internal policies takes no arguments; filter with --id"}
	}
	if *ca == "" || *cert == "" || *key == "" {
		return usageError{"internal policies needs --ca, --cert and --key (the internal API requires mutual TLS)"}
	}
	tlsConfig, err := mutualtls.ClientConfig(*cert, *key, *ca)
	if err != nil {
		return fmt.Errorf("loading the client certificate: %w", err)
	}
	if *timeout <= 0 {
		*timeout = defaultTimeout
	}
	c, err := policyclient.New(*base, tlsConfig, *timeout)
	if err != nil {
		return usageError{fmt.Sprintf("--url: %v", err)}
	}
	q := policyclient.Query{V1: *useV1, All: !isSet(fs, "id")}
	if !q.All {
		q.IDs = strings.Split(*ids, ",")
	}
	policies, body, err := c.List(ctx, q)
	if err != nil {
		return err
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
