// Command wrapper is the netman CNI plugin that garden-external-networker runs for every
// container: it delegates to bridge or flannel and records the container for policy agents.
package main

import (
	"fmt"
	"os"

	"github.com/containernetworking/cni/pkg/skel"

	"netman/lib/buildinfo"
	"netman/wrapper"
)

func main() {
	// An operator's question, not the runtime's: the runtime speaks through CNI_COMMAND
	// and never passes arguments, so this needs no CNI environment.
	if len(os.Args) == 2 && (os.Args[1] == "--version" || os.Args[1] == "-version") {
		fmt.Println(buildinfo.Line("wrapper"))
		return
	}
	skel.PluginMainFuncs(wrapper.New().Funcs(), wrapper.VersionInfo, "CNI plugin wrapper (netman) "+buildinfo.Read().String())
}
