// Package cli is the `netman` command: it manages network policies through the policy
// server's external v1 API, shows what agents see through the internal API, and mints
// tokens for local use.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

// Env is what a run of the command sees of its process.
type Env struct {
	Stdout, Stderr io.Writer
	Getenv         func(string) string
}

// usageError is a mistake in the command line: exit status 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

// Run executes the command line args (without the program name) and returns the exit
// status: 0 on success, 1 when the command failed, 2 for a bad command line.
func Run(ctx context.Context, args []string, env Env) int {
	if env.Getenv == nil {
		env.Getenv = os.Getenv
	}
	err := dispatch(ctx, args, env)
	var ue usageError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &ue):
		fmt.Fprintf(env.Stderr, "netman: %s (see netman --help)\n", oneLine(ue.msg))
		return 2
	default:
		fmt.Fprintf(env.Stderr, "netman: %s\n", oneLine(err.Error()))
		return 1
	}
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

const mainUsage = `Usage: netman [--api URL] [--token TOKEN] COMMAND [ARGS] [FLAGS]

Manage netman network policies through the policy server's external API (v1).

Commands:
  policies list [--id ID,...]                       list policies
  policies add SRC DST [--protocol tcp|udp] [--port P[-Q]]   allow SRC to reach DST
  policies remove SRC DST --protocol tcp|udp --port P[-Q]    remove that policy
  tags                                              list policy groups and their tags
  whoami                                            show who the token belongs to
  internal policies --url URL --ca F --cert F --key F [--id ID,...]
                                                    what an agent sees (mutual TLS)
  dev-token --key FILE [--scope network.admin]      mint a token for local use

Common flags (before or after the command):
  --api URL       external API base URL (default $NETMAN_API, else http://127.0.0.1:4002)
  --token TOKEN   UAA bearer token (default $NETMAN_TOKEN; "bearer " prefix allowed)
  --ca FILE       CA certificate to trust when the external API serves HTTPS
  --json          print the server's JSON instead of a table
  --timeout D     give up after D (default 30s)

Run 'netman COMMAND --help' for a command's flags.
`

// common holds the flags every API command accepts.
type common struct {
	api, token, ca string
	// envToken is $NETMAN_TOKEN, kept out of the flag's default so --help never prints it.
	envToken string
	json     bool
	timeout  time.Duration
}

func (c *common) register(fs *flag.FlagSet, env Env) {
	api := env.Getenv("NETMAN_API")
	if api == "" {
		api = "http://127.0.0.1:4002"
	}
	fs.StringVar(&c.api, "api", api, "external API base `URL`")
	c.envToken = env.Getenv("NETMAN_TOKEN")
	fs.StringVar(&c.token, "token", "", "UAA bearer `token` (default $NETMAN_TOKEN)")
	fs.StringVar(&c.ca, "ca", "", "CA certificate `file` for an HTTPS external API")
	fs.BoolVar(&c.json, "json", false, "print JSON instead of a table")
	fs.DurationVar(&c.timeout, "timeout", 30*time.Second, "give up after this `duration`")
}

// flagSet returns a FlagSet whose help goes to stdout and whose errors are returned,
// not printed.
func flagSet(name, usage string, env Env) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {
		fmt.Fprint(env.Stdout, usage)
		fs.SetOutput(env.Stdout)
		fmt.Fprintln(env.Stdout, "\nFlags:")
		fs.PrintDefaults()
		fs.SetOutput(io.Discard)
	}
	return fs
}

// parse parses flags and positional arguments in any order, as cf's commands allow
// ("netman policies add a b --port 80" and "netman policies add --port 80 a b").
func parse(fs *flag.FlagSet, args []string) ([]string, error) {
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err // the flag package has printed the usage already
			}
			return nil, usageError{fs.Name() + ": " + err.Error()}
		}
		args = fs.Args()
		if len(args) == 0 {
			return positional, nil
		}
		if args[0] == "--" {
			return append(positional, args[1:]...), nil
		}
		positional = append(positional, args[0])
		args = args[1:]
	}
}

func dispatch(ctx context.Context, args []string, env Env) error {
	// Common flags may come before the command; they are passed on after it.
	var pre []string
	for len(args) > 0 && strings.HasPrefix(args[0], "-") {
		a := args[0]
		if a == "-h" || a == "--help" || a == "-help" {
			fmt.Fprint(env.Stdout, mainUsage)
			return flag.ErrHelp
		}
		pre = append(pre, a)
		args = args[1:]
		if !strings.Contains(a, "=") && !isBoolFlag(a) && len(args) > 0 {
			pre = append(pre, args[0])
			args = args[1:]
		}
	}
	if len(args) == 0 {
		fmt.Fprint(env.Stderr, mainUsage)
		return usageError{"no command given"}
	}
	cmd, rest := args[0], append(pre, args[1:]...)
	switch cmd {
	case "policies":
		if len(args) < 2 || strings.HasPrefix(args[1], "-") {
			if len(args) >= 2 && isHelp(args[1]) {
				fmt.Fprint(env.Stdout, policiesUsage)
				return flag.ErrHelp
			}
			return usageError{"policies: say list, add or remove"}
		}
		rest = append(pre, args[2:]...)
		switch args[1] {
		case "list":
			return listPolicies(ctx, rest, env)
		case "add":
			return changePolicy(ctx, "add", rest, env)
		case "remove":
			return changePolicy(ctx, "remove", rest, env)
		}
		return usageError{fmt.Sprintf("policies: unknown subcommand %q; say list, add or remove", args[1])}
	case "tags":
		return listTags(ctx, rest, env)
	case "whoami":
		return whoami(ctx, rest, env)
	case "internal":
		if len(args) < 2 || args[1] != "policies" {
			if len(args) >= 2 && isHelp(args[1]) {
				fmt.Fprint(env.Stdout, internalUsage)
				return flag.ErrHelp
			}
			return usageError{"internal: the only subcommand is \"policies\""}
		}
		return internalPolicies(ctx, append(pre, args[2:]...), env)
	case "dev-token":
		return devToken(rest, env)
	case "help":
		fmt.Fprint(env.Stdout, mainUsage)
		return nil
	}
	return usageError{fmt.Sprintf("unknown command %q", cmd)}
}

func isHelp(a string) bool { return a == "-h" || a == "--help" || a == "-help" }

func isBoolFlag(a string) bool {
	name := strings.TrimLeft(a, "-")
	return name == "json"
}

// isSet reports whether the flag was given on the command line.
func isSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) {
		if f.Name == name {
			set = true
		}
	})
	return set
}
