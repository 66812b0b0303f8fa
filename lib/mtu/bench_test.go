package mtu_test

import (
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"

	"netman/lib/mtu"
)

// BenchmarkHostMTU is the detection every ADD without an explicit mtu pays.
func BenchmarkHostMTU(b *testing.B) {
	netns := hostNS(b, 1500)
	for _, tc := range []struct {
		name     string
		underlay mtu.Underlay
	}{{"default route", mtu.Underlay{}}, {"interface", mtu.Underlay{Interface: "underlay0"}}, {"ip", mtu.Underlay{IP: "10.10.0.5"}}} {
		b.Run(tc.name, func(b *testing.B) {
			err := netns.Do(func(ns.NetNS) error {
				for range b.N {
					if _, err := mtu.HostMTU(tc.underlay); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				b.Fatal(err)
			}
		})
	}
}
