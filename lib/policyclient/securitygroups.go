package policyclient

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"strconv"
	"strings"

	"netman/lib/apiwire"
)

// SecurityGroupsPath is the internal API's list of application security groups.
const SecurityGroupsPath = apiwire.InternalSecurityGroupsV1Path

// securityGroupsPerPage is what silk's agent asks for, and the server's largest page.
const securityGroupsPerPage = 5000

// SecurityGroup is an application security group with its rules decoded.
type SecurityGroup struct {
	GUID           string
	Name           string
	Rules          []apiwire.SecurityGroupRule
	StagingDefault bool
	RunningDefault bool
	StagingSpaces  []string
	RunningSpaces  []string
}

// SecurityGroups returns the security groups that apply to containers of spaces: the
// globally enabled ones and those bound to one of spaces (for staging or running),
// reading every page.
func (c *Client) SecurityGroups(ctx context.Context, spaces []string) ([]SecurityGroup, error) {
	var out []SecurityGroup
	var from int64
	for pages := 0; ; pages++ {
		if pages > 10000 {
			return nil, fmt.Errorf("GET %s: more than 10000 pages", SecurityGroupsPath)
		}
		q := url.Values{"per_page": {strconv.Itoa(securityGroupsPerPage)}}
		if len(spaces) > 0 {
			q.Set("space_guids", strings.Join(spaces, ","))
		}
		if from != 0 {
			q.Set("from", strconv.FormatInt(from, 10))
		}
		data, err := c.get(ctx, SecurityGroupsPath, q.Encode())
		if err != nil {
			return nil, err
		}
		var page apiwire.SecurityGroupsV1
		if err := json.Unmarshal(data, &page); err != nil {
			return nil, fmt.Errorf("GET %s: decoding answer: %w", SecurityGroupsPath, err)
		}
		for _, g := range page.SecurityGroups {
			sg := SecurityGroup{GUID: g.GUID, Name: g.Name, StagingDefault: g.StagingDefault, RunningDefault: g.RunningDefault,
				StagingSpaces: g.StagingSpaceGUIDs, RunningSpaces: g.RunningSpaceGUIDs}
			if err := json.Unmarshal([]byte(g.Rules), &sg.Rules); err != nil {
				return nil, fmt.Errorf("GET %s: rules of security group %s: %w", SecurityGroupsPath, g.GUID, err)
			}
			out = append(out, sg)
		}
		if page.Next == 0 {
			return out, nil
		}
		if page.Next <= from {
			return nil, fmt.Errorf("GET %s: next %d does not move past %d", SecurityGroupsPath, page.Next, from)
		}
		from = page.Next
	}
}
