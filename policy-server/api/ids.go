package api

import (
	"fmt"
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
	n = min(n, max+1)
	seen := make(map[string]struct{}, n)
	ids = make([]string, 0, n)
	for _, v := range values {
		for id := range strings.SplitSeq(v, ",") {
			if !plain(id) {
				id = strings.TrimSpace(id)
			}
			if id == "" {
				continue
			}
			if !plain(id) && (!utf8.ValidString(id) || strings.ContainsFunc(id, unicode.IsControl)) {
				// No policy can name such an id (the store refuses it), so the answer
				// would be empty; refusing it answers the same whether the request is
				// served from the snapshot or the database.
				return nil, true, fmt.Errorf("%s %q is not valid: ids are UTF-8 text without control characters", name, id)
			}
			if _, dup := seen[id]; dup {
				continue
			}
			if len(seen) == max {
				if name == "id" {
					return nil, true, fmt.Errorf("too many ids: at most %d may be requested at once", max)
				}
				return nil, true, fmt.Errorf("too many ids in %s: at most %d may be requested at once", name, max)
			}
			seen[id] = struct{}{}
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
