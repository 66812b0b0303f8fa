package auth

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
