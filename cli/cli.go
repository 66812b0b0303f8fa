// Package cli is the `netman` command: it manages network policies through the policy
// server's external v1 API, shows what agents see through the internal API, and mints
// tokens for local use.
//
// What a user sees follows the CLIs operators know (git, kubectl, cf): answers on
// stdout, and nothing else there, so `netman ... --json | jq` always gets JSON; errors,
// hints and the usage shown after a mistake on stderr; `--help` and `help TOPIC` on
// stdout; exit 0 for success, 1 for a failed command, 2 for a bad command line.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"
)

// Env is what a run of the command sees of its process.
type Env struct {
	Stdout, Stderr io.Writer
	Getenv         func(string) string
	// Program is the name to show in completion scripts (default "netman").
	Program string
}

// usageError is a mistake in the command line: exit status 2. usage, when set, is
// printed after the message (on stderr) to show what the command takes.
type usageError struct {
	msg   string
	usage string
}

func (e usageError) Error() string { return e.msg }

// hinted is a failed command with advice for the usual cause.
type hinted struct {
	err  error
	hint string
}

func (h hinted) Error() string { return h.err.Error() }
func (h hinted) Unwrap() error { return h.err }

// Run executes the command line args (without the program name) and returns the exit
// status: 0 on success, 1 when the command failed, 2 for a bad command line.
func Run(ctx context.Context, args []string, env Env) int {
	if env.Getenv == nil {
		env.Getenv = os.Getenv
	}
	if env.Program == "" {
		env.Program = "netman"
	}
	err := dispatch(ctx, args, env)
	var ue usageError
	var h hinted
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &ue):
		fmt.Fprintf(env.Stderr, "netman: %s\n", oneLine(ue.msg))
		if ue.usage != "" {
			fmt.Fprint(env.Stderr, ue.usage)
		}
		return 2
	case errors.As(err, &h):
		fmt.Fprintf(env.Stderr, "netman: %s\nhint: %s\n", oneLine(err.Error()), h.hint)
		return 1
	default:
		fmt.Fprintf(env.Stderr, "netman: %s\n", oneLine(err.Error()))
		return 1
	}
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// runFunc runs a command with its positional arguments, once its flags are parsed.
type runFunc func(ctx context.Context, args []string) error

// command is one thing netman does. Its flags are defined once, in setup, and
// everything else (parsing, help, completion, suggestions) reads them from there.
type command struct {
	name     string // as typed: "policies list"
	summary  string // for the command list
	synopsis string // after "Usage: netman "
	details  string // paragraphs of the help after the synopsis
	api      bool   // takes the common flags of the external API
	setup    func(fs *flag.FlagSet, c *common, env Env) runFunc
}

// groups are the first words of multi-word commands, with what netman help says of them.
var groups = map[string]string{
	"policies": "list, add and remove policies",
	"internal": "ask the internal API, as an agent does",
}

// commands is netman's command table, in the order help lists them.
func commands() []*command {
	return []*command{
		listCommand, addCommand, removeCommand, tagsCommand, whoamiCommand,
		internalPoliciesCommand, devTokenCommand, completionCommand, versionCommand,
	}
}

func findCommand(name string) *command {
	for _, c := range commands() {
		if c.name == name {
			return c
		}
	}
	return nil
}

// topLevel is every word that may come first: single-word commands, groups and help.
func topLevel() []string {
	var out []string
	for _, c := range commands() {
		first, _, _ := strings.Cut(c.name, " ")
		if !slices.Contains(out, first) {
			out = append(out, first)
		}
	}
	return append(out, "help")
}

// subcommands of group, in table order.
func subcommands(group string) []string {
	var out []string
	for _, c := range commands() {
		if rest, ok := strings.CutPrefix(c.name, group+" "); ok {
			out = append(out, rest)
		}
	}
	return out
}

