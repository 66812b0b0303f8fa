package cli

import (
	"context"
	"flag"
	"fmt"

	"netman/lib/buildinfo"
)

var versionCommand = &command{
	name:     "version",
	summary:  "print netman's version",
	synopsis: "version",
	details:  "Prints the version netman was built as, its VCS revision when known, and the Go version.\nThe same as netman --version.\n",
	setup: func(fs *flag.FlagSet, _ *common, env Env) runFunc {
		return func(_ context.Context, pos []string) error {
			if err := wantArgs("version", pos, 0, ""); err != nil {
				return err
			}
			return printVersion(env)
		}
	},
}

func printVersion(env Env) error {
	_, err := fmt.Fprintln(env.Stdout, buildinfo.Line("netman"))
	return err
}
