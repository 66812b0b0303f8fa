// Command policy-server serves netman's network policies: the mutual-TLS internal API
// the agents poll, a health check and Prometheus metrics. See -help.
package main

import (
	"context"
	"crypto/tls"
	"database/sql"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"syscall"
	"time"

	_ "github.com/lib/pq" // database/sql driver "postgres"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/tedsuo/ifrit"
	"github.com/tedsuo/ifrit/grouper"
	"github.com/tedsuo/ifrit/sigmon"

	"netman/lib/buildinfo"
	"netman/lib/buildinfo/buildmetric"
	"netman/policy-server/api/externalapi"
	"netman/policy-server/config"
	"netman/policy-server/server"
	"netman/policy-server/store"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("policy-server", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, `Usage: policy-server -config-file FILE [-migrate-only | -validate-config]
       policy-server -version

Serves network policies to the agents over mutual TLS (internal_listen_port),
the external policy-management API on listen_port (when uaa_url or uaa_key_file
is set; see docs/api.md), GET /health on 127.0.0.1:health_check_port and Prometheus /metrics on
127.0.0.1:debug_server_port. Database migrations are applied at every start.
SIGTERM or SIGINT drains in-flight requests and exits 0.

`)
		fs.PrintDefaults()
	}
	configFile := fs.String("config-file", "", "path of the JSON configuration `file` (required)")
	migrateOnly := fs.Bool("migrate-only", false, "apply database migrations, then exit")
	validate := fs.Bool("validate-config", false, "check the configuration file and the certificate files it names, then exit (no database connection)")
	showVersion := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *showVersion {
		fmt.Fprintln(stdout, buildinfo.Line("policy-server"))
		return 0
	}
	if *configFile == "" || fs.NArg() > 0 || (*migrateOnly && *validate) {
		fs.Usage()
		return 2
	}

	cfg, err := config.Load(*configFile)
	if err != nil {
		fmt.Fprintf(stderr, "policy-server: invalid configuration: %v\n", err)
		return 1
	}
	tlsConfig, err := cfg.CheckFiles()
	if err == nil {
		err = externalapi.CheckFiles(cfg)
	}
	if err == nil {
		_, err = server.NewCloudController(cfg, nil, nil, slog.New(slog.DiscardHandler))
	}
	if err != nil {
		fmt.Fprintf(stderr, "policy-server: invalid configuration: %v\n", err)
		return 1
	}
	if *validate {
		fmt.Fprintf(stdout, "policy-server: configuration %s is valid\n", *configFile)
		return 0
	}

	level, _ := config.ParseLogLevel(cfg.LogLevel) // validated by Load
	logger := slog.New(slog.NewJSONHandler(stdout, &slog.HandlerOptions{Level: level})).With("source", "policy-server")
	slog.SetDefault(logger)

	info := buildinfo.Read()
	logger.Info("policy-server starting", "version", info.Version, "revision", info.Revision, "go_version", info.GoVersion)
	if err := serve(cfg, tlsConfig, *migrateOnly, info, logger); err != nil {
		logger.Error("policy-server stopped", "error", err)
		return 1
	}
	return 0
}

func serve(cfg *config.Config, tlsConfig *tls.Config, migrateOnly bool, info buildinfo.Info, logger *slog.Logger) error {
	db, err := openDB(cfg.Database)
	if err != nil {
		return err
	}
	defer db.Close()

	// Migrations take an advisory lock, so replicas starting together apply them once.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := store.Migrate(ctx, db); err != nil {
		return fmt.Errorf("migrating the database: %w", err)
	}
	logger.Info("database migrations applied")
	if migrateOnly {
		return nil
	}

	st, err := store.New(db, store.Options{TagLength: cfg.TagLength, Logger: logger.With("component", "store"), QueryTimeout: cfg.RequestTimeout()})
	if err != nil {
		return err
	}
	if err := st.CheckTagLength(ctx); err != nil {
		return fmt.Errorf("field \"tag_length\": %w", err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(buildmetric.New("netman_server_build_info", info))
	cc, err := server.NewCloudController(cfg, st, reg, logger)
	if err != nil {
		return err
	}
	var ccParts externalapi.CloudController
	var extra grouper.Members
	if cc != nil {
		ccParts, extra = cc.API, cc.Members
	}
	routes, err := externalapi.Configure(ctx, cfg, st, ccParts, logger)
	if err != nil {
		return err
	}
	cancel()

	members, err := server.Members(server.Deps{
		Config: cfg, TLS: tlsConfig, DB: db, Store: st, DSN: cfg.Database.DSN(), Logger: logger, Registry: reg,
		ExternalRoutes: routes.External, ExternalTLS: routes.ExternalTLS, Extra: extra,
	})
	if err != nil {
		return err
	}
	proc := ifrit.Invoke(sigmon.New(grouper.NewOrdered(syscall.SIGTERM, members)))
	logger.Info("policy-server started")
	if err := <-proc.Wait(); err != nil {
		return err
	}
	logger.Info("policy-server stopped")
	return nil
}

// openDB opens the pool with the configured limits. The connection string is never
// logged or put into an error.
func openDB(d config.Database) (*sql.DB, error) {
	db, err := sql.Open("postgres", d.DSN())
	if err != nil {
		return nil, errors.New("opening the database: invalid connection_string")
	}
	db.SetMaxOpenConns(d.MaxOpenConnections)
	db.SetMaxIdleConns(d.MaxIdleConnections)
	db.SetConnMaxLifetime(time.Duration(d.ConnectionsMaxLifetimeSeconds) * time.Second)
	return db, nil
}
