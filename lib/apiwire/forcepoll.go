package apiwire

// ForcePollPath is the policy agent's route on the cell's loopback that CNI wrappers
// (netman's and silk's) call after every ADD and DEL to have it run a cycle at once;
// silk's vxlan-policy-agent serves the same one. It lives here so that the wrapper and
// the agent, neither of which imports the other, share one definition.
const ForcePollPath = "/force-policy-poll-cycle"
