package internalapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	"netman/internal/testsupport/storetest"
	"netman/lib/apiwire"
	"netman/lib/httpapi"
	"netman/policy-server/api/internalapi"
	"netman/policy-server/policycache"
	"netman/policy-server/store"
)

// The silk* types and silkGetSecurityGroupsForSpace read the endpoint the way silk's
// vxlan-policy-agent does with code.cloudfoundry.org/policy_client v0.23.0
// (InternalClient.GetSecurityGroupsForSpace, SecurityGroupRules.UnmarshalJSON):
// silk cannot run here, so its reading logic is restated from its source.

type silkRule struct {
	Protocol    string `json:"protocol"`
	Destination string `json:"destination"`
	Ports       string `json:"ports,omitempty"`
	Type        int    `json:"type"`
	Code        int    `json:"code"`
	Description string `json:"description,omitempty"`
	Log         bool   `json:"log"`
}

type silkRules []silkRule

// UnmarshalJSON is silk's: the value is a JSON string that holds the array.
func (r *silkRules) UnmarshalJSON(data []byte) error {
	s, err := strconv.Unquote(string(data))
	if err != nil {
		return err
	}
	type plain silkRules
	return json.Unmarshal([]byte(s), (*plain)(r))
}

type silkGroup struct {
	Guid              string    `json:"guid"`
	Name              string    `json:"name"`
	Rules             silkRules `json:"rules"`
	StagingDefault    bool      `json:"staging_default"`
	RunningDefault    bool      `json:"running_default"`
	StagingSpaceGuids []string  `json:"staging_space_guids"`
	RunningSpaceGuids []string  `json:"running_space_guids"`
}

type silkResponse struct {
	Next           int         `json:"next"`
	SecurityGroups []silkGroup `json:"security_groups"`
}

func silkGetSecurityGroupsForSpace(t *testing.T, base string, perPage int, spaceGuids ...string) ([]silkGroup, int) {
	t.Helper()
	var groups []silkGroup
	var next, requests int
	for initial := true; initial || next != 0; initial = false {
		url := fmt.Sprintf("%s/networking/v1/internal/security_groups?per_page=%d", base, perPage)
		if len(spaceGuids) > 0 {
			url = fmt.Sprintf("%s&space_guids=%s", url, strings.Join(spaceGuids, ","))
		}
		if next != 0 {
			url = fmt.Sprintf("%s&from=%d", url, next)
		}
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		var r silkResponse
		err = json.NewDecoder(resp.Body).Decode(&r)
		resp.Body.Close()
		if resp.StatusCode != 200 || err != nil {
			t.Fatalf("GET %s: %d %v", url, resp.StatusCode, err)
		}
		requests++
		groups = append(groups, r.SecurityGroups...)
		next = r.Next
		if requests > 100 {
			t.Fatal("pagination does not end")
		}
	}
	return groups, requests
}

func serve(t *testing.T, groups []store.SecurityGroup) string {
	t.Helper()
	st, _, _ := storetest.Open(t, store.Options{})
	if _, err := st.ReplaceSecurityGroups(context.Background(), groups); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(httpapi.NewMux(httpapi.Middleware{Server: "internal", Logger: slog.New(slog.DiscardHandler)}, internalapi.V1Routes(policycache.New(st, policycache.Options{Encoding: internalapi.Encoding()}), st, 100)))
	t.Cleanup(srv.Close)
	return srv.URL
}

func TestSilkReadsEveryPage(t *testing.T) {
	var groups []store.SecurityGroup
	for i := range 7 {
		groups = append(groups, store.SecurityGroup{
			GUID: fmt.Sprintf("sg-%d", i), Name: fmt.Sprintf("group %d", i),
			Rules:         fmt.Sprintf(`[{"protocol":"tcp","destination":"10.0.%d.0/24","ports":"443","type":0,"code":0,"description":"say \"hi\" <b>","log":true}]`, i),
			RunningSpaces: []string{fmt.Sprintf("space-%d", i%2)},
		})
	}
	groups = append(groups, store.SecurityGroup{GUID: "global", Name: "global", Rules: "[]", RunningDefault: true})
	base := serve(t, groups)

	got, requests := silkGetSecurityGroupsForSpace(t, base, 2, "space-1")
	var names []string
	for _, g := range got {
		names = append(names, g.Guid)
	}
	slices.Sort(names)
	if want := []string{"global", "sg-1", "sg-3", "sg-5"}; !slices.Equal(names, want) || requests != 2 {
		t.Fatalf("silk got %v in %d requests, want %v in 2", names, requests, want)
	}
	for _, g := range got {
		if g.Guid == "sg-3" && (len(g.Rules) != 1 || g.Rules[0].Destination != "10.0.3.0/24" || g.Rules[0].Description != `say "hi" <b>` || !g.Rules[0].Log) {
			t.Errorf("rules of sg-3 as silk reads them: %+v", g.Rules)
		}
		if g.Guid == "global" && (g.Rules == nil || g.StagingSpaceGuids == nil) {
			t.Errorf("global group: %+v (empty lists must be [], not null)", g)
		}
	}
	// Without space_guids only the global groups, as cf-networking answers.
	if got, _ := silkGetSecurityGroupsForSpace(t, base, 5000); len(got) != 1 || got[0].Guid != "global" {
		t.Fatalf("no spaces: %+v", got)
	}
}

