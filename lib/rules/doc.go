// Package rules turns policies and the containers of one cell into iptables rules and
// applies them.
//
// # Chains
//
// Everything netman programs lives in the filter table, in chains whose names start with
// "netman-". Nothing else is ever flushed or deleted; the only rule outside those chains is
// one jump at the top of FORWARD:
//
//	FORWARD          -j netman-forward                 (inserted once, position 1)
//	netman-forward   -s <container ip> -j MARK --set-xmark 0x<tag>/<mask>   one per local container whose group has a tag
//	                 -d <container ip> -j netman-in-<tag>                   one per local container whose group receives policies
//	                 -d <container ip> -j netman-closed                     one per other local container
//	                 -m physdev --physdev-is-bridged -j netman-closed       containers the agent does not know yet
//	                 -i <overlay device> -j netman-closed                   the same, reached from another cell
//	netman-in-<tag>  -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
//	                 -p tcp|udp --dport P[:E] -m mark --mark 0x<source tag>/<mask> -j ACCEPT   one per policy
//	                 -j netman-reject
//	netman-closed    -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
//	                 -j netman-reject
//	netman-reject    -m physdev --physdev-is-bridged -j netman-deny         from a container on this cell's bridge
//	                 -i <overlay device> -j netman-deny                     from a container on another cell
//	                 -s <container ip> -j netman-deny                       one per local container
//	netman-deny      -p tcp -j REJECT --reject-with tcp-reset
//	                 -j REJECT --reject-with icmp-port-unreachable
//
// A packet from a local container is marked with its group's tag before anything else looks
// at it. Traffic to a local container is then judged by the chain of the destination's group:
// replies are let through, new connections pass only on a policy's protocol and port range and
// only when they carry the mark of the policy's source; what is left is rejected when it came
// from a container. Frames the bridge forwarded always go from one container of the cell
// to another, so they are judged even when the agent has not yet seen the container the
// runtime just created: such a container is closed, never open, until the next cycle.
// Traffic that is not container to container (the router, the host, the outside world)
// falls out of netman's chains untouched and is left to the other rules of FORWARD. One
// chain per destination group, not per container, keeps the rule count at about
// policies + 3 × containers + 2 × groups however many instances an app runs.
//
// Removing a policy stops new connections; established ones live on in conntrack until
// they close, as with any stateful firewall.
//
// The kernel limits ICMP errors per peer (net.ipv4.icmp_ratelimit), so a client that keeps
// sending refused UDP sees some exchanges time out instead of failing at once; TCP resets
// have no such limit.
//
// Containers on the same cell talk across a Linux bridge. Bridged frames only reach
// iptables with the br_netfilter module loaded and net.bridge.bridge-nf-call-iptables = 1,
// which on current kernels is a setting of each network namespace; EnableBridgeNetfilter
// checks both and says plainly when the kernel cannot do it.
//
// # Cross-cell traffic
//
// The mark is the source's identity, on this cell and across the overlay. flanneld's vxlan
// backend with "GBP": true creates its device (flannel.<VNI>) with Group Based Policy: the
// kernel copies the low 16 bits of a packet's mark into the VXLAN header on the sending
// cell and sets the mark from it on the receiving one, before the decapsulated packet
// reaches FORWARD. Marking already covers every packet a local container sends, those
// leaving through the overlay included, so a container of another cell arrives carrying
// its group's tag and the destination's netman-in chain judges it exactly like a local
// source. Overlay (the device's name) adds the two "-i <overlay device>" rules above: what
// arrives through the overlay without a policy is rejected, also when the source's cell
// runs no netman (no mark) or no GBP, and also before the agent knows the destination.
// Replies pass by conntrack, as on the cell. With GBP the tags must fit 16 bits (the
// policy server's tag_length 2, its default); a policy with a wider tag is refused.
//
// # Applying
//
// Each change is ONE iptables-restore --noflush transaction: it declares (and so empties
// and refills) only the chains whose content changed, deletes the netman chains nobody
// references any more, and adds the FORWARD jump when it is missing. Both the nf_tables and
// the legacy backend commit such a transaction (one table) as a whole, so there is never a moment with
// half a rule set or none: a packet sees either the old rules or the new ones. A failed
// restore changes nothing; the enforcer then forgets what it believes is applied and
// rewrites everything on the next attempt.
//
// The restore holds two locks: the xtables lock (iptables-restore -w) and an flock on the
// lock file the cell's other iptables writers share (the container networker), so neither
// sees the other's half-made changes.
package rules
