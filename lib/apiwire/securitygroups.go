package apiwire

// InternalSecurityGroupsV1Path is where agents read the application security groups:
// GET ...?per_page=N[&space_guids=a,b][&from=ID], the shape and pagination silk's
// policy_client.GetSecurityGroupsForSpace reads.
const InternalSecurityGroupsV1Path = "/networking/v1/internal/security_groups"

// SecurityGroupsV1 is one page of security groups. Next is the id to pass as from for
// the next page, 0 on the last one.
type SecurityGroupsV1 struct {
	Next           int64             `json:"next"`
	SecurityGroups []SecurityGroupV1 `json:"security_groups"`
}

// SecurityGroupV1 is a Cloud Controller application security group. Rules is a JSON
// string holding the JSON array of rules (the client unquotes it, as silk does).
type SecurityGroupV1 struct {
	GUID              string   `json:"guid"`
	Name              string   `json:"name"`
	Rules             string   `json:"rules"`
	StagingDefault    bool     `json:"staging_default"`
	RunningDefault    bool     `json:"running_default"`
	StagingSpaceGUIDs []string `json:"staging_space_guids"`
	RunningSpaceGUIDs []string `json:"running_space_guids"`
}

// SecurityGroupRule is one rule of a security group, inside SecurityGroupV1.Rules: the
// fields of Cloud Controller's v3 rule that cf-networking keeps and silk reads.
type SecurityGroupRule struct {
	Protocol    string `json:"protocol"`
	Destination string `json:"destination"`
	Ports       string `json:"ports"`
	Type        int    `json:"type"`
	Code        int    `json:"code"`
	Description string `json:"description"`
	Log         bool   `json:"log"`
}
