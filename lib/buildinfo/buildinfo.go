// Package buildinfo says which build a binary is: the version stamped at link time
// (`make build`, the BOSH packaging) plus what the Go toolchain recorded in the binary
// (module version, VCS revision, Go version). Every netman binary answers --version
// from it, and the server and the agent log it at start and export it as a metric.
package buildinfo

import (
	"fmt"
	"runtime/debug"
	"strings"
)

// stamp is set by the linker: -ldflags "-X netman/lib/buildinfo.stamp=VERSION".
// `make build` stamps `git describe`; the BOSH packaging stamps the package's
// name and fingerprint (BOSH_PACKAGE_NAME/BOSH_PACKAGE_VERSION), which identify
// the source it was compiled from.
var stamp string

// Info describes one build.
type Info struct {
	// Version is the stamped version, else the module version the toolchain
	// recorded (a `go install netman/cmd/x@v1.2.3` build), else "dev".
	Version string `json:"version"`
	// Revision is the VCS commit the binary was built from, when the toolchain
	// saw one (not in the BOSH packaging, whose source has no .git).
	Revision string `json:"revision,omitempty"`
	// Modified says the working tree had uncommitted changes.
	Modified bool `json:"modified,omitempty"`
	// GoVersion is the toolchain that built the binary.
	GoVersion string `json:"go_version"`
}

// Read returns the running binary's Info.
func Read() Info {
	bi, ok := debug.ReadBuildInfo()
	return fromBuildInfo(stamp, bi, ok)
}

func fromBuildInfo(stamped string, bi *debug.BuildInfo, ok bool) Info {
	info := Info{Version: strings.TrimSpace(stamped), GoVersion: "unknown"}
	if ok {
		info.GoVersion = bi.GoVersion
		if info.Version == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			info.Version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				info.Revision = s.Value
			case "vcs.modified":
				info.Modified = s.Value == "true"
			}
		}
	}
	if info.Version == "" {
		info.Version = "dev"
	}
	return info
}

// String is the one-line form --version prints after the program's name:
// "v1.2.0-3-gabc1234 (revision abc1234..., modified, go1.26.0)".
func (i Info) String() string {
	var b strings.Builder
	b.WriteString(i.Version)
	b.WriteString(" (")
	if i.Revision != "" {
		fmt.Fprintf(&b, "revision %s, ", i.Revision)
		if i.Modified {
			b.WriteString("modified, ")
		}
	}
	b.WriteString(i.GoVersion)
	b.WriteString(")")
	return b.String()
}

// Line is what `PROGRAM --version` prints: "PROGRAM " + String().
func Line(program string) string { return program + " " + Read().String() }
