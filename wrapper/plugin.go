package wrapper

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"

	"netman/lib/datastore"
	"netman/lib/mtu"
)

// Plugin implements the CNI commands. The zero value is not ready; use New.
type Plugin struct {
	// Exec runs delegate plugins; nil runs the binaries in CNI_PATH.
	Exec invoke.Exec
	// HostMTU detects the underlay MTU.
	HostMTU func(mtu.Underlay) (int, error)
	// Stdout receives ADD results.
	Stdout io.Writer
	Logger *slog.Logger
}

// New returns a Plugin that runs real delegates and logs JSON to stderr (the runtime
// keeps a plugin's stderr; stdout is reserved for the result).
func New() *Plugin {
	return &Plugin{
		HostMTU: mtu.HostMTU,
		Stdout:  os.Stdout,
		Logger:  slog.New(slog.NewJSONHandler(os.Stderr, nil)).With("plugin", "wrapper"),
	}
}

// Funcs are the plugin's commands for skel.
func (p *Plugin) Funcs() skel.CNIFuncs {
	return skel.CNIFuncs{Add: p.Add, Del: p.Del, Check: p.Check, GC: p.GC, Status: p.Status}
}

// VersionInfo lists every CNI version the wrapper accepts; results are converted to the
// version the runtime asked for.
var VersionInfo = version.All

func load(args *skel.CmdArgs) (*Config, *datastore.Store, error) {
	cfg, err := LoadConfig(args.StdinData)
	if err != nil {
		return nil, nil, err
	}
	store, err := datastore.New(cfg.Datastore, datastore.Options{Owner: cfg.DatastoreFileOwner, Group: cfg.DatastoreFileGroup})
	if err != nil {
		return nil, nil, types.NewError(types.ErrInvalidNetworkConfig, "invalid wrapper network config", err.Error())
	}
	return cfg, store, nil
}

// Add runs the delegate's ADD, records the container and prints the delegate's result.
// When the delegate fails, the record cannot be written or the result cannot be given in
// the runtime's version, the delegate's DEL undoes the ADD, so no IP or interface is left
// behind for a container the runtime considers failed. The whole ADD holds the
// container's lock, so a DEL of the same container waits for it to finish.
func (p *Plugin) Add(args *skel.CmdArgs) error {
	ctx := context.Background()
	cfg, store, err := load(args)
	if err != nil {
		return err
	}
	unlock, err := store.LockHandle(ctx, args.ContainerID)
	if err != nil {
		return datastoreError("locking container "+args.ContainerID, err)
	}
	defer unlock()
	var result types.Result
	conf, err := p.withDelegateVersion(ctx, cfg, delegateOptions{mtu: true}, func(conf []byte) error {
		var err error
		result, err = invoke.DelegateAdd(ctx, cfg.DelegateType(), conf, p.Exec)
		return err
	})
	if conf == nil {
		return err // the delegate's configuration could not be made; nothing ran
	}
	if err != nil {
		derr := delegateError(cfg.DelegateType(), "ADD", err)
		if derr.Code == types.ErrIncompatibleCNIVersion {
			// Rejected before doing anything; its DEL would be rejected the same way.
			return derr
		}
		// A delegate may fail halfway (bridge keeps the veth when IPAM fails); its DEL
		// removes what it made, whether or not the runtime follows up with a DEL.
		return p.undoAdd(ctx, cfg, conf, derr)
	}
	ip, err := resultIP(result)
	if err != nil {
		return p.undoAdd(ctx, cfg, conf, types.NewError(ErrNoIP, "delegate result has no IP to record", err.Error()))
	}
	result, nerr := p.addNetRules(ctx, cfg, args.ContainerID, result, ip)
	if nerr != nil {
		return p.undoAdd(ctx, cfg, conf, nerr)
	}
	metadata := cfg.Metadata
	if metadata == nil {
		metadata = map[string]any{}
	}
	rec := datastore.Container{Handle: args.ContainerID, IP: ip.String(), Metadata: metadata}
	dropped, err := store.Add(ctx, rec)
	if err != nil {
		return p.undoAdd(ctx, cfg, conf, p.undoNetRules(ctx, cfg, args.ContainerID, datastoreError("recording container", err)))
	}
	if len(dropped) > 0 {
		p.Logger.Warn("dropped stale records holding the new container's IP", "container", args.ContainerID, "ip", rec.IP, "dropped", dropped)
	}
	out, err := result.GetAsVersion(cfg.CNIVersion)
	if err != nil {
		cause := types.NewError(types.ErrIncompatibleCNIVersion, "converting delegate result to CNI "+cfg.CNIVersion, err.Error())
		if _, rerr := store.Remove(ctx, args.ContainerID); rerr != nil {
			cause.Details = fmt.Sprintf("%s; removing its record also failed (a DEL removes it): %v", cause.Details, rerr)
		}
		return p.undoAdd(ctx, cfg, conf, p.undoNetRules(ctx, cfg, args.ContainerID, cause))
	}
	p.nudge(ctx, cfg, "ADD", args.ContainerID)
	return out.PrintTo(p.Stdout)
}

