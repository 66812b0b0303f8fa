package containerrules

import (
	"crypto/sha256"
	"encoding/hex"
)

// Chain kinds; see the package documentation for what each holds.
const (
	Prefix   = "nm-"
	kindDNAT = "dnat"
	kindSNAT = "snat"
	kindIn   = "in"
	kindOut  = "out"
	kindHost = "host"
	kindLog  = "log"
	kindRej  = "rej"
)

// chainID is what every chain name of a container ends with.
func chainID(handle string) string {
	sum := sha256.Sum256([]byte(handle))
	return hex.EncodeToString(sum[:8])
}

func chainName(kind, handle string) string { return Prefix + kind + "-" + chainID(handle) }

// EgressChain names the chain that filters what the container sends out of the cell.
func EgressChain(handle string) string { return chainName(kindOut, handle) }

// tableChains lists, per table, every chain a container may own, in the order they are
// deleted (referring chains before the chains they jump to).
func tableChains(handle string) map[string][]string {
	return map[string][]string{
		"nat":    {chainName(kindDNAT, handle), chainName(kindSNAT, handle)},
		"filter": {chainName(kindIn, handle), chainName(kindOut, handle), chainName(kindHost, handle), chainName(kindLog, handle), chainName(kindRej, handle)},
	}
}

// builtins are the chains holding the jumps to a container's chains.
var builtins = []struct{ table, chain string }{
	{"nat", "PREROUTING"},
	{"nat", "POSTROUTING"},
	{"filter", "FORWARD"},
	{"filter", "INPUT"},
}

// logPrefix is "<tag>_<handle>" cut to the 28 characters LOG keeps, restricted to
// characters that need no quoting, plus the space that separates it from the packet.
func logPrefix(tag, handle string) string {
	b := []byte(tag + "_")
	for i := 0; i < len(handle) && len(b) < 28; i++ {
		c := handle[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_', c == '.', c == ':':
			b = append(b, c)
		default:
			b = append(b, '_')
		}
	}
	return string(b) + " "
}
