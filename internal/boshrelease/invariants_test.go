package boshrelease

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// What the director checks before it deploys a manifest, and what netman's ops file must
// leave behind, checked on an interpolated manifest. No director is needed: the link
// declarations of the jobs come from netman's own specs and, for the other releases, from
// testdata/release-links.json (read from their real job specs by testdata/extract-links.rb).

type linkDecl struct {
	Name     string `json:"name"`
	Type     string `json:"type"`
	Optional bool   `json:"optional"`
}

type jobLinks struct {
	Consumes []linkDecl `json:"consumes"`
	Provides []linkDecl `json:"provides"`
}

// releaseLinks: release -> job -> its link declarations.
func releaseLinks(t testing.TB) map[string]map[string]jobLinks {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot(t), "internal", "boshrelease", "testdata", "release-links.json"))
	if err != nil {
		t.Fatal(err)
	}
	var fixture map[string]struct {
		Jobs map[string]jobLinks `json:"jobs"`
	}
	if err := json.Unmarshal(data, &fixture); err != nil {
		t.Fatalf("release-links.json: %v", err)
	}
	out := map[string]map[string]jobLinks{}
	for release, r := range fixture {
		out[release] = r.Jobs
	}
	netman := map[string]jobLinks{}
	for _, job := range jobNames(t) {
		spec := readJobSpec(t, job)
		var l jobLinks
		decode := func(raw []map[string]json.RawMessage) (decls []linkDecl) {
			for _, r := range raw {
				var d linkDecl
				json.Unmarshal(r["name"], &d.Name)
				json.Unmarshal(r["type"], &d.Type)
				json.Unmarshal(r["optional"], &d.Optional)
				decls = append(decls, d)
			}
			return decls
		}
		l.Consumes, l.Provides = decode(spec.Consumes), decode(spec.Provides)
		netman[job] = l
	}
	out["netman"] = netman
	return out
}

// placedJobs is every job of an instance group, its own and those the addons place on it.
func (m manifest) placedJobs(g instanceGroup) []manifestJob {
	jobs := slices.Clone(g.Jobs)
	os := ""
	for _, s := range m.Stemcells {
		if s.Alias == g.Stemcell {
			os = s.OS
		}
	}
	for _, a := range m.Addons {
		if a.Include != nil && !a.Include.matches(g, os, false) {
			continue
		}
		if a.Exclude != nil && a.Exclude.matches(g, os, true) {
			continue
		}
		jobs = append(jobs, a.Jobs...)
	}
	return jobs
}

// matches: an include rule selects a group when each criterion it names matches; an
// exclude rule (any) when one does.
func (p *placement) matches(g instanceGroup, os string, any bool) bool {
	var results []bool
	if len(p.Stemcell) > 0 {
		results = append(results, slices.ContainsFunc(p.Stemcell, func(s struct {
			OS string `json:"os"`
		}) bool {
			return s.OS == os
		}))
	}
	if len(p.Jobs) > 0 {
		results = append(results, slices.ContainsFunc(p.Jobs, func(j struct{ Name, Release string }) bool {
			return slices.ContainsFunc(g.Jobs, func(gj manifestJob) bool { return gj.Name == j.Name && gj.Release == j.Release })
		}))
	}
	if len(p.InstanceGroups) > 0 {
		results = append(results, slices.Contains(p.InstanceGroups, g.Name))
	}
	if any {
		return slices.Contains(results, true)
	}
	return !slices.Contains(results, false)
}

// checkNoJobTwice: the director refuses "Colocated job 'x' is already added".
func checkNoJobTwice(t testing.TB, m manifest) {
	t.Helper()
	for _, g := range m.InstanceGroups {
		seen := map[string]bool{}
		for _, j := range m.placedJobs(g) {
			if seen[j.Name] {
				t.Errorf("instance group %s: job %s twice (the director refuses \"Colocated job '%s' is already added\")", g.Name, j.Name, j.Name)
			}
			seen[j.Name] = true
		}
	}
}

type provider struct{ name, typ, where string }

// checkLinks: every consumed link that is not optional has a provider in the deployment,
// by type (implicit) or by the name a `from:` gives, as the director resolves them. Problems
// that baseline (the same manifest without netman's ops file) has as well are logged, not
// failed: the fixture holds each release's newest stored specs, which can be newer or older
// than the versions cf-deployment pins (garden-cni's cloud_controller_container_networking_info
// is one: capi-release dropped the provider because cf-networking dropped the consumer, and
// the stored cf-networking commit predates that). netman's ops file must add no problem.
func checkLinks(t testing.TB, m manifest, baseline []string) {
	t.Helper()
	for _, p := range linkProblems(t, m) {
		if slices.Contains(baseline, p) {
			t.Logf("also without netman (release versions of the fixture): %s", p)
			continue
		}
		t.Error(p)
	}
}

