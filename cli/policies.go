package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"netman/lib/apiwire"
	"strconv"
	"strings"
)

const v1 = "/networking/v1/external"

const policiesUsage = `Usage:
  netman policies list [--id ID,...] [--json]
  netman policies add SRC DST [--protocol tcp|udp] [--port P[-Q]]
  netman policies remove SRC DST --protocol tcp|udp --port P[-Q]

SRC and DST are policy group ids (app guids). add allows new connections from SRC to
DST on the protocol and port or inclusive port range; it defaults to tcp port 8080, as
'cf add-network-policy' does. Adding an existing policy and removing a missing one both
succeed.
`

// portsString shows a port range the way --port takes it: "8080" or "8080-8090".
func portsString(p apiwire.Ports) string {
	if p.Start == p.End {
		return strconv.Itoa(p.Start)
	}
	return fmt.Sprintf("%d-%d", p.Start, p.End)
}

func listPolicies(ctx context.Context, args []string, env Env) error {
	var c common
	fs := flagSet("policies list", policiesUsage, env)
	c.register(fs, env)
	ids := fs.String("id", "", "only policies whose source or destination is one of these comma-separated `ids`")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usageError{"policies list takes no arguments; filter with --id"}
	}
	cl, err := newClient(c)
	if err != nil {
		return err
	}
	query := ""
	if isSet(fs, "id") {
		query = url.Values{"id": {*ids}}.Encode()
	}
	data, err := cl.do(ctx, http.MethodGet, v1+"/policies", query, nil)
	if err != nil {
		return err
	}
	if c.json {
		return printJSON(env.Stdout, data)
	}
	var list apiwire.PoliciesV1
	if err := json.Unmarshal(data, &list); err != nil {
		return fmt.Errorf("decoding the policy list: %w", err)
	}
	rows := make([][]string, len(list.Policies))
	for i, p := range list.Policies {
		rows[i] = []string{p.Source.ID, p.Destination.ID, p.Destination.Protocol, portsString(p.Destination.Ports)}
	}
	if err := writeTable(env.Stdout, []string{"SOURCE", "DESTINATION", "PROTOCOL", "PORTS"}, rows); err != nil {
		return err
	}
	_, err = fmt.Fprintln(env.Stdout, countPolicies(list.TotalPolicies))
	return err
}

func changePolicy(ctx context.Context, verb string, args []string, env Env) error {
	var c common
	fs := flagSet("policies "+verb, policiesUsage, env)
	c.register(fs, env)
	protocol := fs.String("protocol", "tcp", "`protocol`: tcp or udp")
	port := fs.String("port", "8080", "destination `port` or inclusive range, e.g. 8080 or 8080-8090")
	dstFlag := fs.String("destination-app", "", "DST, as cf CLI v6 spelt it (`id`)")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if *dstFlag != "" {
		pos = append(pos, *dstFlag)
	}
	if len(pos) != 2 {
		return usageError{fmt.Sprintf("policies %s needs SRC and DST, got %d arguments", verb, len(pos))}
	}
	if verb == "remove" && (!isSet(fs, "protocol") || !isSet(fs, "port")) {
		return usageError{"policies remove needs --protocol and --port: they say which policy to remove"}
	}
	ports, err := parsePorts(*port)
	if err != nil {
		return err
	}
	cl, err := newClient(c)
	if err != nil {
		return err
	}
	p := apiwire.PolicyV1{
		Source:      apiwire.Source{ID: pos[0]},
		Destination: apiwire.DestinationV1{ID: pos[1], Protocol: *protocol, Ports: ports},
	}
	method, path, done := http.MethodPost, v1+"/policies", "Added"
	if verb == "remove" {
		path, done = v1+"/policies/delete", "Removed"
	}
	data, err := cl.do(ctx, method, path, "", map[string][]apiwire.PolicyV1{"policies": {p}})
	if err != nil {
		return err
	}
	if c.json {
		return printJSON(env.Stdout, data)
	}
	_, err = fmt.Fprintf(env.Stdout, "%s policy %s -> %s %s/%s\n", done, p.Source.ID, p.Destination.ID, p.Destination.Protocol, portsString(p.Destination.Ports))
	return err
}

// parsePorts reads "8080" or "8080-8090". Range checks are the server's: its message
// is the one users see from every client.
func parsePorts(s string) (apiwire.Ports, error) {
	lo, hi, isRange := strings.Cut(strings.TrimSpace(s), "-")
	start, err := strconv.Atoi(lo)
	if err != nil {
		return apiwire.Ports{}, usageError{fmt.Sprintf("--port %q: want a port like 8080 or a range like 8080-8090", s)}
	}
	end := start
	if isRange {
		if end, err = strconv.Atoi(hi); err != nil {
			return apiwire.Ports{}, usageError{fmt.Sprintf("--port %q: want a port like 8080 or a range like 8080-8090", s)}
		}
	}
	return apiwire.Ports{Start: start, End: end}, nil
}

// get runs what the read-only commands without arguments share: flags, one GET of
// path, and --json. It returns nil data when it printed the JSON itself.
func get(ctx context.Context, name, usage, path string, args []string, env Env) ([]byte, error) {
	var c common
	fs := flagSet(name, usage, env)
	c.register(fs, env)
	pos, err := parse(fs, args)
	if err != nil {
		return nil, err
	}
	if len(pos) > 0 {
		return nil, usageError{name + " takes no arguments"}
	}
	cl, err := newClient(c)
	if err != nil {
		return nil, err
	}
	data, err := cl.do(ctx, http.MethodGet, path, "", nil)
	if err != nil {
		return nil, err
	}
	if c.json {
		return nil, printJSON(env.Stdout, data)
	}
	return data, nil
}

func listTags(ctx context.Context, args []string, env Env) error {
	data, err := get(ctx, "tags", "Usage: netman tags [--json]\n\nLists every policy group with its type and tag.\n", v1+"/tags", args, env)
	if data == nil {
		return err
	}
	var body apiwire.TagsV1
	if err := json.Unmarshal(data, &body); err != nil {
		return fmt.Errorf("decoding the tag list: %w", err)
	}
	rows := make([][]string, len(body.Tags))
	for i, t := range body.Tags {
		rows[i] = []string{t.ID, t.Type, t.Tag}
	}
	return writeTable(env.Stdout, []string{"ID", "TYPE", "TAG"}, rows)
}

func whoami(ctx context.Context, args []string, env Env) error {
	data, err := get(ctx, "whoami", "Usage: netman whoami [--json]\n\nShows whom the token belongs to and its scopes, as the server sees them.\n", v1+"/whoami", args, env)
	if data == nil {
		return err
	}
	var w apiwire.Whoami
	if err := json.Unmarshal(data, &w); err != nil {
		return fmt.Errorf("decoding whoami: %w", err)
	}
	_, err = fmt.Fprintf(env.Stdout, "user:   %s\nclient: %s\nscopes: %s\n", w.UserName, w.ClientID, strings.Join(w.Scope, " "))
	return err
}

func countPolicies(n int) string {
	if n == 1 {
		return "1 policy"
	}
	return fmt.Sprintf("%d policies", n)
}
