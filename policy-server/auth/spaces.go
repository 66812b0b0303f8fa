package auth

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"netman/lib/models"
	"netman/lib/uaatoken"
)

// SpaceCC is what SpaceGuard asks Cloud Controller (ccclient.Client provides it).
type SpaceCC interface {
	AppSpaces(ctx context.Context, appGUIDs []string) (map[string]string, error)
	UserDeveloperSpaces(ctx context.Context, userGUID string) ([]string, error)
	AppsInSpaces(ctx context.Context, spaceGUIDs []string) ([]string, error)
}

// PolicyLister reads the policies naming some groups (the store's ByGroupIDs).
type PolicyLister interface {
	ByGroupIDs(ctx context.Context, ids []string) ([]models.Policy, error)
}

// SpaceGuard decides what a space developer (a token without network.admin) may do,
// with the rules of cf-networking's policy guard, quota guard and policy filter:
// create or delete a policy only when both its apps are in spaces the user is a
// space developer of; see only such policies; have at most MaxPoliciesPerSource
// policies per source app. An error that is not a *Refusal means Cloud Controller
// could not say (the caller answers 503): nothing is allowed on a guess.
type SpaceGuard struct {
	CC                   SpaceCC
	Policies             PolicyLister
	MaxPoliciesPerSource int
}

// Refusal is a decision against the caller; Reason is for the 403 body.
type Refusal struct{ Reason string }

func (r *Refusal) Error() string { return r.Reason }

// IsAdmin reports whether c may do anything without asking Cloud Controller.
func IsAdmin(c *uaatoken.Claims) bool { return c.HasScope(uaatoken.ScopeAdmin) }

func userOf(c *uaatoken.Claims) (string, error) {
	if c.UserID == "" {
		return "", &Refusal{Reason: "the token names no user (user_id): only users can own apps; a client needs " + uaatoken.ScopeAdmin}
	}
	return c.UserID, nil
}

// CheckWrite allows (nil) or refuses (*Refusal) a create (create=true) or delete of
// policies by the non-admin caller c. It asks CC for the apps' spaces (one request per
// chunk of 100 apps) and, at the same time, for the user's space developer roles (one
// request per 5,000), so it waits for one round trip per 100 apps.
func (g *SpaceGuard) CheckWrite(ctx context.Context, c *uaatoken.Claims, policies []models.Policy, create bool) error {
	user, err := userOf(c)
	if err != nil {
		return err
	}
	var apps []string
	for _, p := range policies {
		apps = append(apps, p.Source.ID, p.Destination.ID)
	}
	slices.Sort(apps)
	apps = slices.Compact(apps)

	type roles struct {
		spaces []string
		err    error
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	mineCh := make(chan roles, 1)
	go func() {
		spaces, err := g.CC.UserDeveloperSpaces(ctx, user)
		mineCh <- roles{spaces, err}
	}()
	spaceOf, err := g.CC.AppSpaces(ctx, apps)
	if err != nil {
		return fmt.Errorf("looking up the apps' spaces: %w", err)
	}
	var missing []string
	for _, a := range apps {
		if s, ok := spaceOf[a]; !ok || s == "" {
			missing = append(missing, a)
		}
	}
	if len(missing) > 0 {
		return &Refusal{Reason: "one or more applications cannot be found or accessed: " + list(missing)}
	}
	r := <-mineCh
	if r.err != nil {
		return fmt.Errorf("looking up the user's spaces: %w", r.err)
	}
	mine := make(map[string]bool, len(r.spaces))
	for _, s := range r.spaces {
		mine[s] = true
	}
	var foreign []string
	for _, a := range apps {
		if !mine[spaceOf[a]] {
			foreign = append(foreign, a)
		}
	}
	if len(foreign) > 0 {
		return &Refusal{Reason: "one or more applications cannot be found or accessed: " + list(foreign) +
			" (a space developer may change policies only between apps of spaces they are a space developer of)"}
	}
	if create {
		return g.checkQuota(ctx, policies)
	}
	return nil
}

// checkQuota refuses a create that would give a source app more than
// MaxPoliciesPerSource policies. Policies that exist already do not count twice.
func (g *SpaceGuard) checkQuota(ctx context.Context, policies []models.Policy) error {
	if g.MaxPoliciesPerSource <= 0 {
		return nil
	}
	var sources []string
	for _, p := range policies {
		sources = append(sources, p.Source.ID)
	}
	slices.Sort(sources)
	sources = slices.Compact(sources)
	existing, err := g.Policies.ByGroupIDs(ctx, sources)
	if err != nil {
		return fmt.Errorf("counting the apps' policies: %w", err)
	}
	have := map[models.PolicyKey]bool{}
	count := map[string]int{}
	for _, p := range existing {
		k := p.Key()
		if !have[k] && slices.Contains(sources, p.Source.ID) {
			count[p.Source.ID]++
		}
		have[k] = true
	}
	for _, p := range policies {
		if k := p.Key(); !have[k] {
			have[k] = true
			count[p.Source.ID]++
		}
	}
	for _, s := range sources {
		if count[s] > g.MaxPoliciesPerSource {
			return &Refusal{Reason: fmt.Sprintf("policy quota exceeded: app %s would be the source of %d policies, at most %d are allowed (max_policies_per_app_source)",
				s, count[s], g.MaxPoliciesPerSource)}
		}
	}
	return nil
}

// VisibleApps returns the apps whose policies the non-admin caller may see: the apps
// of every space they are a space developer of.
func (g *SpaceGuard) VisibleApps(ctx context.Context, c *uaatoken.Claims) (map[string]bool, error) {
	user, err := userOf(c)
	if err != nil {
		return nil, err
	}
	spaces, err := g.CC.UserDeveloperSpaces(ctx, user)
	if err != nil {
		return nil, fmt.Errorf("looking up the user's spaces: %w", err)
	}
	apps, err := g.CC.AppsInSpaces(ctx, spaces)
	if err != nil {
		return nil, fmt.Errorf("looking up the apps of the user's spaces: %w", err)
	}
	out := make(map[string]bool, len(apps))
	for _, a := range apps {
		out[a] = true
	}
	return out, nil
}

// Visible keeps the policies whose source and destination are both in apps.
func Visible(policies []models.Policy, apps map[string]bool) []models.Policy {
	out := []models.Policy{}
	for _, p := range policies {
		if apps[p.Source.ID] && apps[p.Destination.ID] {
			out = append(out, p)
		}
	}
	return out
}

// list names at most ten ids, so a 403 for a large request stays readable.
func list(ids []string) string {
	if len(ids) > 10 {
		return strings.Join(ids[:10], ", ") + fmt.Sprintf(" and %d more", len(ids)-10)
	}
	return strings.Join(ids, ", ")
}
