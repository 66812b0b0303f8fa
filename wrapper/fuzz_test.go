package wrapper

import (
	"errors"
	"testing"

	"github.com/containernetworking/cni/pkg/types"

	"netman/lib/mtu"
)

// FuzzLoadConfig: whatever the runtime sends, LoadConfig answers with a config or a CNI
// error, never a panic, and a config it accepts renders a delegate configuration.
func FuzzLoadConfig(f *testing.F) {
	f.Add([]byte(specExample))
	f.Add([]byte(`{"name":"n","datastore":"/d","delegate":{"type":"bridge"},"mtu":1450}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := LoadConfig(b)
		if err != nil {
			var e *types.Error
			if !errors.As(err, &e) || e.Code == 0 || e.Msg == "" {
				t.Fatalf("error without a CNI code: %v", err)
			}
			return
		}
		if c.Datastore == "" || c.DelegateType() == "" {
			t.Fatalf("accepted a config without datastore or delegate type: %s", b)
		}
		if c.MTU != 0 && c.MTU < mtu.Minimum {
			t.Fatalf("accepted mtu %d", c.MTU)
		}
		for _, opts := range []delegateOptions{{}, {mtu: true, prevResult: true, validAttachments: true}} {
			if _, err := c.delegateConf(opts, func(mtu.Underlay) (int, error) { return 1500, nil }); err != nil {
				var e *types.Error
				if !errors.As(err, &e) || e.Code == 0 {
					t.Fatalf("delegate config error without a CNI code: %v", err)
				}
			}
		}
	})
}
