// Package asg applies dynamic application security groups on a cell: on an interval it
// asks the policy server for the security groups of the spaces of the cell's containers
// and rewrites the egress chain of every container whose set changed (lib/containerrules
// builds the chain, as the wrapper does at ADD), in one iptables-restore.
package asg

import (
	"netman/lib/apiwire"
	"netman/lib/policyclient"
)

// Sets are the security group rules of a cell's spaces, arranged as silk's
// vxlan-policy-agent arranges them: a container gets the globally enabled groups of its
// lifecycle (running or staging), then the groups bound to its space for that lifecycle.
type Sets struct {
	defaultRunning, defaultStaging []apiwire.SecurityGroupRule
	running, staging               map[string][]apiwire.SecurityGroupRule
}

// NewSets arranges groups (in the order the policy server lists them).
func NewSets(groups []policyclient.SecurityGroup) Sets {
	s := Sets{running: map[string][]apiwire.SecurityGroupRule{}, staging: map[string][]apiwire.SecurityGroupRule{}}
	for _, g := range groups {
		if g.StagingDefault {
			s.defaultStaging = append(s.defaultStaging, g.Rules...)
		}
		if g.RunningDefault {
			s.defaultRunning = append(s.defaultRunning, g.Rules...)
		}
		// A globally enabled group is not added again for the spaces it is bound to.
		if !g.StagingDefault {
			for _, space := range g.StagingSpaces {
				s.staging[space] = append(s.staging[space], g.Rules...)
			}
		}
		if !g.RunningDefault {
			for _, space := range g.RunningSpaces {
				s.running[space] = append(s.running[space], g.Rules...)
			}
		}
	}
	return s
}

// For returns the rules of a container of space whose container_workload is workload:
// "staging" gets the staging groups, "app" and "task" the running groups, and any other
// workload none (silk's planner does the same: such a container may send nothing out of
// the cell but replies).
func (s Sets) For(space, workload string) []apiwire.SecurityGroupRule {
	var def, bound []apiwire.SecurityGroupRule
	switch workload {
	case "staging":
		def, bound = s.defaultStaging, s.staging[space]
	case "app", "task":
		def, bound = s.defaultRunning, s.running[space]
	default:
		return nil
	}
	out := make([]apiwire.SecurityGroupRule, 0, len(def)+len(bound))
	return append(append(out, def...), bound...)
}