func mainUsage() string {
	var b strings.Builder
	b.WriteString(`Usage: netman [--api URL] [--token TOKEN] COMMAND [ARGS] [FLAGS]

Manage netman network policies through the policy server's external API (v1).

Commands:
`)
	for _, c := range commands() {
		fmt.Fprintf(&b, "  %-19s %s\n", c.name, c.summary)
	}
	fmt.Fprintf(&b, "  %-19s %s\n", "help [COMMAND]", "show the help of netman or of a command")
	b.WriteString(`
Common flags of the API commands (before or after the command):
  --api URL       external API base URL (default $NETMAN_API, else http://127.0.0.1:4002)
  --token TOKEN   UAA bearer token (default $NETMAN_TOKEN; "bearer " prefix allowed)
  --ca FILE       CA certificate to trust when the external API serves HTTPS
  --json          print the server's JSON instead of a table
  --timeout D     give up after D (default 30s)

Run 'netman help COMMAND' for a command's arguments and flags.
`)
	return b.String()
}

func groupUsage(group string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Usage: netman %s SUBCOMMAND [ARGS] [FLAGS]\n\n%s.\n\nSubcommands:\n", group, capitalize(groups[group]))
	for _, c := range commands() {
		if rest, ok := strings.CutPrefix(c.name, group+" "); ok {
			fmt.Fprintf(&b, "  %-10s %s\n", rest, c.summary)
		}
	}
	fmt.Fprintf(&b, "\nRun 'netman help %s SUBCOMMAND' for its arguments and flags.\n", group)
	return b.String()
}

