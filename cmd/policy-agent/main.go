// Command policy-agent enforces netman's policies on one cell. See policy-agent/agent for
// the loop and lib/rules for the iptables layout.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"syscall"
	"time"

	"github.com/tedsuo/ifrit"
	"github.com/tedsuo/ifrit/grouper"
	"github.com/tedsuo/ifrit/sigmon"

	"netman/lib/buildinfo"
	"netman/lib/buildinfo/buildmetric"
	"netman/lib/containerrules"
	"netman/lib/httpserver"
	"netman/lib/logattr"
	"netman/lib/policyclient"
	"netman/lib/rules"
	"netman/policy-agent/agent"
	"netman/policy-agent/asg"
	"netman/policy-agent/config"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("policy-agent", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, `Usage: policy-agent -config-file FILE [-validate-config]
       policy-agent -version

Polls the policy server's internal API (mutual TLS) for the policies of the containers in
the wrapper's datastore and enforces them with iptables in the network namespace it runs
in. GET /health on 127.0.0.1:health_check_port, Prometheus /metrics on
127.0.0.1:debug_server_port, GET /force-policy-poll-cycle (run a cycle now; the CNI
wrapper calls it after every ADD and DEL) on 127.0.0.1:force_policy_poll_cycle_port. SIGTERM or SIGINT stops it; the applied rules stay in place.

`)
		fs.PrintDefaults()
	}
	configFile := fs.String("config-file", "", "path of the JSON configuration `file` (required)")
	validate := fs.Bool("validate-config", false, "check the configuration file (not the files it names), then exit")
	showVersion := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *showVersion {
		fmt.Fprintln(stdout, buildinfo.Line("policy-agent"))
		return 0
	}
	if *configFile == "" || fs.NArg() > 0 {
		fs.Usage()
		return 2
	}
	cfg, err := config.Load(*configFile)
	if err != nil {
		fmt.Fprintf(stderr, "policy-agent: invalid configuration: %v\n", err)
		return 1
	}
	if *validate {
		fmt.Fprintf(stdout, "policy-agent: configuration %s is valid\n", *configFile)
		return 0
	}
	tlsConfig, err := cfg.CheckFiles()
	if err != nil {
		fmt.Fprintf(stderr, "policy-agent: invalid configuration: %v\n", err)
		return 1
	}

	level, _ := config.ParseLogLevel(cfg.LogLevel) // validated by Load
	logger := slog.New(slog.NewJSONHandler(stdout, &slog.HandlerOptions{Level: level})).With("source", "policy-agent")
	slog.SetDefault(logger)
	info := buildinfo.Read()
	logger.Info("policy-agent starting", "version", info.Version, "revision", info.Revision, "go_version", info.GoVersion)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	err = rules.EnableBridgeNetfilter(ctx)
	cancel()
	if err != nil {
		logger.Error("cannot enforce policies between containers on this cell", "error", err.Error())
		return 1
	}
	enforcer, err := rules.NewEnforcer(cfg.IPTablesLockFile)
	if err != nil {
		logger.Error("cannot enforce policies", "error", err.Error())
		return 1
	}
	metrics := agent.NewMetrics()
	metrics.Registry.MustRegister(buildmetric.New("netman_agent_build_info", info))
	client, err := policyclient.New(cfg.PolicyServerURL, tlsConfig, cfg.RequestTimeout(), policyclient.WithObserver(metrics))
	if err != nil {
		logger.Error("invalid configuration", "error", err.Error())
		return 1
	}
	a, err := agent.New(agent.Options{
		Datastore: cfg.Datastore, PollInterval: cfg.PollInterval(), Overlay: cfg.Overlay(),
		Source: client, Enforcer: enforcer, Logger: logger, Metrics: metrics,
	})
	if err != nil {
		logger.Error("invalid configuration", "error", err.Error())
		return 1
	}

	members := grouper.Members{
		{Name: "debug-server", Runner: httpServer("debug", cfg.DebugServerPort, metrics.MetricsHandler(), logger)},
		{Name: "health-server", Runner: httpServer("health", cfg.HealthCheckPort, a.HealthHandler(), logger)},
		{Name: "agent", Runner: a},
		{Name: "force-poll-server", Runner: httpServer("force-poll", cfg.ForcePolicyPollCyclePort, a.ForcePollHandler(), logger)},
	}
	if cfg.EnableASGSyncing {
		syncer, err := asgSyncer(cfg, client, logger)
		if err != nil {
			logger.Error("cannot apply security groups", "error", err.Error())
			return 1
		}
		members = append(members, grouper.Member{Name: "asg-syncer", Runner: syncer})
	}
	proc := ifrit.Invoke(sigmon.New(grouper.NewOrdered(syscall.SIGTERM, members)))
	logger.Info("policy-agent started", "policy_server_url", cfg.PolicyServerURL,
		"datastore", cfg.Datastore, logattr.Millis("poll_interval_ms", cfg.PollInterval()),
		"overlay_interface", cfg.OverlayInterface, "vxlan_gbp", cfg.VXLANGBP,
		logattr.Millis("degraded_after_ms", agent.DefaultDegradedAfter))
	if err := <-proc.Wait(); err != nil {
		logger.Error("policy-agent stopped", "error", err.Error())
		return 1
	}
	logger.Info("policy-agent stopped")
	return 0
}

// asgSyncer applies the policy server's security groups to the containers' egress chains.
func asgSyncer(cfg *config.Config, client *policyclient.Client, logger *slog.Logger) (*asg.Syncer, error) {
	overlay, egress, err := cfg.EgressSettings() // validated by Load
	if err != nil {
		return nil, err
	}
	applier, err := containerrules.NewApplier(cfg.IPTablesLockFile)
	if err != nil {
		return nil, err
	}
	return asg.New(asg.Options{
		Datastore: cfg.Datastore, Interval: cfg.ASGPollInterval(), DatastoreCheck: cfg.PollInterval(), Source: client, Writer: applier,
		Overlay: overlay, FlannelSubnetFile: cfg.Egress.FlannelSubnetFile, Egress: egress, Logger: logger.With("component", "asg-syncer"),
	})
}

// httpServer serves handler on 127.0.0.1:port until signalled. It is not ifrit's
// http_server because that one sets no timeouts: a client that never finishes its request
// headers would hold a connection forever.
func httpServer(name string, port int, handler http.Handler, logger *slog.Logger) ifrit.Runner {
	return &httpserver.Runner{
		Name: name,
		Server: &http.Server{
			Addr:              net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
			Handler:           handler,
			ReadHeaderTimeout: 5 * time.Second,
			ReadTimeout:       10 * time.Second,
			WriteTimeout:      30 * time.Second,
			IdleTimeout:       120 * time.Second,
		},
		Drain:  5 * time.Second,
		Logger: logger,
	}
}
