// Package buildmetric exports a build's Info as the Prometheus convention's info
// metric: a gauge of value 1 whose labels carry the version, so dashboards and alerts
// can join it to the other series of the same process or count the versions running.
package buildmetric

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"netman/lib/buildinfo"
)

// New returns the gauge NAME{version,revision,modified,goversion} 1 for info.
// NAME ends in _build_info (netman_server_build_info, netman_agent_build_info).
func New(name string, info buildinfo.Info) prometheus.Collector {
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: name,
		Help: "The build of this process (always 1): version, VCS revision, whether the tree was modified, Go version.",
		ConstLabels: prometheus.Labels{
			"version":   info.Version,
			"revision":  info.Revision,
			"modified":  strconv.FormatBool(info.Modified),
			"goversion": info.GoVersion,
		},
	})
	g.Set(1)
	return g
}