func (p *Plugin) undoAdd(ctx context.Context, cfg *Config, conf []byte, cause *types.Error) error {
	if err := invoke.DelegateDel(ctx, cfg.DelegateType(), conf, p.Exec); err != nil {
		p.Logger.Error("undoing delegate ADD", "delegate", cfg.DelegateType(), "cause", cause.Msg, "error", err)
		cause.Details = fmt.Sprintf("%s; undoing the delegate ADD also failed: %v", cause.Details, err)
	}
	return cause
}

// delegate runs a delegate command that returns no result, in a CNI version the delegate
// speaks.
func (p *Plugin) delegate(ctx context.Context, cfg *Config, command string, opts delegateOptions,
	run func(context.Context, string, []byte, invoke.Exec) error) error {
	conf, err := p.withDelegateVersion(ctx, cfg, opts, func(conf []byte) error {
		return run(ctx, cfg.DelegateType(), conf, p.Exec)
	})
	if conf == nil {
		return err
	}
	if err != nil {
		return delegateError(cfg.DelegateType(), command, err)
	}
	return nil
}

// resultIP picks the address to record: the first IPv4 address, else the first one.
func resultIP(r types.Result) (net.IP, error) {
	res, err := current.NewResultFromResult(r)
	if err != nil {
		return nil, err
	}
	if len(res.IPs) == 0 {
		return nil, errors.New("no ips in result")
	}
	for _, ipc := range res.IPs {
		if v4 := ipc.Address.IP.To4(); v4 != nil {
			return v4, nil
		}
	}
	return res.IPs[0].Address.IP, nil
}

// Del removes the record and runs the delegate's DEL. Both tolerate a container that is
// already gone, so DEL can be repeated. DEL checks only what it uses (LoadDelConfig), and
// runs the delegate's DEL even when the record cannot be removed, so the runtime always
// gets the interface and the IP back. A record left behind cannot give its policies to
// another container: the next ADD that gets the IP drops it, and agents treat an IP
// claimed twice as closed. The error then names what is left, and a DEL after the cause
// is fixed removes it.
func (p *Plugin) Del(args *skel.CmdArgs) error {
	ctx := context.Background()
	cfg, err := LoadDelConfig(args.StdinData)
	if err != nil {
		return err
	}
	// The container's lock is held to the end, so an ADD of the same container runs
	// either wholly before or wholly after this DEL.
	var recordErr *types.Error
	store, err := datastore.New(cfg.Datastore, datastore.Options{Owner: cfg.DatastoreFileOwner, Group: cfg.DatastoreFileGroup})
	if err != nil {
		recordErr = types.NewError(types.ErrInvalidNetworkConfig, "invalid wrapper network config", err.Error())
	} else {
		// Without the lock (the datastore directory is unusable) DEL goes on: it must
		// not wait for what an operator has to fix, and no ADD can take the lock either.
		if unlock, err := store.LockHandle(ctx, args.ContainerID); err != nil {
			p.Logger.Warn("deleting without the container's lock", "container", args.ContainerID, "error", err.Error())
		} else {
			defer unlock()
		}
		if _, err := store.Remove(ctx, args.ContainerID); err != nil {
			recordErr = datastoreError("removing container record", err)
		}
	}
	// The container's iptables rules go as well. When they cannot, the delegate's DEL
	// still runs: rules left behind are shadowed by those of the next container that
	// gets the IP (inserted above them), and a DEL once iptables works removes them.
	rulesErr := p.delNetRules(ctx, cfg, args.ContainerID)
	delErr := p.delegate(ctx, cfg, "DEL", delegateOptions{}, invoke.DelegateDel)
	if recordErr == nil {
		// The record is gone: the agent can drop the container's rules now.
		p.nudge(ctx, cfg, "DEL", args.ContainerID)
		if rulesErr == nil {
			return delErr
		}
		rulesErr.Details = fmt.Sprintf("%s; left behind: the iptables rules of container %s; run DEL again once iptables works", rulesErr.Details, args.ContainerID)
		if delErr != nil {
			rulesErr.Details = fmt.Sprintf("%s; the delegate's DEL failed too: %v", rulesErr.Details, delErr)
		}
		return rulesErr
	}
	left := fmt.Sprintf("left behind: the record of container %s in %s", args.ContainerID, cfg.Datastore)
	if rulesErr != nil {
		left = fmt.Sprintf("%s and its iptables rules (%s)", left, rulesErr.Details)
	}
	if delErr == nil {
		recordErr.Details = fmt.Sprintf("%s; %s (the delegate's DEL ran: interface and IP are released); run DEL again once the datastore is writable", recordErr.Details, left)
	} else {
		recordErr.Details = fmt.Sprintf("%s; %s, and whatever the delegate's DEL did not remove (%v)", recordErr.Details, left, delErr)
	}
	return recordErr
}