func capitalize(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// shortUsage is what follows a mistake in a command's line on stderr.
func (c *command) shortUsage() string {
	return fmt.Sprintf("Usage: netman %s\nRun 'netman help %s' for details.\n", c.synopsis, c.name)
}

// flags returns the command's flag set (with the common flags of API commands) and
// the function that runs it.
func (c *command) flags(env Env) (*flag.FlagSet, *common, runFunc) {
	fs := flag.NewFlagSet(c.name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	var cm common
	if c.api {
		cm.register(fs, env)
	}
	return fs, &cm, c.setup(fs, &cm, env)
}

// help is the command's full help, printed on stdout for --help and help COMMAND.
func (c *command) help(env Env) string {
	fs, _, _ := c.flags(env)
	var b strings.Builder
	fmt.Fprintf(&b, "Usage: netman %s\n\n%s", c.synopsis, c.details)
	b.WriteString("\nFlags:\n")
	printFlags(&b, fs)
	return b.String()
}

// printFlags lists fs's flags as they are typed, with two dashes, as every usage line
// of netman spells them.
func printFlags(w io.Writer, fs *flag.FlagSet) {
	type row struct{ left, right string }
	var rows []row
	width := 0
	fs.VisitAll(func(f *flag.Flag) {
		name, usage := flag.UnquoteUsage(f)
		left := "--" + f.Name
		if name != "" {
			left += " " + strings.ToUpper(name)
		}
		if !isZero(f) {
			usage += fmt.Sprintf(" (default %s)", f.DefValue)
		}
		rows = append(rows, row{left, usage})
		width = max(width, len(left))
	})
	for _, r := range rows {
		fmt.Fprintf(w, "  %-*s   %s\n", width, r.left, r.right)
	}
}

func isZero(f *flag.Flag) bool {
	switch f.DefValue {
	case "", "false", "0", "0s":
		return true
	}
	return false
}

// parse parses flags and positional arguments in any order, as cf's commands allow
// ("netman policies add a b --port 80" and "netman policies add --port 80 a b").
func parse(fs *flag.FlagSet, args []string) ([]string, error) {
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, flagError(fs, err)
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

// flagError rewords the flag package's errors with netman's spelling (--name) and
// suggests the flag meant when the name is unknown.
func flagError(fs *flag.FlagSet, err error) error {
	msg := err.Error()
	if name, ok := strings.CutPrefix(msg, "flag provided but not defined: -"); ok {
		msg = "unknown flag --" + name
		var names []string
		fs.VisitAll(func(f *flag.Flag) { names = append(names, f.Name) })
		if s := suggest(name, names); s != "" {
			msg += "; did you mean --" + s + "?"
		}
	} else {
		msg = strings.Replace(msg, " -", " --", 1)
	}
	return usageError{msg: fs.Name() + ": " + msg}
}

// wantArgs checks the number of positional arguments: what the command needs is
// named in want ("SRC and DST"), what it got is listed.
func wantArgs(name string, pos []string, n int, want string) error {
	if len(pos) == n {
		return nil
	}
	if n == 0 {
		return usageError{msg: fmt.Sprintf("%s takes no arguments, got %s", name, quoteList(pos))}
	}
	if len(pos) == 0 {
		return usageError{msg: fmt.Sprintf("%s needs %s", name, want)}
	}
	return usageError{msg: fmt.Sprintf("%s needs %s, got %s", name, want, quoteList(pos))}
}

func quoteList(s []string) string {
	q := make([]string, len(s))
	for i, v := range s {
		q[i] = fmt.Sprintf("%q", v)
	}
	return strings.Join(q, " ")
}

func dispatch(ctx context.Context, args []string, env Env) error {
	// Common flags may come before the command; they are passed on after it.
	var pre []string
	for len(args) > 0 && strings.HasPrefix(args[0], "-") && args[0] != "-" {
		a := args[0]
		switch {
		case isHelp(a):
			fmt.Fprint(env.Stdout, mainUsage())
			return flag.ErrHelp
		case a == "--version" || a == "-version":
			return printVersion(env)
		}
		pre = append(pre, a)
		args = args[1:]
		if !strings.Contains(a, "=") && !isBoolFlag(a) && len(args) > 0 {
			pre = append(pre, args[0])
			args = args[1:]
		}
	}
	if len(args) == 0 {
		return usageError{msg: "no command given", usage: mainUsage()}
	}
	word := args[0]
	switch {
	case word == "help":
		return help(args[1:], env)
	case word == completeCommand:
		return complete(args[1:], env)
	case groups[word] != "":
		if len(args) < 2 || strings.HasPrefix(args[1], "-") {
			if len(args) >= 2 && isHelp(args[1]) {
				fmt.Fprint(env.Stdout, groupUsage(word))
				return flag.ErrHelp
			}
			return usageError{msg: word + ": missing subcommand", usage: groupUsage(word)}
		}
		c := findCommand(word + " " + args[1])
		if c == nil {
			msg := fmt.Sprintf("%s: unknown subcommand %q", word, args[1])
			if s := suggest(args[1], subcommands(word)); s != "" {
				msg += fmt.Sprintf("; did you mean %q?", word+" "+s)
			}
			return usageError{msg: msg, usage: groupUsage(word)}
		}
		return runCommand(ctx, c, append(pre, args[2:]...), env)
	}
	if c := findCommand(word); c != nil {
		return runCommand(ctx, c, append(pre, args[1:]...), env)
	}
	msg := fmt.Sprintf("unknown command %q", word)
	if s := suggest(word, topLevel()); s != "" {
		msg += fmt.Sprintf("; did you mean %q?", s)
	}
	return usageError{msg: msg, usage: "Run 'netman help' for the list of commands.\n"}
}

func runCommand(ctx context.Context, c *command, args []string, env Env) error {
	fs, _, run := c.flags(env)
	pos, err := parse(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(env.Stdout, c.help(env))
		return err
	}
	if err == nil {
		err = run(ctx, pos)
	}
	var ue usageError
	if errors.As(err, &ue) && ue.usage == "" {
		ue.usage = c.shortUsage()
		return ue
	}
	return err
}

// help answers `netman help [TOPIC...]` on stdout.
func help(topic []string, env Env) error {
	name := strings.Join(topic, " ")
	switch {
	case name == "":
		fmt.Fprint(env.Stdout, mainUsage())
		return nil
	case groups[name] != "":
		fmt.Fprint(env.Stdout, groupUsage(name))
		return nil
	case name == "help":
		fmt.Fprint(env.Stdout, "Usage: netman help [COMMAND]\n\nShows the help of netman, of a command group or of a command.\n")
		return nil
	}
	if c := findCommand(name); c != nil {
		fmt.Fprint(env.Stdout, c.help(env))
		return nil
	}
	var names []string
	for _, c := range commands() {
		names = append(names, c.name)
	}
	for g := range groups {
		names = append(names, g)
	}
	msg := fmt.Sprintf("help: unknown topic %q", name)
	if s := suggest(name, names); s != "" {
		msg += fmt.Sprintf("; did you mean %q?", s)
	}
	return usageError{msg: msg, usage: "Run 'netman help' for the list of commands.\n"}
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
	fs.DurationVar(&c.timeout, "timeout", defaultTimeout, "give up after this `duration`")
}
