package crosscell_test

import (
	"context"
	"strings"
	"testing"
)

// TestFoundationSmoke: every cell leased a subnet and its containers get 1450 on the 1500
// underlay.
func TestFoundationUp(t *testing.T) {
	f := sharedFoundation(t)
	leases, err := f.Leases(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(leases) != cells {
		t.Errorf("%d leases in etcd, want one per cell (%d): %v", len(leases), cells, leases)
	}
	for _, c := range f.Cells {
		l, err := c.Lease()
		if err != nil {
			t.Fatal(err)
		}
		if l.MTU != 1450 || l.Network != "10.255.0.0/16" || !strings.HasPrefix(l.Subnet, "10.255.") {
			t.Errorf("cell %d lease %+v", c.Index, l)
		}
	}
}
