package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"netman/lib/mutualtls"
)

const internalUsage = `Usage: netman internal policies --url URL --ca FILE --cert FILE --key FILE [--id ID,...] [--v1] [--json]

Shows the policies exactly as an agent gets them from the internal API, over the same
mutual TLS (TLS 1.2, TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, a client certificate).
Without --v1 it asks GET /networking/v0/internal/policies, the route agents poll.
`

// internalPolicy is a policy as both internal API versions show it: v0 has "port" (and
// "ports" for a range), v1 only "ports".
type internalPolicy struct {
	Source struct {
		ID  string `json:"id"`
		Tag string `json:"tag"`
	} `json:"source"`
	Destination struct {
		ID       string   `json:"id"`
		Tag      string   `json:"tag"`
		Protocol string   `json:"protocol"`
		Port     int      `json:"port"`
		Ports    *portsV1 `json:"ports"`
	} `json:"destination"`
}

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
	u, err := url.Parse(*base)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return usageError{fmt.Sprintf("--url %q is not an https:// URL", *base)}
	}
	tlsConfig, err := mutualtls.ClientConfig(*cert, *key, *ca)
	if err != nil {
		return fmt.Errorf("loading the client certificate: %w", err)
	}
	if *timeout <= 0 {
		*timeout = defaultTimeout
	}
	path := "/networking/v0/internal/policies"
	if *useV1 {
		path = "/networking/v1/internal/policies"
	}
	u.Path = strings.TrimSuffix(u.Path, "/") + path
	if isSet(fs, "id") {
		u.RawQuery = url.Values{"id": {*ids}}.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return fmt.Errorf("building request: %w", err)
	}
	transport := &http.Transport{TLSClientConfig: tlsConfig}
	defer transport.CloseIdleConnections()
	resp, err := (&http.Client{Transport: transport, Timeout: *timeout}).Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return fmt.Errorf("GET %s: %w", u.Redacted(), err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	if err != nil {
		return fmt.Errorf("GET %s: reading the answer: %w", path, err)
	}
	if resp.StatusCode != http.StatusOK {
		return serverError(http.MethodGet, path, resp.StatusCode, data)
	}
	if *asJSON {
		return printJSON(env.Stdout, data)
	}
	var body struct{ Policies []internalPolicy }
	if err := json.Unmarshal(data, &body); err != nil {
		return fmt.Errorf("decoding the policy list: %w", err)
	}
	rows := make([][]string, len(body.Policies))
	for i, p := range body.Policies {
		ports := portsV1{Start: p.Destination.Port, End: p.Destination.Port}
		if p.Destination.Ports != nil {
			ports = *p.Destination.Ports
		}
		rows[i] = []string{p.Source.ID, p.Source.Tag, p.Destination.ID, p.Destination.Tag, p.Destination.Protocol, ports.String()}
	}
	if err := writeTable(env.Stdout, []string{"SOURCE", "SOURCE TAG", "DESTINATION", "DESTINATION TAG", "PROTOCOL", "PORTS"}, rows); err != nil {
		return err
	}
	_, err = fmt.Fprintln(env.Stdout, countPolicies(len(body.Policies)))
	return err
}
