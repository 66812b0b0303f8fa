package auth

import (
	"context"
	"net/http"
	"strings"

	"netman/policy-server/api"
)

// Scopes the external API knows.
const (
	// ScopeAdmin lets a caller read and change every policy.
	ScopeAdmin = "network.admin"
	// ScopeWrite is what CF gives space developers: it allows changes only to apps in
	// their spaces, which needs Cloud Controller to say who owns an app. netman has no
	// Cloud Controller integration yet, so this scope alone is refused.
	ScopeWrite = "network.write"
)

type claimsKey struct{}

// FromContext returns the claims of the request's verified token.
func FromContext(ctx context.Context) (*Claims, bool) {
	c, ok := ctx.Value(claimsKey{}).(*Claims)
	return c, ok
}

// WithClaims returns ctx carrying c, as Require does for the handlers it wraps.
func WithClaims(ctx context.Context, c *Claims) context.Context {
	return context.WithValue(ctx, claimsKey{}, c)
}

// Require wraps next so it runs only for requests with a valid bearer token carrying
// network.admin. Anything else gets 401 (no or bad token, with WWW-Authenticate) or 403
// (a valid token without the scope), each with a JSON {"error": "..."} body.
func (v *Verifier) Require(next http.Handler) http.Handler {
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
		if !claims.HasScope(ScopeAdmin) {
			msg := "token lacks scope " + ScopeAdmin
			if claims.HasScope(ScopeWrite) {
				msg = "token lacks scope " + ScopeAdmin + ": " + ScopeWrite +
					" alone is not supported yet (it needs a Cloud Controller integration to check app ownership)"
			}
			api.WriteError(w, r, http.StatusForbidden, msg)
			return
		}
		next.ServeHTTP(w, r.WithContext(WithClaims(r.Context(), claims)))
	})
}

func bearer(header string) (string, bool) {
	scheme, token, ok := strings.Cut(strings.TrimSpace(header), " ")
	if !ok || !strings.EqualFold(scheme, "bearer") {
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
	api.WriteError(w, r, http.StatusUnauthorized, msg)
}
