// Package auth verifies the UAA-issued bearer tokens that callers of the policy server's
// external API present, and decides what each token may do.
//
// Tokens are checked locally: the signing keys come once from UAA's /token_keys (and
// again only when a token names a key id not seen before) or from a PEM file, so no
// request waits on UAA.
package auth

import (
	"context"
	"crypto/rsa"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"netman/lib/mutualtls"
	"netman/lib/uaatoken"
)

// DefaultRefreshInterval is the least time between two fetches of /token_keys: a stream
// of tokens with made-up key ids must not turn into a stream of requests to UAA.
const DefaultRefreshInterval = 30 * time.Second

// maxKeysBody caps what we read from /token_keys; real key sets are a few KiB.
const maxKeysBody = 1 << 20

// Options say where the signing keys come from and what a valid token must claim.
// At least one of UAAURL and KeyFile is required.
type Options struct {
	// UAAURL is UAA's base URL; keys are read from UAAURL + "/token_keys".
	UAAURL string
	// UAACAFile is the CA that signed UAA's certificate (PEM). Empty: the system roots.
	UAACAFile string
	// KeyFile is a PEM RSA public key that signs tokens, whatever their key id.
	KeyFile string
	// Issuer, when set, must equal the token's iss.
	Issuer string
	// Audience, when set, must be one of the token's aud entries.
	Audience string
	// RefreshInterval is the least time between fetches of /token_keys
	// (DefaultRefreshInterval when zero).
	RefreshInterval time.Duration
	// HTTPTimeout bounds one fetch of /token_keys (10 s when zero).
	HTTPTimeout time.Duration
	Logger      *slog.Logger
}

// Verifier checks tokens. It is safe for concurrent use.
type Verifier struct {
	keysURL  string
	client   *http.Client
	static   *rsa.PublicKey
	parser   *jwt.Parser
	interval time.Duration
	log      *slog.Logger

	fetchMu   sync.Mutex // one fetch of /token_keys at a time
	mu        sync.Mutex // guards keys and lastFetch
	keys      map[string]*rsa.PublicKey
	lastFetch time.Time
}

// New builds a Verifier. It reads KeyFile and the CA now, so a bad path fails at start.
// It does not contact UAA: the server calls Prefetch at start, and a UAA that is down
// then only delays verification until /token_keys answers, it does not stop the server.
func New(opts Options) (*Verifier, error) {
	if opts.UAAURL == "" && opts.KeyFile == "" {
		return nil, errors.New("token verification needs uaa_url or uaa_key_file")
	}
	v := &Verifier{
		interval: opts.RefreshInterval,
		log:      opts.Logger,
		keys:     map[string]*rsa.PublicKey{},
	}
	if v.interval <= 0 {
		v.interval = DefaultRefreshInterval
	}
	if v.log == nil {
		v.log = slog.New(slog.DiscardHandler)
	}
	if opts.KeyFile != "" {
		pemBytes, err := os.ReadFile(opts.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("reading uaa_key_file: %w", err)
		}
		key, err := jwt.ParseRSAPublicKeyFromPEM(pemBytes)
		if err != nil {
			return nil, fmt.Errorf("parsing uaa_key_file %s: %w", opts.KeyFile, err)
		}
		v.static = key
	}
	if opts.UAAURL != "" {
		client, err := uaaClient(opts.UAACAFile, opts.HTTPTimeout)
		if err != nil {
			return nil, err
		}
		v.client = client
		v.keysURL = strings.TrimRight(opts.UAAURL, "/") + "/token_keys"
	}
	popts := []jwt.ParserOption{
		// RS256 only: accepting HS256 would let anyone who knows the public key sign.
		jwt.WithValidMethods([]string{jwt.SigningMethodRS256.Alg()}),
		jwt.WithExpirationRequired(),
	}
	if opts.Issuer != "" {
		popts = append(popts, jwt.WithIssuer(opts.Issuer))
	}
	if opts.Audience != "" {
		popts = append(popts, jwt.WithAudience(opts.Audience))
	}
	v.parser = jwt.NewParser(popts...)
	return v, nil
}

func uaaClient(caFile string, timeout time.Duration) (*http.Client, error) {
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	tlsConfig := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pool, err := mutualtls.CAPool(caFile)
		if err != nil {
			return nil, fmt.Errorf("uaa_ca_cert_file: %w", err)
		}
		tlsConfig.RootCAs = pool
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.TLSClientConfig = tlsConfig
	return &http.Client{Transport: transport, Timeout: timeout}, nil
}

