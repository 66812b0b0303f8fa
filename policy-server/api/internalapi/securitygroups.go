package internalapi

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"netman/lib/apiwire"
	"netman/lib/httpapi"
	"netman/policy-server/api"
	"netman/policy-server/store"
)

// MaxSecurityGroupsPerPage caps per_page: CC's own page limit, and what silk asks for.
const MaxSecurityGroupsPerPage = 5000

// SecurityGroupStore reads a page of the security groups synced from Cloud Controller.
type SecurityGroupStore interface {
	SecurityGroupsForSpaces(ctx context.Context, spaces []string, from int64, limit int) (store.SecurityGroupsPage, error)
}

// securityGroups serves GET /networking/v1/internal/security_groups
// (apiwire.InternalSecurityGroupsV1Path): the groups globally enabled plus those bound
// to one of space_guids, in id order, per_page at a time (at most
// MaxSecurityGroupsPerPage) starting at id from; next is the id of the first group not
// sent (0: none left). That is what silk's vxlan-policy-agent pages through.
func securityGroups(st SecurityGroupStore, maxSpaces int) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q, err := httpapi.Query(r)
		if err != nil {
			httpapi.WriteError(w, r, http.StatusBadRequest, fmt.Sprintf("invalid query string: %v", err))
			return
		}
		spaces, from, limit, err := parseSecurityGroupsQuery(q, maxSpaces)
		if err != nil {
			httpapi.WriteError(w, r, http.StatusBadRequest, err.Error())
			return
		}
		p, err := st.SecurityGroupsForSpaces(r.Context(), spaces, from, limit)
		if err != nil {
			api.WriteStoreError(w, r, err)
			return
		}
		out := apiwire.SecurityGroupsV1{Next: p.Next, SecurityGroups: make([]apiwire.SecurityGroupV1, len(p.Groups))}
		for i, g := range p.Groups {
			out.SecurityGroups[i] = apiwire.SecurityGroupV1{
				GUID: g.GUID, Name: g.Name, Rules: g.Rules,
				StagingDefault: g.StagingDefault, RunningDefault: g.RunningDefault,
				StagingSpaceGUIDs: nonNil(g.StagingSpaces), RunningSpaceGUIDs: nonNil(g.RunningSpaces),
			}
		}
		httpapi.WriteValue(w, r, http.StatusOK, out)
	})
}

// parseSecurityGroupsQuery reads per_page (a positive integer; above
// MaxSecurityGroupsPerPage it is lowered to it, absent it is that), from (an id, 0 or
// more) and space_guids (comma-separated, at most maxSpaces).
func parseSecurityGroupsQuery(q url.Values, maxSpaces int) (spaces []string, from int64, limit int, err error) {
	limit = MaxSecurityGroupsPerPage
	if s := q.Get("per_page"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			return nil, 0, 0, fmt.Errorf("per_page %q must be a positive integer (at most %d are sent)", s, MaxSecurityGroupsPerPage)
		}
		limit = min(n, MaxSecurityGroupsPerPage)
	}
	if s := q.Get("from"); s != "" {
		if from, err = strconv.ParseInt(s, 10, 64); err != nil || from < 0 {
			return nil, 0, 0, fmt.Errorf("from %q must be the non-negative integer a previous page sent as next", s)
		}
	}
	for _, v := range q["space_guids"] {
		for _, s := range strings.Split(v, ",") {
			if s = strings.TrimSpace(s); s != "" {
				spaces = append(spaces, s)
			}
		}
	}
	if len(spaces) > maxSpaces {
		return nil, 0, 0, fmt.Errorf("too many space_guids: %d, at most %d in one request", len(spaces), maxSpaces)
	}
	return spaces, from, limit, nil
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