func linkProblems(t testing.TB, m manifest) (problems []string) {
	t.Helper()
	links := releaseLinks(t)
	spec := func(j manifestJob) (jobLinks, bool) {
		l, ok := links[j.Release][j.Name]
		return l, ok
	}
	var providers []provider
	for _, g := range m.InstanceGroups {
		for _, j := range m.placedJobs(g) {
			l, ok := spec(j)
			if !ok {
				problems = append(problems, fmt.Sprintf("instance group %s: no link declarations for job %s of release %s in testdata/release-links.json (run testdata/extract-links.rb)", g.Name, j.Name, j.Release))
				continue
			}
			for _, p := range l.Provides {
				name := p.Name
				if setting, set := j.Provides[p.Name]; set {
					if setting == nil {
						continue // provides: {x: nil} turns it off
					}
					if as, _ := setting.(map[string]any)["as"].(string); as != "" {
						name = as
					}
				}
				providers = append(providers, provider{name, p.Type, g.Name + "/" + j.Name})
			}
			for _, p := range j.CustomProviders {
				providers = append(providers, provider{p.Name, p.Type, g.Name + "/" + j.Name})
			}
		}
	}
	for _, g := range m.InstanceGroups {
		for _, j := range m.placedJobs(g) {
			l, _ := spec(j)
			// The director refuses link settings for links the job's spec does not declare.
			for name := range j.Consumes {
				if !slices.ContainsFunc(l.Consumes, func(d linkDecl) bool { return d.Name == name }) {
					problems = append(problems, fmt.Sprintf("%s/%s: the manifest sets consumed link %s, which the job does not declare", g.Name, j.Name, name))
				}
			}
			for name := range j.Provides {
				if !slices.ContainsFunc(l.Provides, func(d linkDecl) bool { return d.Name == name }) {
					problems = append(problems, fmt.Sprintf("%s/%s: the manifest sets provided link %s, which the job does not declare", g.Name, j.Name, name))
				}
			}
			for _, c := range l.Consumes {
				setting, set := j.Consumes[c.Name]
				if set && setting == nil {
					if !c.Optional {
						problems = append(problems, fmt.Sprintf("%s/%s: link %s is not optional but the manifest turns it off", g.Name, j.Name, c.Name))
					}
					continue
				}
				if c.Optional {
					continue
				}
				from := ""
				if s, ok := setting.(map[string]any); ok {
					if _, other := s["deployment"]; other {
						continue // from another deployment: not checkable here
					}
					from, _ = s["from"].(string)
				}
				found := slices.ContainsFunc(providers, func(p provider) bool {
					return p.typ == c.Type && (from == "" || p.name == from)
				})
				if !found {
					problems = append(problems, fmt.Sprintf("%s/%s consumes link %s (type %s%s), which no job in the deployment provides", g.Name, j.Name, c.Name, c.Type, map[bool]string{true: ", from " + from}[from != ""]))
				}
			}
		}
	}
	return problems
}

// Jobs, releases and variables of silk and of cf-networking's policy server that netman's ops
// file replaces; none may be left.
var (
	replacedJobs = []string{"silk-cni", "silk-daemon", "silk-controller", "silk-datastore-syncer", "vxlan-policy-agent",
		"netmon", "iptables-logger", "policy-server-internal", "policy-server-asg-syncer"}
	replacedVariables = []string{"silk_ca", "silk_controller", "silk_daemon", "policy_server_asg_syncer_cc_client",
		"asg_syncer_locket_client", "network_connectivity_database_password"}
)

