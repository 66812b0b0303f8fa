// Command netman manages netman network policies through the policy server's external
// API. See `netman --help`.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"netman/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Run(ctx, os.Args[1:], cli.Env{Stdout: os.Stdout, Stderr: os.Stderr, Getenv: os.Getenv})
	stop()
	os.Exit(code)
}
