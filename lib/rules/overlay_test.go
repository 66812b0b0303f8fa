package rules_test

import (
	"errors"
	"slices"
	"testing"

	"netman/lib/models"
	"netman/lib/rules"
)

var flannel = rules.Overlay{Interface: "flannel.1", GBP: true}

func TestBuildOverlayJudgesRemoteSources(t *testing.T) {
	rs, problems := rules.Build([]rules.Container{a, b},
		[]models.Policy{policy("app-a", "0001", "app-b", "0002", "tcp", 8080, 8080)}, flannel)
	if len(problems) > 0 {
		t.Fatal(problems)
	}
	// A remote source carries its tag in the mark (GBP), so the destination's chain is the
	// one local sources pass: no overlay rule in it.
	if got, want := rs.Chains["netman-in-0002"], []string{est,
		"-p tcp -m tcp --dport 8080 -m mark --mark 0x1/0xffff -j ACCEPT", toRej}; !slices.Equal(got, want) {
		t.Errorf("netman-in-0002 = %q, want %q", got, want)
	}
	// Whatever the overlay brings that no policy admitted is refused, and a container the
	// agent does not know yet is closed to other cells.
	if got, want := rs.Chains["netman-reject"], []string{brRej, "-i flannel.1 -j netman-deny", rejA, rejB}; !slices.Equal(got, want) {
		t.Errorf("netman-reject = %q, want %q", got, want)
	}
	fwd := rs.Chains["netman-forward"]
	if got, want := fwd[len(fwd)-2:], []string{brFwd, "-i flannel.1 -j netman-closed"}; !slices.Equal(got, want) {
		t.Errorf("netman-forward ends with %q, want %q", got, want)
	}
	if !slices.Contains(fwd, markA1) || !slices.Contains(fwd, markB2) {
		t.Errorf("local sources are not marked: %q", fwd)
	}
}

func TestBuildOverlayWithoutContainersStillRefuses(t *testing.T) {
	rs, _ := rules.Build(nil, nil, flannel)
	if !slices.Contains(rs.Chains["netman-forward"], "-i flannel.1 -j netman-closed") {
		t.Errorf("a cell with no known container lets the overlay in: %q", rs.Chains["netman-forward"])
	}
}

func TestBuildGBPRefusesWideTags(t *testing.T) {
	tests := []struct {
		name     string
		src, dst string
		gbp      bool
		refused  bool
	}{
		{"16 bits fit", "ffff", "0002", true, false},
		{"17 bits do not", "10000", "0002", true, true},
		{"a wide destination does not", "0001", "000002", true, true},
		{"six digits of a small value are still a 24-bit tag", "000001", "000002", true, true},
		{"without GBP a cell enforces 32-bit tags", "10000", "000002", false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := rules.Overlay{Interface: "flannel.1", GBP: tt.gbp}
			rs, problems := rules.Build([]rules.Container{a, b}, []models.Policy{policy("app-a", tt.src, "app-b", tt.dst, "tcp", 8080, 8080)}, o)
			if !tt.refused {
				if len(problems) > 0 {
					t.Fatalf("problems = %v", problems)
				}
				return
			}
			if len(problems) != 1 || !errors.Is(problems[0], rules.ErrTagTooWide) {
				t.Fatalf("problems = %v, want one ErrTagTooWide", problems)
			}
			t.Log(problems[0])
			// Refused means not enforced as an allow: b stays closed.
			if !slices.Contains(rs.Chains["netman-forward"], "-d 10.0.0.3/32 -j netman-closed") {
				t.Errorf("b is not closed after its policy was refused: %q", rs.Chains["netman-forward"])
			}
		})
	}
}
