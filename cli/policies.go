package cli

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"netman/lib/apiwire"
)

const v1 = "/networking/v1/external"

const policiesDetails = `SRC and DST are policy group ids (app guids). add allows new connections from SRC to
DST on the protocol and port or inclusive port range; it defaults to tcp port 8080, as
'cf add-network-policy' does. Adding an existing policy and removing a missing one both
succeed.
`

var listCommand = &command{
	name:     "policies list",
	summary:  "list policies",
	synopsis: "policies list [--id ID,...] [--json]",
	details:  "Lists every policy, or those whose source or destination is one of the ids.\n",
	api:      true,
	setup: func(fs *flag.FlagSet, c *common, env Env) runFunc {
		ids := fs.String("id", "", "only policies whose source or destination is one of these comma-separated `ids`")
		return func(ctx context.Context, pos []string) error {
			if len(pos) > 0 {
				return usageError{msg: fmt.Sprintf("policies list takes no arguments, got %s; filter with --id", quoteList(pos))}
			}
			query := ""
			if isSet(fs, "id") {
				query = url.Values{"id": {*ids}}.Encode()
			}
			return listPolicies(ctx, *c, query, env)
		}
	},
}

var addCommand = &command{
	name:     "policies add",
	summary:  "allow SRC to reach DST",
	synopsis: "policies add SRC DST [--protocol tcp|udp] [--port P[-Q]]",
	details:  policiesDetails,
	api:      true,
	setup:    changePolicy("add"),
}

var removeCommand = &command{
	name:     "policies remove",
	summary:  "remove the policy from SRC to DST",
	synopsis: "policies remove SRC DST --protocol tcp|udp --port P[-Q]",
	details:  policiesDetails,
	api:      true,
	setup:    changePolicy("remove"),
}

var tagsCommand = &command{
	name:     "tags",
	summary:  "list policy groups and their tags",
	synopsis: "tags [--json]",
	details:  "Lists every policy group with its type and tag.\n",
	api:      true,
	setup:    get("tags", v1+"/tags", printTags),
}

var whoamiCommand = &command{
	name:     "whoami",
	summary:  "show whom the token belongs to",
	synopsis: "whoami [--json]",
	details:  "Shows whom the token belongs to and its scopes, as the server sees them.\n",
	api:      true,
	setup:    get("whoami", v1+"/whoami", printWhoami),
}

// portsString shows a port range the way --port takes it: "8080" or "8080-8090".
func portsString(p apiwire.Ports) string {
	if p.Start == p.End {
		return strconv.Itoa(p.Start)
	}
	return fmt.Sprintf("%d-%d", p.Start, p.End)
}

func listPolicies(ctx context.Context, c common, query string, env Env) error {
	cl, err := newClient(c)
	if err != nil {
		return err
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

// changePolicy is the setup of policies add and remove.
func changePolicy(verb string) func(fs *flag.FlagSet, c *common, env Env) runFunc {
	return func(fs *flag.FlagSet, c *common, env Env) runFunc {
		protocol := fs.String("protocol", "tcp", "`protocol`: tcp or udp")
		port := fs.String("port", "8080", "destination `port` or inclusive range, e.g. 8080 or 8080-8090")
		dstFlag := fs.String("destination-app", "", "DST, as cf CLI v6 spelt it (`id`)")
		return func(ctx context.Context, pos []string) error {
			if *dstFlag != "" {
				pos = append(pos, *dstFlag)
			}
			if err := wantArgs("policies "+verb, pos, 2, "SRC and DST"); err != nil {
				return err
			}
			if verb == "remove" && (!isSet(fs, "protocol") || !isSet(fs, "port")) {
				return usageError{msg: "policies remove needs --protocol and --port: they say which policy to remove"}
			}
			ports, err := parsePorts(*port)
			if err != nil {
				return err
			}
			cl, err := newClient(*c)
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
			data, err := cl.do(ctx, method, path, "", apiwire.PoliciesRequestV1{Policies: []apiwire.PolicyV1{p}})
			if err != nil {
				return err
			}
			if c.json {
				return printJSON(env.Stdout, data)
			}
			_, err = fmt.Fprintf(env.Stdout, "%s policy %s -> %s %s/%s\n", done, p.Source.ID, p.Destination.ID, p.Destination.Protocol, portsString(p.Destination.Ports))
			return err
		}
	}
}

// parsePorts reads "8080" or "8080-8090". Range checks are the server's: its message
// is the one users see from every client.
func parsePorts(s string) (apiwire.Ports, error) {
	lo, hi, isRange := strings.Cut(strings.TrimSpace(s), "-")
	start, err := strconv.Atoi(lo)
	if err != nil {
		return apiwire.Ports{}, usageError{msg: fmt.Sprintf("--port %q: want a port like 8080 or a range like 8080-8090", s)}
	}
	end := start
	if isRange {
		if end, err = strconv.Atoi(hi); err != nil {
			return apiwire.Ports{}, usageError{msg: fmt.Sprintf("--port %q: want a port like 8080 or a range like 8080-8090", s)}
		}
	}
	return apiwire.Ports{Start: start, End: end}, nil
}

// get is the setup of the read-only commands without arguments: one GET of path,
// printed as JSON with --json, else by show.
func get(name, path string, show func(w io.Writer, data []byte) error) func(fs *flag.FlagSet, c *common, env Env) runFunc {
	return func(fs *flag.FlagSet, c *common, env Env) runFunc {
		return func(ctx context.Context, pos []string) error {
			if err := wantArgs(name, pos, 0, ""); err != nil {
				return err
			}
			cl, err := newClient(*c)
			if err != nil {
				return err
			}
			data, err := cl.do(ctx, http.MethodGet, path, "", nil)
			if err != nil {
				return err
			}
			if c.json {
				return printJSON(env.Stdout, data)
			}
			return show(env.Stdout, data)
		}
	}
}

func printTags(w io.Writer, data []byte) error {
	var body apiwire.TagsV1
	if err := json.Unmarshal(data, &body); err != nil {
		return fmt.Errorf("decoding the tag list: %w", err)
	}
	rows := make([][]string, len(body.Tags))
	for i, t := range body.Tags {
		rows[i] = []string{t.ID, t.Type, t.Tag}
	}
	return writeTable(w, []string{"ID", "TYPE", "TAG"}, rows)
}

func printWhoami(w io.Writer, data []byte) error {
	var who apiwire.Whoami
	if err := json.Unmarshal(data, &who); err != nil {
		return fmt.Errorf("decoding whoami: %w", err)
	}
	_, err := fmt.Fprintf(w, "user:   %s\nclient: %s\nscopes: %s\n", who.UserName, who.ClientID, strings.Join(who.Scope, " "))
	return err
}

func countPolicies(n int) string {
	if n == 1 {
		return "1 policy"
	}
	return fmt.Sprintf("%d policies", n)
}
