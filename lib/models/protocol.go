package models

// InternProtocol returns the shared constant for the protocols a policy may name, so
// 100k policies do not carry 100k copies of "tcp"; any other value is returned as is.
func InternProtocol(p string) string {
	switch p {
	case ProtocolTCP:
		return ProtocolTCP
	case ProtocolUDP:
		return ProtocolUDP
	}
	return p
}

// InternProtocolBytes is InternProtocol for a database row's bytes: tcp and udp are
// not copied at all.
func InternProtocolBytes(b []byte) string {
	switch string(b) { // compiled without a copy of b
	case ProtocolTCP:
		return ProtocolTCP
	case ProtocolUDP:
		return ProtocolUDP
	}
	return string(b)
}
