// Package containerrules builds and applies the iptables rules of one container on a
// cell: its port mappings (netin), its egress firewall built from application
// security groups (netout), and what it may reach on the cell itself. The wrapper
// installs them on ADD and removes them on DEL; the policy agent, when security groups
// change, rebuilds a container's egress chain with EgressChains and swaps it in with
// ReplaceEgress.
//
// # Chains
//
// Every chain is per container and named "nm-<kind>-<id>", id being the first 16 hex
// digits of the SHA-256 of the container handle, so a name fits iptables' 28 characters
// and is found again from the handle alone (DEL has no other input once the network
// namespace is gone). The prefix differs from the policy agent's "netman-" on purpose: the
// agent deletes every "netman-" chain it did not build. Each chain is reached by one rule
// inserted at the top of a built-in chain:
//
//	nat    PREROUTING  -d <instance address>/32 -j nm-dnat-<id>      port mappings
//	nat    POSTROUTING -s <container>/32 -j nm-snat-<id>             masquerade (egress on)
//	filter FORWARD     -d <container>/32 -j nm-in-<id>               what reaches the container
//	filter FORWARD     -s <container>/32 -j nm-out-<id>              egress (egress on)
//	filter INPUT       -s <container>/32 -j nm-host-<id>             to the cell itself
//
//	nm-dnat-<id>  -p tcp -m tcp --dport <host port> -j DNAT --to-destination <container>:<port>
//	nm-snat-<id>  -d <no-masquerade range> -j RETURN, -j MASQUERADE
//	nm-in-<id>    -p tcp --dport <port> ctstate DNAT, ctorigdst <instance address>, ctorigdstport <host port> -j ACCEPT
//	              RELATED,ESTABLISHED -j RETURN
//	              -s <overlay> -j RETURN                          container to container: the agent's job
//	              everything else (from outside the overlay) is rejected
//	nm-out-<id>   -d <overlay> -j RETURN                          container to container: the agent's job
//	              RELATED,ESTABLISHED -j ACCEPT, tcp INVALID -j DROP
//	              -d <deny network> -j nm-rej-<id>                 deny_networks win over every allow
//	              one ACCEPT (or -j nm-log-<id>) per network × port range of each NetOutRule
//	              -j nm-rej-<id>
//	nm-log-<id>   NEW, rate limited -j LOG "OK_<handle>", -j ACCEPT
//	nm-rej-<id>   (logging on: rate limited -j LOG "DENY_<handle>"), tcp-reset, icmp-port-unreachable
//	nm-host-<id>  RELATED,ESTABLISHED -j ACCEPT                    replies to the cell's connections
//	              -d <address>/32 -p tcp|udp --dport <port> -j ACCEPT   per HostService
//	              tcp-reset, icmp-port-unreachable                 garden, agents, bosh-agent...
//
// The INPUT jump matches the container's source address alone, not the bridge it comes
// in on: no interface has to be found (bridge, veth or overlay device, by delegate) and a
// packet carrying that address from anywhere else meets the same, stricter, chain.
//
// The jumps are inserted, so that what a container was given (its port mappings) works
// whatever other rules of the cell's FORWARD and nat chains say. Order does not matter to
// the policy agent: its netman-forward jump (inserted first in FORWARD once) decides only
// traffic between containers and lets the rest fall through, and these chains accept only
// what is not container to container and return the rest, so neither set can open or
// close what the other decides, whichever comes first.
//
// # Applying
//
// Add writes all of a container's chains and jumps with ONE iptables-restore --noflush,
// holding the cell's shared iptables lock file (lib/xtables) and iptables' own lock (-w).
// It reads nothing first, so its cost does not grow with the rules of the other
// containers beyond what iptables-restore itself pays. iptables commits each table on its
// own, so when the restore fails Add removes whatever part of it landed. Remove lists the
// four built-in chains, deletes every rule there that jumps to one of the container's
// chains (however many a repeated ADD left), flushes and deletes the chains, again in one
// restore; it needs nothing but the handle and succeeds when nothing is left to remove.
package containerrules
