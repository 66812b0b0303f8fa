package integration

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	"netman/lib/datastore"
)

// parallel runs f for every index at once and returns the errors by index.
func parallel(n int, f func(i int) error) []error {
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { errs[i] = f(i) })
	}
	wg.Wait()
	return errs
}

// fleet is many containers on one cell, each in its own network namespace, joining the
// local-only bridge network.
type fleet struct {
	c          *cell
	ids        []string
	containers []ns.NetNS
	confs      [][]byte // ADD configs carrying each container's metadata
}

func (c *cell) newFleet(tb testing.TB, n int, idFormat string) *fleet {
	f := &fleet{c: c, containers: make([]ns.NetNS, n)}
	for i := range f.containers {
		f.containers[i] = newNS(tb)
	}
	f.rename(idFormat)
	return f
}

// rename gives the containers new IDs (and configs), reusing their namespaces.
func (f *fleet) rename(idFormat string) {
	f.ids, f.confs = make([]string, len(f.containers)), make([][]byte, len(f.containers))
	for i := range f.containers {
		f.ids[i] = fmt.Sprintf(idFormat, i)
		f.confs[i] = f.c.conf("1.0.0", f.c.bridgeDelegate(), map[string]any{"metadata": metadataFor(f.ids[i])})
	}
}

func (f *fleet) invocation(command string, i int) invocation {
	return invocation{command: command, containerID: f.ids[i], netns: f.containers[i], conf: f.confs[i]}
}

// delAll deletes every container at once; every DEL must succeed.
func (f *fleet) delAll(tb testing.TB) {
	tb.Helper()
	errs := parallel(len(f.ids), func(i int) error {
		_, err := f.c.exec(f.invocation("DEL", i))
		return err
	})
	for i, err := range errs {
		if err != nil {
			tb.Fatalf("DEL %s: %v", f.ids[i], err)
		}
	}
}

// A cell restart creates many containers at once: 100 parallel ADDs on one datastore
// must all be recorded, and 100 parallel DELs must leave no record, veth or IP.
func TestHundredParallelAddsThenDels(t *testing.T) {
	const n = 100
	c := newCell(t, 1500)
	f := c.newFleet(t, n, "par-%03d")
	id := func(i int) string { return f.ids[i] }
	outs := make([][]byte, n)
	errs := parallel(n, func(i int) (err error) {
		outs[i], err = c.exec(f.invocation("ADD", i))
		return err
	})
	ips := make([]string, n)
	for i, err := range errs {
		if err != nil {
			t.Fatalf("ADD %s: %v", id(i), err)
		}
		ips[i] = parseResult(t, "1.0.0", outs[i]).IPs[0].Address.IP.String()
	}
	records, v, err := datastore.Snapshot(c.datastore())
	if err != nil {
		t.Fatal(err)
	}
	if len(records) != n || v != datastore.Unwritten+n {
		t.Fatalf("%d records at version %d after %d ADDs", len(records), v, n)
	}
	seen := map[string]bool{}
	for i := range n {
		r := records[id(i)]
		if r.IP != ips[i] || !sameJSON(t, r.Metadata, metadataFor(id(i))) {
			t.Errorf("record %s = %+v, want ip %s", id(i), r, ips[i])
		}
		if seen[r.IP] {
			t.Errorf("ip %s recorded twice", r.IP)
		}
		seen[r.IP] = true
	}

	f.delAll(t)
	records, err = datastore.Read(c.datastore())
	if err != nil || len(records) != 0 {
		t.Fatalf("after %d DELs: %d records, %v", n, len(records), err)
	}
	c.expectNothingLeft(t, "netman-test", fmt.Sprintf("after %d DELs", n))
}

// Wrapper processes killed with SIGKILL in the middle of ADD (as an OOM killer or a
// runtime timeout would) leave a datastore that reads fine and still holds every ADD
// that completed; DEL then cleans up after the killed ones.
func TestKilledAddsLeaveAValidDatastore(t *testing.T) {
	const n = 40
	c := newCell(t, 1500)
	f := c.newFleet(t, n, "kill-%02d")
	id := func(i int) string { return f.ids[i] }
	completed := make([]bool, n)
	killed := 0
	var mu sync.Mutex
	startErrs := parallel(n, func(i int) error {
		r, err := c.start(f.invocation("ADD", i))
		if err != nil {
			return err
		}
		if i%2 == 1 {
			// Spread over the whole ADD, so some die in the delegate, some in the
			// datastore write and some after finishing.
			time.Sleep(time.Duration(rand.IntN(500)) * time.Millisecond)
			if r.cmd.Process.Signal(syscall.SIGKILL) == nil {
				mu.Lock()
				killed++
				mu.Unlock()
			}
		}
		_, err = r.wait()
		completed[i] = err == nil
		return nil
	})
	for _, err := range startErrs {
		if err != nil {
			t.Fatal(err)
		}
	}
	records, err := datastore.Read(c.datastore())
	if err != nil {
		t.Fatalf("datastore unreadable after killed ADDs: %v", err)
	}
	done := 0
	for i := range n {
		if completed[i] {
			done++
			if _, ok := records[id(i)]; !ok {
				t.Errorf("completed ADD %s is not recorded", id(i))
			}
		}
	}
	t.Logf("%d ADDs completed, %d processes sent SIGKILL, %d records", done, killed, len(records))
	if done < n/2 {
		t.Fatalf("only %d of the %d unkilled ADDs completed", done, n/2)
	}

	f.delAll(t)
	if records, err := datastore.Read(c.datastore()); err != nil || len(records) != 0 {
		t.Errorf("after DELs: %d records, %v", len(records), err)
	}
	c.expectNothingLeft(t, "netman-test", "after DELs")
}
