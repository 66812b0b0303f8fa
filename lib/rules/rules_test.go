package rules_test

import (
	"slices"
	"strings"
	"testing"

	"netman/lib/models"
	"netman/lib/rules"
)

func policy(src, srcTag, dst, dstTag, proto string, start, end int) models.Policy {
	return models.Policy{
		Source:      models.Source{ID: src, Tag: srcTag},
		Destination: models.Destination{ID: dst, Tag: dstTag, Protocol: proto, Ports: models.Ports{Start: start, End: end}},
	}
}

const (
	est    = "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"
	toRej  = "-j netman-reject"
	brRej  = "-m physdev --physdev-is-bridged -j netman-deny"
	brFwd  = "-m physdev --physdev-is-bridged -j netman-closed"
	rejA   = "-s 10.0.0.2/32 -j netman-deny"
	rejB   = "-s 10.0.0.3/32 -j netman-deny"
	markA1 = "-s 10.0.0.2/32 -j MARK --set-xmark 0x1/0xffff"
	markB2 = "-s 10.0.0.3/32 -j MARK --set-xmark 0x2/0xffff"
)

var (
	a = rules.Container{Handle: "a", IP: "10.0.0.2", GroupID: "app-a"}
	b = rules.Container{Handle: "b", IP: "10.0.0.3/24", GroupID: "app-b"}
)

func TestBuild(t *testing.T) {
	closed := []string{est, toRej}
	deny := []string{"-p tcp -j REJECT --reject-with tcp-reset", "-j REJECT --reject-with icmp-port-unreachable"}
	tests := []struct {
		name       string
		containers []rules.Container
		policies   []models.Policy
		want       map[string][]string
		problems   int
	}{{
		name: "no containers: empty entry chain, nothing else enforced",
		want: map[string][]string{"netman-forward": nil, "netman-closed": closed, "netman-reject": nil},
	}, {
		name:       "containers without policies are closed to each other",
		containers: []rules.Container{b, a},
		want: map[string][]string{
			"netman-forward": {"-d 10.0.0.2/32 -j netman-closed", "-d 10.0.0.3/32 -j netman-closed"},
			"netman-closed":  closed,
			"netman-reject":  {rejA, rejB},
		},
	}, {
		name:       "a to b on tcp 8080: a marked, b admits the mark",
		containers: []rules.Container{a, b},
		policies:   []models.Policy{policy("app-a", "0001", "app-b", "0002", "tcp", 8080, 8080)},
		want: map[string][]string{
			"netman-forward": {markA1, markB2, "-d 10.0.0.2/32 -j netman-closed", "-d 10.0.0.3/32 -j netman-in-0002"},
			"netman-in-0002": {est, "-p tcp -m tcp --dport 8080 -m mark --mark 0x1/0xffff -j ACCEPT", toRej},
			"netman-closed":  closed,
			"netman-reject":  {rejA, rejB},
		},
	}, {
		name:       "port ranges, udp, duplicates and order from the server do not matter",
		containers: []rules.Container{b},
		policies: []models.Policy{
			policy("app-x", "0009", "app-b", "0002", "udp", 53, 53),
			policy("app-a", "0001", "app-b", "0002", "tcp", 9000, 9010),
			policy("app-a", "0001", "app-b", "0002", "tcp", 9000, 9010),
		},
		want: map[string][]string{
			"netman-forward": {markB2, "-d 10.0.0.3/32 -j netman-in-0002"},
			"netman-in-0002": {est,
				"-p tcp -m tcp --dport 9000:9010 -m mark --mark 0x1/0xffff -j ACCEPT",
				"-p udp -m udp --dport 53 -m mark --mark 0x9/0xffff -j ACCEPT", toRej},
			"netman-closed": closed,
			"netman-reject": {rejB},
		},
	}, {
		name:       "instances of one app share a chain",
		containers: []rules.Container{b, {Handle: "b2", IP: "10.0.0.4", GroupID: "app-b"}},
		policies:   []models.Policy{policy("app-a", "0001", "app-b", "0002", "tcp", 8080, 8080)},
		want: map[string][]string{
			"netman-forward": {markB2, "-s 10.0.0.4/32 -j MARK --set-xmark 0x2/0xffff",
				"-d 10.0.0.3/32 -j netman-in-0002", "-d 10.0.0.4/32 -j netman-in-0002"},
			"netman-in-0002": {est, "-p tcp -m tcp --dport 8080 -m mark --mark 0x1/0xffff -j ACCEPT", toRej},
			"netman-closed":  closed,
			"netman-reject":  {rejB, "-s 10.0.0.4/32 -j netman-deny"},
		},
	}, {
		name:       "policies between remote apps change nothing but the mask",
		containers: []rules.Container{a},
		policies:   []models.Policy{policy("app-x", "0A0001", "app-y", "0A0002", "tcp", 80, 80)},
		want: map[string][]string{
			"netman-forward": {"-d 10.0.0.2/32 -j netman-closed"},
			"netman-closed":  closed,
			"netman-reject":  {rejA},
		},
	}, {
		name:       "bad records are skipped and reported, the rest enforced",
		containers: []rules.Container{a, b, {Handle: "v6", IP: "fd00::1"}, {Handle: "junk", IP: "nope"}},
		policies: []models.Policy{
			policy("app-a", "0000", "app-b", "0002", "tcp", 80, 80),
			policy("app-a", "zz", "app-b", "0002", "tcp", 80, 80),
			policy("app-a", "0001", "app-b", "0002", "icmp", 80, 80),
			policy("app-a", "0001", "app-b", "0002", "tcp", 0, 80),
			policy("app-a", "0001", "app-b", "0002", "tcp", 90, 80),
			policy("app-a", "0001", "app-b", "0002", "tcp", 80, 65536),
			policy("app-a", "0001", "app-b", "123456789", "tcp", 80, 80),
			policy("app-a", "0001", "app-b", "0002", "udp", 8080, 8080),
		},
		want: map[string][]string{
			"netman-forward": {markA1, markB2, "-d 10.0.0.2/32 -j netman-closed", "-d 10.0.0.3/32 -j netman-in-0002"},
			"netman-in-0002": {est, "-p udp -m udp --dport 8080 -m mark --mark 0x1/0xffff -j ACCEPT", toRej},
			"netman-closed":  closed,
			"netman-reject":  {rejA, rejB},
		},
		problems: 9,
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, problems := rules.Build(tt.containers, tt.policies, rules.Overlay{})
			if len(problems) != tt.problems {
				t.Errorf("problems = %v, want %d of them", problems, tt.problems)
			}
			tt.want["netman-deny"] = deny
			tt.want["netman-forward"] = append(tt.want["netman-forward"], brFwd)
			tt.want["netman-reject"] = append([]string{brRej}, tt.want["netman-reject"]...)
			want := rules.Ruleset{Chains: tt.want}
			if !got.Equal(want) {
				t.Errorf("got\n%s\nwant\n%s", dump(got), dump(want))
			}
		})
	}
}

