// Package securitygroups serves GET /networking/v1/internal/security_groups on the
// internal (mutual TLS) server: the application security groups synced from Cloud
// Controller (package asgsync), in the shape and pagination silk's vxlan-policy-agent
// reads with policy_client.GetSecurityGroupsForSpace:
//
//	GET /networking/v1/internal/security_groups?per_page=5000[&space_guids=a,b][&from=N]
//	{"next": N, "security_groups": [{"guid", "name", "rules", "staging_default",
//	  "running_default", "staging_space_guids", "running_space_guids"}]}
//
// rules is a JSON string holding the JSON array of rules (the client unquotes it).
// The groups are those globally enabled plus those bound to one of space_guids; pages
// go in id order, from is the id to start at, next the id of the first group not sent
// (0: none left).
package securitygroups

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"netman/policy-server/api"
	"netman/policy-server/store"
)

// Path is the route's path.
const Path = "/networking/v1/internal/security_groups"

// MaxPerPage caps per_page: CC's own page limit, and what silk asks for.
const MaxPerPage = 5000

// Store reads a page of groups (store.Store).
type Store interface {
	SecurityGroupsForSpaces(ctx context.Context, spaces []string, from int64, limit int) (store.SecurityGroupsPage, error)
}

// Page is the response body.
type Page struct {
	Next           int64           `json:"next"`
	SecurityGroups []SecurityGroup `json:"security_groups"`
}

// SecurityGroup is one group of a Page.
type SecurityGroup struct {
	GUID              string   `json:"guid"`
	Name              string   `json:"name"`
	Rules             string   `json:"rules"` // a JSON array, as a string
	StagingDefault    bool     `json:"staging_default"`
	RunningDefault    bool     `json:"running_default"`
	StagingSpaceGUIDs []string `json:"staging_space_guids"`
	RunningSpaceGUIDs []string `json:"running_space_guids"`
}

// Handler serves the route. maxSpaces caps the space guids of one request (the
// server's max_policy_group_ids).
func Handler(st Store, maxSpaces int) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		spaces, from, limit, err := parse(r.URL.RawQuery, maxSpaces)
		if err != nil {
			api.WriteError(w, r, http.StatusBadRequest, err.Error())
			return
		}
		p, err := st.SecurityGroupsForSpaces(r.Context(), spaces, from, limit)
		if err != nil {
			api.WriteStoreError(w, r, err)
			return
		}
		out := Page{Next: p.Next, SecurityGroups: make([]SecurityGroup, len(p.Groups))}
		for i, g := range p.Groups {
			out.SecurityGroups[i] = SecurityGroup{
				GUID: g.GUID, Name: g.Name, Rules: g.Rules,
				StagingDefault: g.StagingDefault, RunningDefault: g.RunningDefault,
				StagingSpaceGUIDs: nonNil(g.StagingSpaces), RunningSpaceGUIDs: nonNil(g.RunningSpaces),
			}
		}
		body, err := json.Marshal(out)
		if err != nil {
			api.WriteError(w, r, http.StatusInternalServerError, "encoding the response failed")
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(body)
	})
}

// parse reads per_page (1..MaxPerPage; larger values are lowered to it, absent: one
// page of MaxPerPage), from (an id, 0 or more) and space_guids (comma-separated).
func parse(rawQuery string, maxSpaces int) (spaces []string, from int64, limit int, err error) {
	q, err := url.ParseQuery(rawQuery)
	if err != nil {
		return nil, 0, 0, fmt.Errorf("invalid query string: %v", err)
	}
	limit = MaxPerPage
	if s := q.Get("per_page"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			return nil, 0, 0, fmt.Errorf("per_page %q must be a positive integer (at most %d are sent)", s, MaxPerPage)
		}
		limit = min(n, MaxPerPage)
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
	if maxSpaces > 0 && len(spaces) > maxSpaces {
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
