package agent_test

import (
	"log/slog"
	"strings"
	"testing"

	"netman/internal/testsupport/syncbuf"
	"netman/lib/models"
	"netman/lib/rules"
	"netman/policy-agent/agent"
)

// TestGBPRefusesWideTags: with VXLAN GBP on, a policy whose tags are wider than the 16
// bits GBP carries is left out with an error naming the tag, the others are enforced;
// without GBP the same policy is enforced.
func TestGBPRefusesWideTags(t *testing.T) {
	for _, gbp := range []bool{true, false} {
		t.Run(map[bool]string{true: "gbp", false: "no gbp"}[gbp], func(t *testing.T) {
			var logs syncbuf.Buffer
			f := newFixture(t, func(o *agent.Options) {
				o.Overlay = rules.Overlay{Interface: "flannel.1", GBP: gbp}
				o.Logger = slog.New(slog.NewJSONHandler(&logs, nil))
			})
			f.add(t, "a", "10.0.0.2", "app-a")
			f.add(t, "b", "10.0.0.3", "app-b")
			f.add(t, "c", "10.0.0.4", "app-c")
			f.srv.Set([]models.Policy{
				pol("app-a", "0001", "app-b", "0002", 8080),
				pol("app-a", "0001", "app-c", "10003", 9090), // 17 bits
			})
			f.expect(t, "first cycle", agent.Applied)
			rules := f.save(t)
			if !strings.Contains(rules, "--dport 8080") {
				t.Errorf("the 16-bit policy is not enforced:\n%s", rules)
			}
			if !strings.Contains(rules, "-i flannel.1 -j netman-deny") {
				t.Errorf("no overlay reject rule:\n%s", rules)
			}
			wide := strings.Contains(rules, "--dport 9090")
			refused := strings.Contains(logs.String(), "tag 10003: wider than the 16 bits VXLAN GBP carries")
			if gbp && (wide || !refused) {
				t.Errorf("with GBP the 17-bit policy is enforced=%v, refused in the log=%v:\n%s\n%s", wide, refused, rules, logs.String())
			}
			if !gbp && (!wide || refused) {
				t.Errorf("without GBP the 17-bit policy is enforced=%v, refused=%v", wide, refused)
			}
		})
	}
}