func TestBuildIsDeterministic(t *testing.T) {
	ps := []models.Policy{
		policy("app-a", "0001", "app-b", "0002", "tcp", 8080, 8080),
		policy("app-b", "0002", "app-a", "0001", "udp", 53, 53),
	}
	first, _ := rules.Build([]rules.Container{a, b}, ps, rules.Overlay{})
	slices.Reverse(ps)
	second, _ := rules.Build([]rules.Container{b, a}, ps, rules.Overlay{})
	if !first.Equal(second) {
		t.Fatalf("input order changed the rules:\n%s\n%s", dump(first), dump(second))
	}
	if n := first.RuleCount(); n != 18 {
		t.Errorf("RuleCount = %d, want 18", n)
	}
}

func TestBuildOneAddressTwoRecords(t *testing.T) {
	// A stale record of a deleted container whose address the runtime gave to a new one:
	// the agent cannot tell which is real, so the address gets neither record's policies.
	stale := rules.Container{Handle: "old", IP: "10.0.0.3", GroupID: "app-old"}
	ps := []models.Policy{
		policy("app-a", "0001", "app-b", "0002", "tcp", 8080, 8080),
		policy("app-b", "0002", "app-a", "0001", "tcp", 7070, 7070),
		policy("app-a", "0001", "app-old", "0003", "tcp", 9090, 9090),
	}
	first, problems := rules.Build([]rules.Container{a, b, stale}, ps, rules.Overlay{})
	second, _ := rules.Build([]rules.Container{stale, a, b}, ps, rules.Overlay{})
	if !first.Equal(second) {
		t.Fatalf("record order changed the rules:\n%s\n%s", dump(first), dump(second))
	}
	if len(problems) != 1 || !strings.Contains(problems[0].Error(), "10.0.0.3") {
		t.Errorf("problems = %v, want one naming the shared address", problems)
	}
	want := map[string][]string{
		// a is still marked, but nothing admits it to 10.0.0.3 and 10.0.0.3 carries no
		// mark that a's chain would admit.
		"netman-forward": {markA1, "-d 10.0.0.2/32 -j netman-in-0001", "-d 10.0.0.3/32 -j netman-closed", brFwd},
		"netman-closed":  {est, toRej},
		"netman-reject":  {brRej, rejA, rejB},
	}
	for name, rs := range want {
		if !slices.Equal(first.Chains[name], rs) {
			t.Errorf("%s:\n got %q\nwant %q", name, first.Chains[name], rs)
		}
	}
	for name := range first.Chains {
		if strings.HasPrefix(name, "netman-in-") && name != "netman-in-0001" {
			t.Errorf("chain %s admits traffic to a doubly claimed address:\n%s", name, dump(first))
		}
	}
}

func dump(r rules.Ruleset) string {
	var names []string
	for n := range r.Chains {
		names = append(names, n)
	}
	slices.Sort(names)
	var b strings.Builder
	for _, n := range names {
		for _, rule := range r.Chains[n] {
			b.WriteString("-A " + n + " " + rule + "\n")
		}
		if len(r.Chains[n]) == 0 {
			b.WriteString(":" + n + " (empty)\n")
		}
	}
	return b.String()
}
