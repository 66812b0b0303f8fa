package wrapper

import (
	"context"
	"errors"
	"slices"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"
)

// withDelegateVersion renders the delegate's configuration and runs one delegate command
// with it, in the highest CNI version the runtime and the delegate both speak.
//
// The runtime's own version comes first: both speak it in the common case, and trying it
// costs nothing extra. Only when the delegate refuses it (code 1, before doing anything)
// does the wrapper ask the delegate's VERSION and run the command once more in the
// highest version it supports that is not newer than the runtime's (or, for a runtime
// older than anything the delegate speaks, the delegate's oldest). The caller converts
// the result back to the runtime's version. So a 1.x runtime can use the bundled flannel,
// which speaks 0.4.0 at most. It returns the configuration that was last run.
func (p *Plugin) withDelegateVersion(ctx context.Context, cfg *Config, opts delegateOptions,
	run func(conf []byte) error) ([]byte, error) {
	conf, err := cfg.delegateConf(opts, p.HostMTU)
	if err != nil {
		return nil, err
	}
	err = run(conf)
	var e *types.Error
	if !errors.As(err, &e) || e.Code != types.ErrIncompatibleCNIVersion {
		return conf, err
	}
	info, verr := p.delegateVersions(ctx, cfg)
	if verr != nil {
		return conf, err
	}
	v, ok := commonVersion(cfg.CNIVersion, info.SupportedVersions())
	if !ok || v == cfg.CNIVersion {
		return conf, err
	}
	opts.cniVersion = v
	if conf, err = cfg.delegateConf(opts, p.HostMTU); err != nil {
		return nil, err
	}
	return conf, run(conf)
}

// commonVersion picks the version to call a delegate that speaks supported with, for a
// runtime that asked for want.
func commonVersion(want string, supported []string) (string, bool) {
	var best, oldest string
	for _, v := range supported {
		if _, _, _, err := version.ParseVersion(v); err != nil {
			continue
		}
		if ok, _ := version.GreaterThanOrEqualTo(want, v); ok {
			if best == "" || newer(v, best) {
				best = v
			}
		}
		if oldest == "" || newer(oldest, v) {
			oldest = v
		}
	}
	if best != "" {
		return best, true
	}
	return oldest, oldest != ""
}

func newer(a, b string) bool {
	ok, _ := version.GreaterThan(a, b)
	return ok
}

// delegateVersions asks the delegate (CNI VERSION) which versions it speaks.
func (p *Plugin) delegateVersions(ctx context.Context, cfg *Config) (version.PluginInfo, error) {
	exec := p.exec()
	path, err := exec.FindInPath(cfg.DelegateType(), cniPath())
	if err != nil {
		return nil, types.NewError(ErrDelegate, "finding delegate "+cfg.DelegateType(), err.Error())
	}
	info, err := invoke.GetVersionInfo(ctx, path, exec)
	if err != nil {
		return nil, delegateError(cfg.DelegateType(), "VERSION", err)
	}
	return info, nil
}

// delegateSpeaks asks the delegate (CNI VERSION) whether it supports the runtime's
// version. GC and STATUS only exist from 1.1.0 on; an older delegate such as flannel
// would reject them, and has nothing to collect or report anyway.
func (p *Plugin) delegateSpeaks(ctx context.Context, cfg *Config) (bool, error) {
	info, err := p.delegateVersions(ctx, cfg)
	if err != nil {
		return false, err
	}
	return slices.Contains(info.SupportedVersions(), cfg.CNIVersion), nil
}
