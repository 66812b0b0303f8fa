// Package ccclient talks to Cloud Controller for the policy server, with the
// credentials cf-networking's policy server uses, so cf-deployment's existing
// certificates and UAA client work unchanged:
//
//   - the public v3 API (cc_url, verified with cc_ca_cert_file) with a UAA token of
//     the network-policy client (client credentials; authorities uaa.resource,
//     cloud_controller.admin_read_only): apps, roles, security groups;
//   - the internal API (cc_internal_url) over mutual TLS with the cc_internal client
//     certificate (cf-deployment's policy_server_asg_syncer_cc_client): the security
//     groups' last_update, which lets a sync skip unchanged data.
//
// Every request has a timeout, is retried with exponential backoff on network errors,
// 5xx and 429 answers, and is counted and timed in Prometheus metrics. Lists of ids
// are sent in chunks (cc_app_request_chunk_size, 100 by default, as in cf-networking),
// so one request never carries an unbounded URL.
package ccclient

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"netman/lib/logattr"
	"netman/lib/mutualtls"
)

// ErrUnavailable is wrapped by every error that means Cloud Controller (or UAA) did
// not answer usefully: unreachable, timed out, 5xx, or a token could not be had.
var ErrUnavailable = errors.New("Cloud Controller is unavailable")

// StatusError is an answer other than 200 that retrying does not change (4xx).
type StatusError struct {
	Endpoint string
	Status   int
	Detail   string // CC's errors[0].detail, when it sent one
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("Cloud Controller %s: status %d: %s", e.Endpoint, e.Status, e.Detail)
}

// Defaults for zero Options fields.
const (
	DefaultChunkSize = 100
	DefaultTimeout   = 10 * time.Second
	DefaultAttempts  = 3
	DefaultBackoff   = 200 * time.Millisecond
	// maxBody caps one decoded answer; 5,000 security groups of 10 rules are ~5 MiB.
	maxBody = 64 << 20
	// maxQueryBytes caps the ids of one request's URL, whatever their length.
	maxQueryBytes = 6000
)

// Options configure a Client. URL, UAAURL, ClientID and ClientSecret are required;
// the internal API is optional (without it, LatestSecurityGroupUpdate is unavailable).
type Options struct {
	URL        string // cc_url, e.g. https://cloud-controller-ng.service.cf.internal:9024
	CACertFile string // CA of cc_url's certificate; empty: the system roots

	InternalURL            string // cc_internal_url, e.g. https://cloud-controller-ng.service.cf.internal:9023
	InternalCACertFile     string
	InternalClientCertFile string
	InternalClientKeyFile  string

	UAAURL        string // UAA's base URL; tokens from UAAURL + "/oauth/token"
	UAACACertFile string
	ClientID      string // uaa_client (network-policy)
	ClientSecret  string // never logged

	ChunkSize int           // ids per request (DefaultChunkSize)
	Timeout   time.Duration // one attempt (DefaultTimeout)
	Attempts  int           // tries per request, first included (DefaultAttempts)
	Backoff   time.Duration // wait before the first retry, doubled each time (DefaultBackoff)

	Registerer prometheus.Registerer // nil: metrics are not registered
	Logger     *slog.Logger
}

// Client is safe for concurrent use.
type Client struct {
	opts     Options
	public   *http.Client
	internal *http.Client // nil without cc_internal_url
	tokens   *tokenSource
	metrics  *metrics
	log      *slog.Logger
}

// New loads the certificate files and builds the client. It does not contact CC.
func New(opts Options) (*Client, error) {
	if opts.URL == "" || opts.UAAURL == "" || opts.ClientID == "" || opts.ClientSecret == "" {
		return nil, errors.New("ccclient: cc_url, uaa_url, uaa_client and uaa_client_secret are required")
	}
	if opts.ChunkSize <= 0 {
		opts.ChunkSize = DefaultChunkSize
	}
	opts.ChunkSize = min(opts.ChunkSize, 5000) // CC's largest per_page
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	if opts.Attempts <= 0 {
		opts.Attempts = DefaultAttempts
	}
	if opts.Backoff <= 0 {
		opts.Backoff = DefaultBackoff
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	c := &Client{opts: opts, log: opts.Logger, metrics: newMetrics(opts.Registerer)}
	var err error
	if c.public, err = httpClient(opts.CACertFile, "", ""); err != nil {
		return nil, fmt.Errorf("field \"cc_ca_cert_file\": %w", err)
	}
	uaa, err := httpClient(opts.UAACACertFile, "", "")
	if err != nil {
		return nil, fmt.Errorf("field \"uaa_ca_cert_file\": %w", err)
	}
	if opts.InternalURL != "" {
		if opts.InternalClientCertFile == "" || opts.InternalClientKeyFile == "" {
			return nil, errors.New("ccclient: cc_internal_url needs cc_internal_client_cert_file and cc_internal_client_key_file")
		}
		if c.internal, err = httpClient(opts.InternalCACertFile, opts.InternalClientCertFile, opts.InternalClientKeyFile); err != nil {
			return nil, fmt.Errorf("fields \"cc_internal_ca_cert_file\", \"cc_internal_client_cert_file\", \"cc_internal_client_key_file\": %w", err)
		}
	}
	c.tokens = &tokenSource{
		url: strings.TrimRight(opts.UAAURL, "/") + "/oauth/token", id: opts.ClientID, secret: opts.ClientSecret,
		client: uaa, call: c.call,
	}
	return c, nil
}

// httpClient trusts caFile (or the system roots) and presents certFile/keyFile when
// set. Timeouts are per attempt, from the request context.
func httpClient(caFile, certFile, keyFile string) (*http.Client, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pool, err := mutualtls.CAPool(caFile)
		if err != nil {
			return nil, err
		}
		cfg.RootCAs = pool
	}
	if certFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, err
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.TLSClientConfig = cfg
	t.MaxIdleConnsPerHost = 16
	return &http.Client{Transport: t}, nil
}