// Check verifies that the container has a record with an IP of the runtime's prevResult,
// then runs the delegate's CHECK. The spec makes prevResult mandatory for CHECK: without
// it there is nothing to check against, which is an error, not a pass.
func (p *Plugin) Check(args *skel.CmdArgs) error {
	ctx := context.Background()
	cfg, store, err := load(args)
	if err != nil {
		return err
	}
	if len(cfg.PrevResult) == 0 {
		return types.NewError(types.ErrInvalidNetworkConfig, "CHECK without prevResult",
			"the runtime must pass the result of the container's ADD as prevResult (CNI spec, CHECK)")
	}
	rec, ok, err := store.Get(args.ContainerID)
	if err != nil {
		return datastoreError("reading container record", err)
	}
	if !ok {
		return types.NewError(ErrNoRecord, "no datastore record for container", args.ContainerID)
	}
	if err := recordMatches(cfg, rec); err != nil {
		return err
	}
	return p.delegate(ctx, cfg, "CHECK", delegateOptions{mtu: true, prevResult: true}, invoke.DelegateCheck)
}

func recordMatches(cfg *Config, rec datastore.Container) error {
	prev, err := version.NewResult(cfg.CNIVersion, cfg.PrevResult)
	if err != nil {
		return types.NewError(types.ErrDecodingFailure, "decoding prevResult", err.Error())
	}
	res, err := current.NewResultFromResult(prev)
	if err != nil {
		return types.NewError(types.ErrDecodingFailure, "decoding prevResult", err.Error())
	}
	recIP := net.ParseIP(rec.IP)
	for _, ipc := range res.IPs {
		if ipc.Address.IP.Equal(recIP) {
			return nil
		}
	}
	return types.NewError(ErrNoRecord, "datastore record has another IP than prevResult",
		fmt.Sprintf("container %s recorded with %s", rec.Handle, rec.IP))
}

// GC drops the records of containers that are not among the runtime's valid attachments,
// then passes GC on to a delegate that speaks the version the runtime used.
func (p *Plugin) GC(args *skel.CmdArgs) error {
	ctx := context.Background()
	cfg, store, err := load(args)
	if err != nil {
		return err
	}
	if cfg.ValidAttachments == nil {
		// Without the list every record would look stale.
		return types.NewError(types.ErrInvalidNetworkConfig, "GC without cni.dev/valid-attachments", "")
	}
	valid := make(map[string]bool, len(*cfg.ValidAttachments))
	for _, a := range *cfg.ValidAttachments {
		valid[a.ContainerID] = true
	}
	removed, err := store.Retain(ctx, func(handle string) bool { return valid[handle] })
	if err != nil {
		return datastoreError("removing stale records", err)
	}
	if len(removed) > 0 {
		p.Logger.Info("removed stale container records", "count", len(removed))
	}
	for _, h := range removed {
		if err := p.delNetRules(ctx, cfg, h); err != nil {
			return err
		}
	}
	ok, err := p.delegateSpeaks(ctx, cfg)
	if err != nil || !ok {
		return err
	}
	return p.delegate(ctx, cfg, "GC", delegateOptions{validAttachments: true}, invoke.DelegateGC)
}

// Status reports whether an ADD could succeed now: the datastore and its version file
// must be readable (every write bumps the version) and a delegate that knows STATUS
// must report itself ready.
func (p *Plugin) Status(args *skel.CmdArgs) error {
	ctx := context.Background()
	cfg, _, err := load(args)
	if err != nil {
		return err
	}
	if _, _, err := datastore.Snapshot(cfg.Datastore); err != nil {
		return types.NewError(types.ErrPluginNotAvailable, "datastore unusable", err.Error())
	}
	ok, err := p.delegateSpeaks(ctx, cfg)
	if err != nil || !ok {
		return err
	}
	return p.delegate(ctx, cfg, "STATUS", delegateOptions{}, invoke.DelegateStatus)
}

func (p *Plugin) exec() invoke.Exec {
	if p.Exec != nil {
		return p.Exec
	}
	return &invoke.DefaultExec{RawExec: &invoke.RawExec{Stderr: os.Stderr}}
}

func cniPath() []string { return filepath.SplitList(os.Getenv("CNI_PATH")) }
