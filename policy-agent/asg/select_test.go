package asg_test

import (
	"reflect"
	"testing"

	"netman/lib/apiwire"
	"netman/lib/policyclient"
	"netman/policy-agent/asg"
)

func rule(dest string) apiwire.SecurityGroupRule {
	return apiwire.SecurityGroupRule{Protocol: "all", Destination: dest}
}

func TestSetsFor(t *testing.T) {
	groups := []policyclient.SecurityGroup{
		{GUID: "public", RunningDefault: true, Rules: []apiwire.SecurityGroupRule{rule("0.0.0.0/0")}},
		{GUID: "dns", RunningDefault: true, StagingDefault: true, Rules: []apiwire.SecurityGroupRule{rule("10.0.0.53")},
			// bound to a space too: the global group is not repeated for it
			RunningSpaces: []string{"s1"}, StagingSpaces: []string{"s1"}},
		{GUID: "db", RunningSpaces: []string{"s1"}, Rules: []apiwire.SecurityGroupRule{rule("10.1.0.0/16")}},
		{GUID: "mirror", StagingSpaces: []string{"s1", "s2"}, Rules: []apiwire.SecurityGroupRule{rule("10.2.0.1")}},
	}
	sets := asg.NewSets(groups)
	tests := []struct {
		space, workload string
		want            []string
	}{
		{"s1", "app", []string{"0.0.0.0/0", "10.0.0.53", "10.1.0.0/16"}},
		{"s1", "task", []string{"0.0.0.0/0", "10.0.0.53", "10.1.0.0/16"}},
		{"s1", "staging", []string{"10.0.0.53", "10.2.0.1"}},
		{"s2", "app", []string{"0.0.0.0/0", "10.0.0.53"}},
		{"s2", "staging", []string{"10.0.0.53", "10.2.0.1"}},
		{"s3", "app", []string{"0.0.0.0/0", "10.0.0.53"}},
		// silk's planner gives other workloads (and none) no security group at all
		{"s1", "", nil},
		{"s1", "sidecar", nil},
	}
	for _, tt := range tests {
		var got []string
		for _, r := range sets.For(tt.space, tt.workload) {
			got = append(got, r.Destination)
		}
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("For(%q, %q) = %v, want %v", tt.space, tt.workload, got, tt.want)
		}
	}
}
