package integration

import (
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	"netman/lib/datastore"
)

// Run with:
//
//	CNI_PATH=$PWD/.cache/cni/bin go test -run '^$' -bench . -benchtime 300x ./wrapper/integration/
//
// BenchmarkWrapperVsBridge alternates ADD+DEL through the wrapper and through the bare
// bridge plugin (same bridge, IPAM and MTU; the wrapper's datastore already holds 249
// other containers, as on a full cell) and reports the median and p99 of each command.
// The wrapper is built as the release builds it (static, see buildWrapper); the bridge
// is the one in CNI_PATH, as `make test` installs it.
func BenchmarkWrapperVsBridge(b *testing.B) {
	c := newCell(b, 1500)
	prefill(b, c, 249)
	bridgePath := c.cniPath + "/bridge"

	// The bare bridge gets exactly what the wrapper hands it.
	bridgeConf := c.bridgeDelegate()
	bridgeConf["name"], bridgeConf["cniVersion"], bridgeConf["mtu"] = "netman-test", "1.0.0", 1500
	bare, err := json.Marshal(bridgeConf)
	if err != nil {
		b.Fatal(err)
	}
	wrapped := c.conf("1.0.0", c.bridgeDelegate(), map[string]any{"metadata": metadataFor("bench")})

	type variant struct {
		name, plugin string
		conf         []byte
		container    ns.NetNS
		add, del     []time.Duration
	}
	variants := []*variant{
		{name: "bridge", plugin: bridgePath, conf: bare, container: newNS(b)},
		{name: "wrapper", conf: wrapped, container: newNS(b)},
	}
	timed := func(inv invocation) time.Duration {
		start := time.Now()
		c.mustExec(inv)
		return time.Since(start)
	}
	b.ResetTimer()
	for i := range b.N {
		// Alternate the order so neither always runs on a warmer cache.
		order := variants
		if i%2 == 1 {
			order = []*variant{variants[1], variants[0]}
		}
		for _, v := range order {
			inv := invocation{containerID: fmt.Sprintf("%s-%d", v.name, i), netns: v.container, conf: v.conf, plugin: v.plugin}
			inv.command = "ADD"
			v.add = append(v.add, timed(inv))
			inv.command = "DEL"
			v.del = append(v.del, timed(inv))
		}
	}
	b.StopTimer()

	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	for _, v := range variants {
		b.ReportMetric(ms(quantile(v.add, 0.5)), v.name+"-add-p50-ms")
		b.ReportMetric(ms(quantile(v.add, 0.99)), v.name+"-add-p99-ms")
		b.ReportMetric(ms(quantile(v.del, 0.5)), v.name+"-del-p50-ms")
		b.ReportMetric(ms(quantile(v.del, 0.99)), v.name+"-del-p99-ms")
	}
	bridge, wrapper := variants[0], variants[1]
	b.ReportMetric(ms(quantile(wrapper.add, 0.5)-quantile(bridge.add, 0.5)), "add-overhead-p50-ms")
	b.ReportMetric(ms(quantile(wrapper.del, 0.5)-quantile(bridge.del, 0.5)), "del-overhead-p50-ms")
	b.ReportMetric(0, "ns/op")
	if records, err := datastore.Read(c.datastore()); err != nil || len(records) != 249 {
		b.Fatalf("after the run the datastore holds %d records (%v), want the 249 others", len(records), err)
	}
}

// BenchmarkConcurrentAdd250 starts 250 ADDs at once, as after a cell restart, and checks
// that every one is recorded; it reports the wall time and the per-ADD median and p99.
func BenchmarkConcurrentAdd250(b *testing.B) {
	const n = 250
	c := newCell(b, 1500)
	f := c.newFleet(b, n, "c%03d")
	for round := range b.N {
		f.rename(fmt.Sprintf("r%d-", round) + "c%03d")
		id := func(i int) string { return f.ids[i] }
		durations := make([]time.Duration, n)
		b.StartTimer()
		start := time.Now()
		errs := parallel(n, func(i int) error {
			t0 := time.Now()
			_, err := c.exec(f.invocation("ADD", i))
			durations[i] = time.Since(t0)
			return err
		})
		wall := time.Since(start)
		b.StopTimer()
		for i, err := range errs {
			if err != nil {
				b.Fatalf("ADD %s: %v", id(i), err)
			}
		}
		records, err := datastore.Read(c.datastore())
		if err != nil {
			b.Fatal(err)
		}
		for i := range n {
			if _, ok := records[id(i)]; !ok {
				b.Fatalf("record %s lost", id(i))
			}
		}
		b.ReportMetric(float64(wall.Milliseconds()), "wall-ms")
		b.ReportMetric(float64(quantile(durations, 0.5).Microseconds())/1000, "add-p50-ms")
		b.ReportMetric(float64(quantile(durations, 0.99).Microseconds())/1000, "add-p99-ms")
		b.ReportMetric(float64(len(records)), "records")

		f.delAll(b)
	}
	b.ReportMetric(0, "ns/op")
}

// prefill records n other containers, as on a busy cell.
func prefill(b *testing.B, c *cell, n int) {
	store, err := datastore.New(c.datastore(), datastore.Options{})
	if err != nil {
		b.Fatal(err)
	}
	for i := range n {
		h := fmt.Sprintf("other-%03d", i)
		_, err := store.Add(b.Context(), datastore.Container{Handle: h, IP: fmt.Sprintf("10.255.%d.%d", 100+i/250, 1+i%250), Metadata: metadataFor(h)})
		if err != nil {
			b.Fatal(err)
		}
	}
}

// quantile returns the q-quantile (nearest rank) of ds.
func quantile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(q*float64(len(s))+0.5) - 1
	return s[max(0, min(i, len(s)-1))]
}
