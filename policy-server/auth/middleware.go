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
		if !claims.HasScope(uaatoken.ScopeAdmin) {
			msg := "token lacks scope " + uaatoken.ScopeAdmin
			if claims.HasScope(uaatoken.ScopeWrite) {
				msg = "token lacks scope " + uaatoken.ScopeAdmin + ": " + uaatoken.ScopeWrite +
					" alone is not supported yet (it needs a Cloud Controller integration to check app ownership)"
			}
			httpapi.WriteError(w, r, http.StatusForbidden, msg)
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
	httpapi.WriteError(w, r, http.StatusUnauthorized, msg)
}
