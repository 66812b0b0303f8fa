package cli

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"netman/lib/uaatoken"
)

const defaultTimeout = 30 * time.Second

var devTokenCommand = &command{
	name:     "dev-token",
	summary:  "mint a token for local use",
	synopsis: "dev-token --key FILE [--scope network.admin] [--user admin] [--ttl 1h] [--issuer ISS] [--audience AUD] [--client-id ID] [--kid KID]",
	details: `Prints an RS256 token signed with the RSA private key in FILE (PEM), for a policy
server whose uaa_key_file holds the matching public key. For local use and tests:
production tokens come from UAA (cf oauth-token).
`,
	setup: func(fs *flag.FlagSet, _ *common, env Env) runFunc {
		keyFile := fs.String("key", "", "RSA private key `file` (PEM)")
		scope := fs.String("scope", uaatoken.ScopeAdmin, "comma-separated `scopes`")
		user := fs.String("user", "admin", "user_name claim (empty: a client token)")
		clientID := fs.String("client-id", "netman-dev", "client_id claim")
		issuer := fs.String("issuer", "", "iss claim (the server's jwt_issuer)")
		audience := fs.String("audience", "", "comma-separated aud claim (the server's jwt_audience)")
		kid := fs.String("kid", "", "key id to name in the header")
		ttl := fs.Duration("ttl", time.Hour, "how long the token is valid")
		return func(_ context.Context, pos []string) error {
			if err := wantArgs("dev-token", pos, 0, ""); err != nil {
				return err
			}
			if *keyFile == "" {
				return usageError{msg: "dev-token needs --key FILE (an RSA private key in PEM)"}
			}
			if *ttl <= 0 {
				return usageError{msg: "--ttl must be positive"}
			}
			pemBytes, err := os.ReadFile(*keyFile)
			if err != nil {
				return fmt.Errorf("reading --key: %w", err)
			}
			key, err := jwt.ParseRSAPrivateKeyFromPEM(pemBytes)
			if err != nil {
				return fmt.Errorf("--key %s: %w", *keyFile, err)
			}
			now := time.Now()
			claims := &uaatoken.Claims{
				RegisteredClaims: jwt.RegisteredClaims{
					Issuer:    *issuer,
					Subject:   *clientID,
					IssuedAt:  jwt.NewNumericDate(now),
					ExpiresAt: jwt.NewNumericDate(now.Add(*ttl)),
				},
				Scope:    splitList(*scope),
				ClientID: *clientID,
				UserName: *user,
			}
			if *user != "" {
				claims.Subject, claims.UserID = *user, *user
			}
			if aud := splitList(*audience); len(aud) > 0 {
				claims.Audience = aud
			}
			token, err := uaatoken.Sign(key, *kid, claims)
			if err != nil {
				return err
			}
			_, err = fmt.Fprintln(env.Stdout, token)
			return err
		}
	},
}

func splitList(s string) []string {
	var out []string
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}