// TestShapeMatchesCapturedResponse compares the answer with a response of
// cf-networking's policy server (testdata, from its API documentation): the same keys
// with the same JSON types, and both readable by silk's decoding.
func TestShapeMatchesCapturedResponse(t *testing.T) {
	captured, err := os.ReadFile("testdata/cf-networking-security-groups.json")
	if err != nil {
		t.Fatal(err)
	}
	var fromCF silkResponse
	if err := json.Unmarshal(captured, &fromCF); err != nil || len(fromCF.SecurityGroups[1].Rules) != 2 {
		t.Fatalf("silk's decoding of the captured response: %v %+v", err, fromCF)
	}
	// The same groups through netman: rules stored as cf-networking's syncer writes them.
	var groups []store.SecurityGroup
	var raw struct {
		SecurityGroups []struct {
			GUID, Name, Rules                    string
			StagingDefault                       bool     `json:"staging_default"`
			RunningDefault                       bool     `json:"running_default"`
			StagingSpaceGuids, RunningSpaceGuids []string `json:"-"`
			Staging                              []string `json:"staging_space_guids"`
			Running                              []string `json:"running_space_guids"`
		} `json:"security_groups"`
	}
	if err := json.Unmarshal(captured, &raw); err != nil {
		t.Fatal(err)
	}
	for _, g := range raw.SecurityGroups {
		groups = append(groups, store.SecurityGroup{GUID: g.GUID, Name: g.Name, Rules: g.Rules,
			StagingDefault: g.StagingDefault, RunningDefault: g.RunningDefault, StagingSpaces: g.Staging, RunningSpaces: g.Running})
	}
	base := serve(t, groups)
	resp, err := http.Get(base + apiwire.InternalSecurityGroupsV1Path + "?per_page=5000&space_guids=5351a742-6704-46df-8de0-1a376adab65c,d5bbc5ed-886a-44e6-945d-67df1013fa16")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var ours, theirs any
	if err := json.NewDecoder(resp.Body).Decode(&ours); err != nil {
		t.Fatal(err)
	}
	_ = json.Unmarshal(captured, &theirs)
	if a, b := shape(ours), shape(theirs); a != b {
		t.Fatalf("shape differs:\nnetman:        %s\ncf-networking: %s", a, b)
	}
	var fromNetman silkResponse
	body, _ := json.Marshal(ours)
	if err := json.Unmarshal(body, &fromNetman); err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(fromNetman.SecurityGroups, func(a, b silkGroup) int { return strings.Compare(a.Guid, b.Guid) })
	slices.SortFunc(fromCF.SecurityGroups, func(a, b silkGroup) int { return strings.Compare(a.Guid, b.Guid) })
	for i := range fromCF.SecurityGroups {
		slices.Sort(fromCF.SecurityGroups[i].RunningSpaceGuids)
		slices.Sort(fromCF.SecurityGroups[i].StagingSpaceGuids)
	}
	if !reflect.DeepEqual(fromNetman, fromCF) {
		t.Fatalf("silk reads netman's answer as\n%+v\nand cf-networking's as\n%+v", fromNetman, fromCF)
	}
}

// shape renders the keys and JSON types of v, taking the first element of arrays.
func shape(v any) string {
	switch x := v.(type) {
	case map[string]any:
		var keys []string
		for k := range x {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		var parts []string
		for _, k := range keys {
			parts = append(parts, k+":"+shape(x[k]))
		}
		return "{" + strings.Join(parts, ",") + "}"
	case []any:
		if len(x) == 0 {
			return "[]"
		}
		return "[" + shape(x[0]) + "]"
	case string:
		return "string"
	case float64:
		return "number"
	case bool:
		return "bool"
	default:
		return "null"
	}
}

func TestBadParameters(t *testing.T) {
	base := serve(t, nil)
	for _, q := range []string{"per_page=0", "per_page=x", "from=-1", "from=abc", "space_guids=" + strings.Repeat("s,", 101), "%zz"} {
		resp, err := http.Get(base + apiwire.InternalSecurityGroupsV1Path + "?" + q)
		if err != nil {
			t.Fatal(err)
		}
		var body struct{ Error string }
		_ = json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if resp.StatusCode != 400 || body.Error == "" {
			t.Errorf("?%s: %d %+v, want 400 with an error", q, resp.StatusCode, body)
		}
	}
}
