// Command devtoken mints an RS256 JWT shaped like a UAA access token, for the demo and for
// trying the external API by hand against a policy server configured with `uaa_key_file`.
// It is a development tool: real deployments get their tokens from UAA.
//
//	go run ./internal/tools/devtoken -key signing.key -scope network.admin
package main

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "devtoken:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("devtoken", flag.ContinueOnError)
	keyFile := fs.String("key", "", "PEM RSA private key that signs the token (required)")
	scopes := fs.String("scope", "network.admin", "comma-separated scopes")
	subject := fs.String("user", "demo-admin", "user name (user_name and sub claims)")
	issuer := fs.String("issuer", "", "iss claim (omitted when empty)")
	audience := fs.String("audience", "", "aud claim (omitted when empty)")
	ttl := fs.Duration("ttl", time.Hour, "lifetime of the token")
	kid := fs.String("kid", "", "key id header (omitted when empty)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *keyFile == "" {
		return errors.New("-key is required")
	}
	pemBytes, err := os.ReadFile(*keyFile)
	if err != nil {
		return fmt.Errorf("reading signing key: %w", err)
	}
	block, _ := pem.Decode(pemBytes)
	if block == nil {
		return fmt.Errorf("%s holds no PEM block", *keyFile)
	}
	key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		if k1, err1 := x509.ParsePKCS1PrivateKey(block.Bytes); err1 == nil {
			key = k1
		} else {
			return fmt.Errorf("parsing signing key %s: %w", *keyFile, err)
		}
	}

	now := time.Now()
	claims := jwt.MapClaims{
		"sub":       *subject,
		"user_name": *subject,
		"client_id": "netman-devtoken",
		"scope":     strings.Split(*scopes, ","),
		"iat":       now.Unix(),
		"nbf":       now.Add(-time.Minute).Unix(),
		"exp":       now.Add(*ttl).Unix(),
	}
	if *issuer != "" {
		claims["iss"] = *issuer
	}
	if *audience != "" {
		claims["aud"] = []string{*audience}
	}
	tok := jwt.NewWithClaims(jwt.SigningMethodRS256, claims)
	if *kid != "" {
		tok.Header["kid"] = *kid
	}
	signed, err := tok.SignedString(key)
	if err != nil {
		return fmt.Errorf("signing: %w", err)
	}
	fmt.Println(signed)
	return nil
}
