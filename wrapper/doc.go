// Package wrapper is the netman CNI plugin (network config "type": "wrapper"): it
// delegates interface setup to another plugin (bridge, flannel, ...), hands that plugin
// the right MTU, and records each container's IP and metadata in the datastore that
// policy agents read (netman/lib/datastore).
//
// # Configuration
//
// The static part comes from the BOSH job; LoadConfig accepts it on its own:
//
//	{
//	  "name": "cni-wrapper",
//	  "type": "wrapper",
//	  "cniVersion": "0.2.0",
//	  "datastore": "/var/vcap/data/container-metadata/store.json",
//	  "datastore_file_owner": "vcap",
//	  "datastore_file_group": "vcap",
//	  "underlay_interface": "eth0",
//	  "delegate": {
//	    "name": "cni-flannel",
//	    "type": "flannel",
//	    "subnetFile": "/var/vcap/data/flannel/subnet.env",
//	    "dataDir": "/var/vcap/data/flannel/data",
//	    "delegate": {"bridge": "cni-flannel0", "isDefaultGateway": true, "ipMasq": false}
//	  }
//	}
//
// Fields: datastore (required) is the record file; delegate (required, with a type)
// is passed to that plugin; mtu (0 or absent: detect) is the container MTU;
// underlay_ip or underlay_interface (at most one) name the host interface the overlay
// runs over (by default the interface of the IPv4 default route); encapsulation_overhead replaces the
// default overhead (50 for flannel's VXLAN, 0 otherwise); datastore_file_owner and
// datastore_file_group (names or numeric IDs) own the datastore files;
// policy_agent_force_poll_address (host:port) is the agent the wrapper nudges after
// ADD and DEL (GET /force-policy-poll-cycle, best effort).
//
// Port mappings and egress rules (netinout.go, lib/containerrules): instance_address
// (the cell's IPv4 address port mappings listen on), enforce_egress (an egress chain per
// container from garden's netOutRules, masquerading outside the overlay),
// iptables_lock_file (the cell's shared iptables lock, garden's by default),
// overlay_network (container to container range, left to the policy agent; by default
// flannel's FLANNEL_NETWORK), no_masquerade_cidr_range, deny_networks {always, running,
// staging}, iptables_logging with iptables_denied_logs_per_sec and
// iptables_accepted_logs_per_sec, dns_servers (into the result), and host_tcp_services
// and host_udp_services ("address:port" on the cell that containers may reach; DNS on
// link-local dns_servers too; the rest of the cell is closed to them). With neither
// instance_address nor enforce_egress the wrapper touches no iptables rule.
//
// Per container the runtime adds "metadata" (app_id, space_id, org_id, policy_group_id
// and any other keys, recorded verbatim); when it is absent, network.properties
// (garden-external-networker's form) is recorded instead; more than 64 KiB of it is
// refused. runtimeConfig is passed on to the delegate; the wrapper itself reads its
// portMappings (garden's host_port and container_port, or the CNI convention's hostPort,
// containerPort and protocol) and netOutRules.
//
// # What the delegate receives
//
// The delegate object as written, plus cniVersion from the wrapper's config or, when the
// delegate refuses that, the highest version both speak (results are converted to the
// runtime's version either way), the wrapper's name when the delegate
// has none, runtimeConfig, and on ADD and CHECK the container MTU: as "mtu" for bridge
// and other plugins, as the inner delegate's "mtu" for flannel. An mtu the operator
// wrote there is never replaced, but refused when it is below 576. The container MTU
// is the explicit mtu, or the underlay's MTU minus the overhead; below 576 is an error.
//
// # Commands
//
// ADD runs the delegate, installs the container's port mapping and egress rules (one
// iptables-restore), records {handle: CNI_CONTAINERID, ip, metadata} (dropping other
// records with that IP) and prints the delegate's result; if the delegate fails halfway,
// the rules or the record cannot be written or the result cannot be converted, the
// rules are removed and the delegate's DEL undoes its work. DEL checks only the
// datastore and delegate settings, removes the record and every iptables rule of the
// container, then runs the delegate's DEL even when the record or the rules could not be
// removed (the error names what is left); all tolerate what is already gone. ADD and
// DEL of one container hold its lock throughout. CHECK needs prevResult and a record
// whose IP is in it, then runs the delegate's CHECK. GC (CNI 1.1) drops records of
// containers missing from cni.dev/valid-attachments, and their iptables rules, and
// passes GC on when the delegate speaks the config's version. STATUS fails with code 50
// when the datastore is unusable and otherwise asks a delegate that speaks the version.
//
// Errors are CNI error JSON on stdout with a non-zero exit; errors.go lists the codes,
// and netinout.go the one of the iptables rules (110, ErrNetRules).
package wrapper