// Verify checks the raw token (without "Bearer ") and returns its claims. Every error
// it returns means "not authenticated"; the text says why, for the 401 body.
func (v *Verifier) Verify(ctx context.Context, raw string) (*uaatoken.Claims, error) {
	claims := &uaatoken.Claims{}
	_, err := v.parser.ParseWithClaims(raw, claims, func(t *jwt.Token) (any, error) {
		kid, _ := t.Header["kid"].(string)
		return v.key(ctx, kid)
	})
	if err != nil {
		// The library's messages name the failed check ("token is expired",
		// "token has invalid audience"), which is what the caller needs.
		return nil, err
	}
	return claims, nil
}

// key finds the public key for kid. An unknown kid triggers a fetch of /token_keys
// (UAA rotated its keys), at most once per refresh interval. A configured key file
// verifies whatever no fetched key does.
func (v *Verifier) key(ctx context.Context, kid string) (*rsa.PublicKey, error) {
	if v.keysURL == "" {
		return v.static, nil
	}
	k, ok, _ := v.lookup(kid)
	if !ok {
		// Wait for a fetch in flight: it may bring this key.
		v.fetchMu.Lock()
		var due bool
		if k, ok, due = v.lookup(kid); !ok && due {
			k, ok = v.refresh(ctx, kid)
		}
		v.fetchMu.Unlock()
	}
	switch {
	case ok:
		return k, nil
	case v.static != nil:
		return v.static, nil
	case kid == "":
		return nil, errors.New("token names no key id (kid)")
	default:
		return nil, fmt.Errorf("signing key %q is unknown", kid)
	}
}

func (v *Verifier) lookup(kid string) (key *rsa.PublicKey, ok, due bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	key, ok = v.keys[kid]
	return key, ok, time.Since(v.lastFetch) >= v.interval
}

func (v *Verifier) refresh(ctx context.Context, kid string) (*rsa.PublicKey, bool) {
	v.mu.Lock()
	v.lastFetch = time.Now()
	v.mu.Unlock()
	// The fetch outlives a caller that hangs up: its result serves everyone.
	keys, err := v.fetch(context.WithoutCancel(ctx))
	if err != nil {
		v.log.Error("fetching UAA token keys", "url", v.keysURL, "error", err)
		return nil, false
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	v.keys = keys
	k, ok := keys[kid]
	return k, ok
}

// Prefetch loads the keys from /token_keys ahead of the first request. A failure is
// logged, not fatal: tokens retry once the refresh interval has passed.
func (v *Verifier) Prefetch(ctx context.Context) {
	if v.keysURL == "" {
		return
	}
	v.fetchMu.Lock()
	defer v.fetchMu.Unlock()
	v.refresh(ctx, "")
}

// jwks is the part of UAA's /token_keys answer (a JSON Web Key Set) we read.
type jwks struct {
	Keys []struct {
		Kid   string `json:"kid"`
		Kty   string `json:"kty"`
		N     string `json:"n"`
		E     string `json:"e"`
		Value string `json:"value"` // UAA also sends the key as PEM
	} `json:"keys"`
}

func (v *Verifier) fetch(ctx context.Context) (map[string]*rsa.PublicKey, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, v.keysURL, nil)
	if err != nil {
		return nil, fmt.Errorf("building request: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := v.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("requesting token keys: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("token keys: unexpected status %s", resp.Status)
	}
	var set jwks
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxKeysBody)).Decode(&set); err != nil {
		return nil, fmt.Errorf("decoding token keys: %w", err)
	}
	keys := make(map[string]*rsa.PublicKey, len(set.Keys))
	for _, k := range set.Keys {
		if k.Kty != "RSA" {
			continue
		}
		pub, err := rsaKey(k.N, k.E, k.Value)
		if err != nil {
			v.log.Warn("skipping unusable UAA token key", "kid", k.Kid, "error", err)
			continue
		}
		keys[k.Kid] = pub
	}
	if len(keys) == 0 {
		return nil, errors.New("token keys: no usable RSA key")
	}
	v.log.Info("loaded UAA token keys", "count", len(keys))
	return keys, nil
}

func rsaKey(n, e, pemValue string) (*rsa.PublicKey, error) {
	if n == "" || e == "" {
		if pemValue == "" {
			return nil, errors.New("key has neither n/e nor value")
		}
		return jwt.ParseRSAPublicKeyFromPEM([]byte(pemValue))
	}
	nb, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(n, "="))
	if err != nil {
		return nil, fmt.Errorf("decoding n: %w", err)
	}
	eb, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(e, "="))
	if err != nil {
		return nil, fmt.Errorf("decoding e: %w", err)
	}
	exp := new(big.Int).SetBytes(eb)
	if !exp.IsInt64() || exp.Int64() < 3 || exp.Int64() > 1<<31-1 {
		return nil, errors.New("exponent out of range")
	}
	return &rsa.PublicKey{N: new(big.Int).SetBytes(nb), E: int(exp.Int64())}, nil
}
