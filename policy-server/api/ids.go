package api

import (
	"fmt"
	"hash/maphash"
	"math/bits"
	"net/url"
	"strings"
	"unicode"
	"unicode/utf8"
)

// DefaultMaxIDs caps the ids of one ?id= filter when no cap is configured.
const DefaultMaxIDs = 10000

// ParseIDs reads the id parameters of a parsed query (httpapi.Query). all is true when there is no
// id parameter. Every id parameter's value is split on commas; ids are trimmed, empty
// ones dropped and duplicates removed, keeping the first occurrence's order. More than
// max distinct ids is an error.
func ParseIDs(q url.Values, max int) (ids []string, all bool, err error) {
	ids, present, err := idParam(q, "id", max)
	return ids, !present, err
}

// idParam reads the id list parameter name of q as ParseIDs describes; present is
// false when q has no such parameter.
func idParam(q url.Values, name string, max int) (ids []string, present bool, err error) {
	values, ok := q[name]
	if !ok {
		return nil, false, nil
	}
	n := 0
	for _, v := range values {
		n += strings.Count(v, ",") + 1
	}
	ids = make([]string, 0, min(n, max+1))
	seen := newIDSet(min(n, max+1))
	for _, v := range values {
		for id := range strings.SplitSeq(v, ",") {
			if !plain(id) {
				id = strings.TrimSpace(id)
				if !utf8.ValidString(id) || strings.ContainsFunc(id, unicode.IsControl) {
					// No policy can name such an id (the store refuses it), so the answer
					// would be empty; refusing it answers the same whether the request is
					// served from the snapshot or the database.
					return nil, true, fmt.Errorf("%s %q is not valid: ids are UTF-8 text without control characters", name, id)
				}
			}
			if id == "" {
				continue
			}
			if !seen.add(id, ids) {
				continue
			}
			if len(ids) == max {
				if name == "id" {
					return nil, true, fmt.Errorf("too many ids: at most %d may be requested at once", max)
				}
				return nil, true, fmt.Errorf("too many ids in %s: at most %d may be requested at once", name, max)
			}
			ids = append(ids, id)
		}
	}
	return ids, true, nil
}

// plain reports whether id is printable ASCII without spaces, as every GUID is: such an
// id needs no trimming and is valid, which a poll of hundreds of ids can then learn in
// one pass over its bytes each.
func plain(id string) bool {
	for i := 0; i < len(id); i++ {
		if c := id[i]; c <= ' ' || c >= 0x7f {
			return false
		}
	}
	return true
}

// idSet finds repeated ids among those of one query: a table of indexes into the ids
// kept so far, with linear probing on their hashes. A poll names about a hundred ids, and
// a Go map of them cost more than the rest of reading the query.
type idSet struct {
	seed  maphash.Seed
	slots []int32 // 1 + the index in ids; 0 is empty
}

func newIDSet(n int) idSet {
	return idSet{seed: maphash.MakeSeed(), slots: make([]int32, 1<<bits.Len(uint(2*n)))}
}

// add reports whether id is not among ids yet, which will hold it at index len(ids)
// if so. The caller adds at most n ids (newIDSet's n).
func (s idSet) add(id string, ids []string) bool {
	mask := uint64(len(s.slots) - 1)
	for i := maphash.String(s.seed, id) & mask; ; i = (i + 1) & mask {
		switch k := s.slots[i]; {
		case k == 0:
			s.slots[i] = int32(len(ids)) + 1
			return true
		case ids[k-1] == id:
			return false
		}
	}
}
