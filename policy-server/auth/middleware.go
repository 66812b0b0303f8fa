package auth

import (
	"context"
	"net/http"
	"strings"

	"netman/lib/httpapi"
	"netman/lib/uaatoken"
)

type claimsKey struct{}

// FromContext returns the claims of the request's verified token.
func FromContext(ctx context.Context) (*uaatoken.Claims, bool) {
	c, ok := ctx.Value(claimsKey{}).(*uaatoken.Claims)
	return c, ok
}

// WithClaims returns ctx carrying c, as Require does for the handlers it wraps.
func WithClaims(ctx context.Context, c *uaatoken.Claims) context.Context {
	return context.WithValue(ctx, claimsKey{}, c)
}

// Require wraps next so it runs only for requests with a valid bearer token carrying
// network.admin. Anything else gets 401 (no or bad token, with WWW-Authenticate) or 403
// (a valid token without the scope), each with a JSON {"error": "..."} body.
func (v *Verifier) Require(next http.Handler) http.Handler {
	return v.RequireWrite(WriteAccess{}, next)
}

// WriteAccess says who passes RequireWrite besides network.admin tokens.
type WriteAccess struct {
	// SpaceDevelopers: a Cloud Controller integration decides per app (SpaceGuard), so
	// network.write tokens pass.
	SpaceDevelopers bool
	// SelfService (enable_space_developer_self_service): every user token passes, the
	// SpaceGuard deciding; needs SpaceDevelopers.
	SelfService bool
}

// RequireWrite is Require for the routes a space developer may use (create, delete
// and list policies, whoami): tokens allowed by access pass too, and the handler
// must then check each app with a SpaceGuard (IsAdmin tells it whether to).
func (v *Verifier) RequireWrite(access WriteAccess, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		raw, ok := bearer(r.Header.Get("Authorization"))
		if !ok {
			unauthorized(w, r, "missing bearer token: send Authorization: Bearer <UAA token>", "")
			return
		}
		claims, err := v.Verify(r.Context(), raw)
		if err != nil {
			unauthorized(w, r, err.Error(), "invalid_token")
			return
		}
		// The access line names whom the token was issued to, refused or not.
		httpapi.SetCaller(r.Context(), claims.Subject, claims.UserName, claims.ClientID)
		if msg := access.refuse(claims); msg != "" {
			httpapi.WriteError(w, r, http.StatusForbidden, msg)
			return
		}
		next.ServeHTTP(w, r.WithContext(WithClaims(r.Context(), claims)))
	})
}

// refuse returns why claims may not pass, or "" when they may.
func (a WriteAccess) refuse(c *uaatoken.Claims) string {
	switch {
	case c.HasScope(uaatoken.ScopeAdmin):
		return ""
	case a.SpaceDevelopers && (a.SelfService || c.HasScope(uaatoken.ScopeWrite)):
		return ""
	case a.SpaceDevelopers:
		return "token lacks scope " + uaatoken.ScopeAdmin + " or " + uaatoken.ScopeWrite
	case c.HasScope(uaatoken.ScopeWrite):
		return "token lacks scope " + uaatoken.ScopeAdmin + ": " + uaatoken.ScopeWrite +
			" needs a Cloud Controller integration (cc_url) to check app ownership, and none is configured"
	default:
		return "token lacks scope " + uaatoken.ScopeAdmin
	}
}

// bearer returns the token of an Authorization header: "Bearer <token>" (any case),
// or the bare token, which Cloud Foundry's policy server accepts too and some of its
// clients send. Another scheme ("Basic ...") is no bearer token.
func bearer(header string) (string, bool) {
	header = strings.TrimSpace(header)
	scheme, token, ok := strings.Cut(header, " ")
	if !ok {
		return header, header != "" && !strings.EqualFold(header, "bearer")
	}
	if !strings.EqualFold(scheme, "bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	return token, token != ""
}

func unauthorized(w http.ResponseWriter, r *http.Request, msg, code string) {
	challenge := "Bearer"
	if code != "" {
		// RFC 6750: say the token was the problem, so clients fetch a new one.
		challenge += ` error="` + code + `"`
	}
	w.Header().Set("WWW-Authenticate", challenge)
	httpapi.WriteError(w, r, http.StatusUnauthorized, msg)
}
