package crosscell_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	"netman/internal/testsupport/foundation"
	"netman/lib/rules/rulestest"
)

// Two agent poll intervals (1 s, ±10% jitter), the server's one-second freshness, and
// room for iptables-restore on a loaded machine.
const converge = 10 * time.Second

// newApp is an app guid no other test uses.
func newApp(t testing.TB) string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

// container creates a container of app on cell i (1-based), serving "ok" on TCP and UDP
// port 8080 and 9090, removed when the test ends.
func container(t *testing.T, f *foundation.Foundation, i int, app string) (*foundation.Container, ns.NetNS) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	ct, err := f.Cells[i-1].AddContainer(ctx, "x"+app[:8], app)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := ct.Delete(context.Background()); err != nil {
			t.Errorf("deleting %s: %v", ct.Name, err)
		}
	})
	n, err := ns.GetNS("/run/netns/" + ct.NS)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	rulestest.Serve(t, n, 8080)
	rulestest.Serve(t, n, 9090)
	return ct, n
}

func addr(ct *foundation.Container, port int) string {
	return ct.IP + ":" + strconv.Itoa(port)
}

// policy runs `netman policies add|remove` for src -> dst (also from a cleanup, when the
// test's context has ended).
func policy(t *testing.T, f *foundation.Foundation, verb, src, dst, proto string, port int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := f.Netman(ctx, "policies", verb, src, dst, "--protocol", proto, "--port", strconv.Itoa(port)); err != nil {
		t.Error(err)
	}
}

// reach is one probe; a timeout is an error (rules reject, they never drop).
func reach(t *testing.T, from ns.NetNS, proto, to string) bool {
	t.Helper()
	ok, err := rulestest.Reach(from, proto, to, 3*time.Second)
	if err != nil {
		t.Errorf("%s %s: %v", proto, to, err)
	}
	return ok
}

// until probes until the verdict is want, failing after converge.
func until(t *testing.T, from ns.NetNS, proto, to string, want bool) time.Duration {
	t.Helper()
	return rulestest.Until(t, from, proto, to, want, converge)
}
