package buildinfo

import (
	"runtime/debug"
	"testing"
)

func TestFromBuildInfo(t *testing.T) {
	vcs := []debug.BuildSetting{{Key: "vcs.revision", Value: "0123456789abcdef"}, {Key: "vcs.modified", Value: "true"}}
	for _, c := range []struct {
		name    string
		stamped string
		bi      *debug.BuildInfo
		ok      bool
		want    string
	}{
		{"stamped wins", "v1.2.0-3-gabc", &debug.BuildInfo{GoVersion: "go1.26.0", Main: debug.Module{Version: "v1.0.0"}, Settings: vcs}, true,
			"v1.2.0-3-gabc (revision 0123456789abcdef, modified, go1.26.0)"},
		{"module version of go install", "", &debug.BuildInfo{GoVersion: "go1.26.0", Main: debug.Module{Version: "v1.0.0"}}, true,
			"v1.0.0 (go1.26.0)"},
		{"devel is no version", "", &debug.BuildInfo{GoVersion: "go1.26.0", Main: debug.Module{Version: "(devel)"}}, true,
			"dev (go1.26.0)"},
		{"BOSH package fingerprint", "policy-server/5f1e", &debug.BuildInfo{GoVersion: "go1.26.0"}, true,
			"policy-server/5f1e (go1.26.0)"},
		{"no build info", "", nil, false, "dev (unknown)"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := fromBuildInfo(c.stamped, c.bi, c.ok).String(); got != c.want {
				t.Errorf("got %q, want %q", got, c.want)
			}
		})
	}
}
