// Package uaatoken holds what a UAA token says to the policy server (its claims and the
// scopes the external API knows) and mints such tokens for `netman dev-token` and
// tests. It is small on purpose: the CLI links it, and nothing of the server.
package uaatoken

import (
	"crypto/rsa"
	"fmt"

	"github.com/golang-jwt/jwt/v5"
)

// Sign mints an RS256 token for claims, naming kid in its header when kid is not empty.
// Production tokens come from UAA; this serves `netman dev-token` and tests.
func Sign(key *rsa.PrivateKey, kid string, claims *Claims) (string, error) {
	t := jwt.NewWithClaims(jwt.SigningMethodRS256, claims)
	if kid != "" {
		t.Header["kid"] = kid
	}
	s, err := t.SignedString(key)
	if err != nil {
		return "", fmt.Errorf("signing token: %w", err)
	}
	return s, nil
}

// Scopes the external API knows.
const (
	// ScopeAdmin lets a caller read and change every policy.
	ScopeAdmin = "network.admin"
	// ScopeWrite is what CF gives space developers: it allows changes only to apps in
	// their spaces, which Cloud Controller says (the policy server's auth.SpaceGuard);
	// without a Cloud Controller integration (cc_url) this scope alone is refused.
	ScopeWrite = "network.write"
)

// Claims are the parts of a UAA token the policy server uses.
type Claims struct {
	jwt.RegisteredClaims
	Scope    []string `json:"scope"`
	ClientID string   `json:"client_id"`
	UserName string   `json:"user_name"`
	UserID   string   `json:"user_id"`
}

// Who names the caller for logs and whoami: the user for user tokens, the client for
// client-credentials tokens.
func (c *Claims) Who() string {
	switch {
	case c.UserName != "":
		return c.UserName
	case c.ClientID != "":
		return "client:" + c.ClientID
	default:
		return "sub:" + c.Subject
	}
}

// HasScope reports whether the token carries scope s.
func (c *Claims) HasScope(s string) bool {
	for _, have := range c.Scope {
		if have == s {
			return true
		}
	}
	return false
}
