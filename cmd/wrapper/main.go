// Command wrapper is the netman CNI plugin that garden-external-networker runs for every
// container: it delegates to bridge or flannel and records the container for policy agents.
package main

import (
	"github.com/containernetworking/cni/pkg/skel"

	"netman/wrapper"
)

func main() {
	skel.PluginMainFuncs(wrapper.New().Funcs(), wrapper.VersionInfo, "CNI plugin wrapper (netman)")
}
