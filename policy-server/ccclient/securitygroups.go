package ccclient

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"netman/lib/apiwire"
)

// ErrUnstable is wrapped when security groups kept changing while they were listed:
// a listing across pages is consistent only if CC's last_update did not move.
var ErrUnstable = errors.New("security groups changed while they were listed")

// SecurityGroupsPerPage is the page size of the listing: CC's largest, as in
// cf-networking, so 1,000 groups take one request.
const SecurityGroupsPerPage = 5000

// Rule is one rule of a security group: CC's v3 rule, with the fields netman keeps.
type Rule = apiwire.SecurityGroupRule

// SecurityGroup is a v3 security group as netman uses it.
type SecurityGroup struct {
	GUID           string
	Name           string
	Rules          []Rule
	RunningDefault bool // globally_enabled.running
	StagingDefault bool // globally_enabled.staging
	RunningSpaces  []string
	StagingSpaces  []string
}

// LatestSecurityGroupUpdate returns CC's last_update of security groups from the
// internal API; the zero time when CC does not know it (404, as cf-networking treats it).
func (c *Client) LatestSecurityGroupUpdate(ctx context.Context) (time.Time, error) {
	var answer struct {
		LastUpdate string `json:"last_update"`
	}
	err := c.getJSON(ctx, "asg_latest_update", true, "/internal/v4/asg_latest_update", nil, &answer)
	var se *StatusError
	if errors.As(err, &se) && se.Status == http.StatusNotFound {
		return time.Time{}, nil
	}
	if err != nil {
		return time.Time{}, err
	}
	t, err := time.Parse(time.RFC3339Nano, answer.LastUpdate)
	if err != nil {
		return time.Time{}, fmt.Errorf("%w: asg_latest_update: last_update %q is not an RFC 3339 time", ErrUnavailable, answer.LastUpdate)
	}
	return t, nil
}

// SecurityGroups lists every security group (GET /v3/security_groups, 5,000 a page)
// and returns them with the last_update they are consistent with. before is CC's
// last_update as the caller read it just now (LatestSecurityGroupUpdate), which a sync
// has read anyway to decide whether to list. The listing is repeated (up to Attempts
// times) while last_update moves during it; then the error wraps ErrUnstable.
func (c *Client) SecurityGroups(ctx context.Context, before time.Time) ([]SecurityGroup, time.Time, error) {
	var err error
	for range c.opts.Attempts {
		var groups []SecurityGroup
		var after time.Time
		if groups, err = c.listSecurityGroups(ctx); err != nil {
			return nil, time.Time{}, err
		}
		if after, err = c.LatestSecurityGroupUpdate(ctx); err != nil {
			return nil, time.Time{}, err
		}
		if before.Equal(after) {
			return groups, after, nil
		}
		err = fmt.Errorf("%w: last_update moved from %s to %s", ErrUnstable, before.Format(time.RFC3339), after.Format(time.RFC3339))
		c.log.Info("security groups changed during the listing; listing again", "error", err)
		before = after // the next listing starts from what CC said at the end of this one
	}
	return nil, time.Time{}, err
}

func (c *Client) listSecurityGroups(ctx context.Context) ([]SecurityGroup, error) {
	groups := []SecurityGroup{}
	q := url.Values{"per_page": {fmt.Sprint(SecurityGroupsPerPage)}}
	err := c.eachPage(ctx, q, func(ctx context.Context, q url.Values) (page, error) {
		type spaces struct {
			Data []struct {
				GUID string `json:"guid"`
			} `json:"data"`
		}
		var answer struct {
			page
			Resources []struct {
				GUID            string `json:"guid"`
				Name            string `json:"name"`
				GloballyEnabled struct {
					Running bool `json:"running"`
					Staging bool `json:"staging"`
				} `json:"globally_enabled"`
				Rules         []Rule `json:"rules"`
				Relationships struct {
					RunningSpaces spaces `json:"running_spaces"`
					StagingSpaces spaces `json:"staging_spaces"`
				} `json:"relationships"`
			} `json:"resources"`
		}
		if err := c.getJSON(ctx, "security_groups", false, "/v3/security_groups", q, &answer); err != nil {
			return page{}, err
		}
		guids := func(s spaces) []string {
			out := make([]string, 0, len(s.Data))
			for _, d := range s.Data {
				out = append(out, d.GUID)
			}
			return out
		}
		for _, r := range answer.Resources {
			if r.Rules == nil {
				r.Rules = []Rule{}
			}
			groups = append(groups, SecurityGroup{
				GUID: r.GUID, Name: r.Name, Rules: r.Rules,
				RunningDefault: r.GloballyEnabled.Running, StagingDefault: r.GloballyEnabled.Staging,
				RunningSpaces: guids(r.Relationships.RunningSpaces), StagingSpaces: guids(r.Relationships.StagingSpaces),
			})
		}
		return answer.page, nil
	})
	return groups, err
}