// checkNoSilk: no silk release, job, package path, variable or DNS alias is left.
func checkNoSilk(t testing.TB, m manifest, raw []byte) {
	t.Helper()
	if m.hasRelease("silk") {
		t.Error("the silk release is still listed")
	}
	for _, g := range m.InstanceGroups {
		for _, j := range m.placedJobs(g) {
			if j.Release == "silk" || slices.Contains(replacedJobs, j.Name) {
				t.Errorf("instance group %s still runs %s (release %s)", g.Name, j.Name, j.Release)
			}
		}
	}
	for _, v := range m.Variables {
		if slices.Contains(replacedVariables, v.Name) {
			t.Errorf("variable %s is left, and nothing uses it", v.Name)
		}
	}
	text := string(raw)
	for _, left := range []string{"/var/vcap/packages/silk", "/var/vcap/jobs/silk", "silk-controller.service.cf.internal", "((silk", "((network_connectivity"} {
		if strings.Contains(text, left) {
			t.Errorf("the manifest still mentions %s", left)
		}
	}
}

// checkVariablesDefined: every ((variable)) the manifest uses is a variable it defines or
// one an operator supplies (given); the director would stop at the first missing one.
func checkVariablesDefined(t testing.TB, m manifest, raw []byte, given ...string) {
	t.Helper()
	defined := map[string]bool{}
	for _, v := range m.Variables {
		defined[v.Name] = true
	}
	for _, g := range given {
		defined[g] = true
	}
	text := string(raw)
	for {
		i := strings.Index(text, "((")
		if i < 0 {
			break
		}
		end := strings.Index(text[i:], "))")
		if end < 0 {
			break
		}
		name, _, _ := strings.Cut(strings.TrimPrefix(text[i+2:i+end], "!"), ".")
		if !defined[name] {
			t.Errorf("((%s)) is used but not defined", text[i+2:i+end])
			defined[name] = true
		}
		text = text[i+end:]
	}
}

// checkExternalTLS: route_registrar's /networking route is a TLS route to port 4002 whose
// server name must be in the certificate netman serves there.
func checkExternalTLS(t testing.TB, m manifest) {
	t.Helper()
	api := m.group(t, "api")
	ps, ok := api.job("policy-server")
	if !ok || ps.Release != "netman" {
		t.Fatalf("api's policy-server is not netman's: %+v", ps)
	}
	if ps.Properties["enable_tls"] != true || ps.Properties["server_cert"] != "((network_policy_server_external.certificate))" ||
		ps.Properties["server_key"] != "((network_policy_server_external.private_key))" {
		t.Errorf("the external API is not served over TLS with network_policy_server_external: enable_tls %v, server_cert %v, server_key %v",
			ps.Properties["enable_tls"], ps.Properties["server_cert"], ps.Properties["server_key"])
	}
	var names []any
	for _, v := range m.Variables {
		if v.Name == "network_policy_server_external" {
			names, _ = v.Options["alternative_names"].([]any)
		}
	}
	rr, _ := api.job("route_registrar")
	routes, _ := dig(rr.Properties, "route_registrar", "routes").([]any)
	var route map[string]any
	for _, r := range routes {
		if r, _ := r.(map[string]any); r["name"] == "policy-server" {
			route = r
		}
	}
	if route == nil {
		t.Fatal("no policy-server route on api's route_registrar")
	}
	if fmt.Sprint(route["tls_port"]) != "4002" || !slices.Contains(names, route["server_cert_domain_san"]) {
		t.Errorf("route %v: tls_port or server_cert_domain_san does not match the certificate's names %v", route, names)
	}
	spec := readJobSpec(t, "policy-server")
	if fmt.Sprint(spec.Properties["policy-server.listen_port"].Default) != "4002" {
		t.Errorf("the external API listens on %v, the route goes to 4002", spec.Properties["policy-server.listen_port"].Default)
	}
}

func dig(m map[string]any, keys ...string) any {
	var node any = m
	for _, k := range keys {
		mm, _ := node.(map[string]any)
		node = mm[k]
	}
	return node
}

// cfNetworkingOnly are properties cf-deployment sets on cf-networking's policy-server job
// that netman's does not declare at the top level (the director hides undeclared properties
// from the job); netman's own is policy-server.enable_space_developer_self_service.
var cfNetworkingOnly = []string{"enable_space_developer_self_service"}

// checkNetmanJobs: the netman jobs declare every property the manifest gives them.
func checkNetmanJobs(t testing.TB, m manifest) {
	t.Helper()
	for _, g := range m.InstanceGroups {
		for _, j := range g.Jobs {
			if j.Release != "netman" {
				continue
			}
			p := j.Properties
			if j.Name == "policy-server" {
				p = map[string]any{}
				for k, v := range j.Properties {
					if !slices.Contains(cfNetworkingOnly, k) {
						p[k] = v
					}
				}
			}
			checkDeclared(t, j.Name, p)
		}
	}
}
