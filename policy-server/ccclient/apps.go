package ccclient

import (
	"context"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// page is CC v3's pagination block; only "next" matters to a reader of all pages.
type page struct {
	Pagination struct {
		TotalPages int `json:"total_pages"`
		Next       *struct {
			Href string `json:"href"`
		} `json:"next"`
	} `json:"pagination"`
}

func (p page) hasNext() bool { return p.Pagination.Next != nil && p.Pagination.Next.Href != "" }

type relationship struct {
	Data *struct {
		GUID string `json:"guid"`
	} `json:"data"`
}

func (r relationship) guid() string {
	if r.Data == nil {
		return ""
	}
	return r.Data.GUID
}

// AppSpaces returns the space of each app CC has among appGUIDs; apps CC does not
// have are absent. One request per chunk of ids (GET /v3/apps?guids=...).
func (c *Client) AppSpaces(ctx context.Context, appGUIDs []string) (map[string]string, error) {
	spaces := make(map[string]string, len(appGUIDs))
	for _, chunk := range chunks(unique(appGUIDs), c.opts.ChunkSize) {
		q := url.Values{"guids": {strings.Join(chunk, ",")}, "per_page": {strconv.Itoa(len(chunk))}}
		err := c.eachPage(ctx, q, func(ctx context.Context, q url.Values) (page, error) {
			var answer struct {
				page
				Resources []struct {
					GUID          string `json:"guid"`
					Relationships struct {
						Space relationship `json:"space"`
					} `json:"relationships"`
				} `json:"resources"`
			}
			err := c.getJSON(ctx, "apps", false, "/v3/apps", q, &answer)
			for _, r := range answer.Resources {
				spaces[r.GUID] = r.Relationships.Space.guid()
			}
			return answer.page, err
		})
		if err != nil {
			return nil, err
		}
	}
	return spaces, nil
}

// maxPages bounds a listing, so a CC that always answers "next" cannot loop us.
const maxPages = 10000

// eachPage calls get for page 1, 2, ... while CC says there is a next page.
func (c *Client) eachPage(ctx context.Context, q url.Values, get func(context.Context, url.Values) (page, error)) error {
	for n := 1; n <= maxPages; n++ {
		q.Set("page", strconv.Itoa(n))
		p, err := get(ctx, q)
		if err != nil {
			return err
		}
		if !p.hasNext() {
			return nil
		}
	}
	return fmt.Errorf("%w: more than %d pages", ErrUnavailable, maxPages)
}

func unique(ids []string) []string {
	out := slices.Clone(ids)
	slices.Sort(out)
	return slices.Compact(out)
}

// UserDeveloperSpaces returns every space the user holds the space_developer role
// in (GET /v3/roles, all pages of 5,000).
func (c *Client) UserDeveloperSpaces(ctx context.Context, userGUID string) ([]string, error) {
	var out []string
	q := url.Values{"types": {"space_developer"}, "user_guids": {userGUID}, "per_page": {"5000"}}
	err := c.eachPage(ctx, q, func(ctx context.Context, q url.Values) (page, error) {
		var answer struct {
			page
			Resources []struct {
				Type          string `json:"type"`
				Relationships struct {
					User  relationship `json:"user"`
					Space relationship `json:"space"`
				} `json:"relationships"`
			} `json:"resources"`
		}
		err := c.getJSON(ctx, "roles", false, "/v3/roles", q, &answer)
		for _, r := range answer.Resources {
			if r.Type == "space_developer" && r.Relationships.User.guid() == userGUID {
				out = append(out, r.Relationships.Space.guid())
			}
		}
		return answer.page, err
	})
	if err != nil {
		return nil, err
	}
	return unique(out), nil
}

// AppsInSpaces returns the guids of every app in the spaces (GET
// /v3/apps?space_guids=..., one request per chunk of spaces and page of 5,000 apps).
func (c *Client) AppsInSpaces(ctx context.Context, spaceGUIDs []string) ([]string, error) {
	var out []string
	for _, chunk := range chunks(unique(spaceGUIDs), c.opts.ChunkSize) {
		q := url.Values{"space_guids": {strings.Join(chunk, ",")}, "per_page": {"5000"}}
		err := c.eachPage(ctx, q, func(ctx context.Context, q url.Values) (page, error) {
			var answer struct {
				page
				Resources []struct {
					GUID string `json:"guid"`
				} `json:"resources"`
			}
			err := c.getJSON(ctx, "apps", false, "/v3/apps", q, &answer)
			for _, r := range answer.Resources {
				out = append(out, r.GUID)
			}
			return answer.page, err
		})
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}