// getJSON GETs path?query from the public (internal=false) or internal API and
// decodes the answer into out, retrying as the package comment says.
func (c *Client) getJSON(ctx context.Context, endpoint string, internal bool, path string, query url.Values, out any) error {
	base, hc := c.opts.URL, c.public
	if internal {
		if c.internal == nil {
			return fmt.Errorf("Cloud Controller %s: cc_internal_url is not configured", endpoint)
		}
		base, hc = c.opts.InternalURL, c.internal
	}
	u := strings.TrimRight(base, "/") + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	return c.call(ctx, endpoint, func(ctx context.Context) (*http.Request, error) {
		token, err := c.tokens.get(ctx)
		if err != nil {
			return nil, err
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			return nil, err
		}
		req.Header.Set("Authorization", "bearer "+token)
		req.Header.Set("Accept", "application/json")
		return req, nil
	}, hc, out)
}

// call runs one logical request: up to Attempts tries, each with its own timeout and
// metrics. A 401 drops the cached token so the next try fetches a new one.
func (c *Client) call(ctx context.Context, endpoint string, build func(context.Context) (*http.Request, error), hc *http.Client, out any) error {
	var last error
	for attempt := range c.opts.Attempts {
		if attempt > 0 {
			wait := c.opts.Backoff << (attempt - 1)
			wait += rand.N(wait/2 + 1) // jitter: replicas do not retry in step
			c.log.Warn("retrying Cloud Controller request", "endpoint", endpoint, "attempt", attempt+1, logattr.Millis("retry_in_ms", wait), "error", last)
			select {
			case <-ctx.Done():
				return fmt.Errorf("%w: %s: %v (last error: %v)", ErrUnavailable, endpoint, ctx.Err(), last)
			case <-time.After(wait):
			}
		}
		retry, err := c.attempt(ctx, endpoint, build, hc, out)
		if err == nil {
			return nil
		}
		last = err
		if !retry || ctx.Err() != nil {
			break
		}
	}
	return last
}

func (c *Client) attempt(ctx context.Context, endpoint string, build func(context.Context) (*http.Request, error), hc *http.Client, out any) (retry bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, c.opts.Timeout)
	defer cancel()
	start := time.Now()
	outcome := "error"
	defer func() { c.metrics.observe(endpoint, outcome, time.Since(start)) }()

	req, err := build(ctx)
	if err != nil {
		// Only the token can fail here; it has its own attempts and metrics.
		return false, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return true, fmt.Errorf("%w: %s: %v", ErrUnavailable, endpoint, err)
	}
	defer resp.Body.Close()
	outcome = strconv.Itoa(resp.StatusCode)
	body := io.LimitReader(resp.Body, maxBody)
	switch {
	case resp.StatusCode == http.StatusOK:
		if err := json.NewDecoder(body).Decode(out); err != nil {
			outcome = "bad_body"
			return true, fmt.Errorf("%w: %s: decoding the answer: %v", ErrUnavailable, endpoint, err)
		}
		return false, nil
	case resp.StatusCode == http.StatusUnauthorized && endpoint != tokenEndpoint:
		c.tokens.invalidate()
		return true, &StatusError{Endpoint: endpoint, Status: resp.StatusCode, Detail: detail(body)}
	case resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests:
		return true, fmt.Errorf("%w: %s: status %d: %s", ErrUnavailable, endpoint, resp.StatusCode, detail(body))
	default:
		return false, &StatusError{Endpoint: endpoint, Status: resp.StatusCode, Detail: detail(body)}
	}
}

// detail extracts CC's (errors[0].detail) or UAA's (error_description) message.
func detail(body io.Reader) string {
	var e struct {
		Errors []struct {
			Detail string `json:"detail"`
			Title  string `json:"title"`
		} `json:"errors"`
		Description string `json:"error_description"`
	}
	b, _ := io.ReadAll(io.LimitReader(body, 4096))
	if json.Unmarshal(b, &e) == nil {
		if len(e.Errors) > 0 {
			return e.Errors[0].Title + ": " + e.Errors[0].Detail
		}
		if e.Description != "" {
			return e.Description
		}
	}
	return strings.TrimSpace(string(b[:min(len(b), 200)]))
}

// chunks splits ids into groups of at most n ids and maxQueryBytes bytes.
func chunks(ids []string, n int) [][]string {
	var out [][]string
	var cur []string
	size := 0
	for _, id := range ids {
		if len(cur) > 0 && (len(cur) == n || size+len(id)+1 > maxQueryBytes) {
			out = append(out, cur)
			cur, size = nil, 0
		}
		cur = append(cur, id)
		size += len(id) + 1
	}
	if len(cur) > 0 {
		out = append(out, cur)
	}
	return out
}
