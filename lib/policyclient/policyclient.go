// Package policyclient asks the policy server's internal API, over mutual TLS, which
// policies concern a set of policy groups, and whether anything changed since it last asked.
//
// Policies come from the v0 endpoint the spec documents for third-party enforcement
// (GET /networking/v0/internal/policies?id=...), reading the "ports" range a netman server
// adds for port-range policies. The change signal is the v1 policies_last_updated counter;
// a server without it answers 404 and LastUpdated returns ErrNoChangeSignal, in which case
// an agent simply fetches the policies every cycle. SecurityGroups reads the application
// security groups the server syncs from Cloud Controller (all pages).
package policyclient

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"netman/lib/apiwire"
	"netman/lib/models"
)

// Paths of the internal API.
const (
	PoliciesPath    = apiwire.InternalPoliciesV0Path
	PoliciesV1Path  = apiwire.InternalPoliciesV1Path
	LastUpdatedPath = apiwire.InternalLastUpdatedV1Path
)

// maxBody bounds what one answer may be: 10,000 policies are about 2 MB.
const maxBody = 256 << 20

// ErrNoChangeSignal means the server does not offer policies_last_updated.
var ErrNoChangeSignal = errors.New("policy server offers no change signal")

// Client talks to one policy server. It is safe for concurrent use and keeps
// connections alive between polls.
type Client struct {
	http    *http.Client
	base    *url.URL
	timeout time.Duration
}

// New returns a client for the server at baseURL (https://host:port). tlsConfig is the
// mutual TLS configuration (lib/mutualtls.ClientConfig); it is used as given, so the
// server's version and cipher pin hold. Every call ends after timeout at the latest.
func New(baseURL string, tlsConfig *tls.Config, timeout time.Duration) (*Client, error) {
	u, err := url.Parse(baseURL)
	if err != nil {
		return nil, fmt.Errorf("policy server url: %w", err)
	}
	if u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("policy server url %q: want https://host:port", baseURL)
	}
	if tlsConfig == nil {
		return nil, errors.New("policy server: no TLS configuration")
	}
	if timeout <= 0 {
		return nil, fmt.Errorf("policy server timeout %v: must be positive", timeout)
	}
	transport := &http.Transport{
		TLSClientConfig:       tlsConfig,
		DialContext:           (&net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout:   timeout,
		ResponseHeaderTimeout: timeout,
		IdleConnTimeout:       90 * time.Second,
		MaxIdleConnsPerHost:   2,
		// The pinned TLS 1.2 configuration rules out HTTP/2's negotiation; say so
		// explicitly rather than rely on it.
		ForceAttemptHTTP2: false,
	}
	return &Client{
		http:    &http.Client{Transport: transport, Timeout: timeout},
		base:    u,
		timeout: timeout,
	}, nil
}

// Policies returns every policy whose source or destination is one of ids. No ids means
// no policies, without asking the server.
func (c *Client) Policies(ctx context.Context, ids []string) ([]models.Policy, error) {
	if len(ids) == 0 {
		return []models.Policy{}, nil
	}
	ps, _, err := c.List(ctx, Query{IDs: ids})
	return ps, err
}

// Query says which policies List asks for.
type Query struct {
	// V1 asks PoliciesV1Path instead of the v0 route that agents poll.
	V1 bool
	// All asks for every policy; IDs is then ignored.
	All bool
	// IDs selects the policies whose source or destination is one of them. None
	// selects none, but the server is still asked.
	IDs []string
}

// List returns the policies q selects together with the server's answer as it was
// sent, for tools that show what an agent gets.
func (c *Client) List(ctx context.Context, q Query) ([]models.Policy, []byte, error) {
	path, rawQuery := PoliciesPath, ""
	if q.V1 {
		path = PoliciesV1Path
	}
	if !q.All {
		// The commas stay literal, as in the spec's examples; each id is escaped on its own.
		escaped := make([]string, len(q.IDs))
		for i, id := range q.IDs {
			escaped[i] = url.QueryEscape(id)
		}
		rawQuery = "id=" + strings.Join(escaped, ",")
	}
	data, err := c.get(ctx, path, rawQuery)
	if err != nil {
		return nil, nil, err
	}
	// One shape reads both versions: v0 has "port" (and "ports" for a range), v1 only
	// "ports".
	var body apiwire.InternalPoliciesV0
	if err := json.Unmarshal(data, &body); err != nil {
		return nil, nil, fmt.Errorf("GET %s: decoding answer: %w", path, err)
	}
	if body.Policies == nil {
		return nil, nil, fmt.Errorf("GET %s: answer has no \"policies\" list", path)
	}
	out := make([]models.Policy, len(body.Policies))
	for i, p := range body.Policies {
		ports := models.Ports{Start: p.Destination.Port, End: p.Destination.Port}
		if p.Destination.Ports != nil {
			ports = models.Ports{Start: p.Destination.Ports.Start, End: p.Destination.Ports.End}
		}
		out[i] = models.Policy{
			Source: models.Source{ID: p.Source.ID, Tag: p.Source.Tag},
			Destination: models.Destination{
				ID: p.Destination.ID, Tag: p.Destination.Tag,
				Protocol: p.Destination.Protocol, Ports: ports,
			},
		}
	}
	return out, data, nil
}

// LastUpdated returns the server's policy version, which grows with every change.
func (c *Client) LastUpdated(ctx context.Context) (int64, error) {
	data, err := c.get(ctx, LastUpdatedPath, "")
	if err != nil {
		return 0, err
	}
	var v int64
	if err := json.Unmarshal(data, &v); err != nil {
		return 0, fmt.Errorf("GET %s: decoding answer: %w", LastUpdatedPath, err)
	}
	return v, nil
}

// get returns the body of a 200 answer to GET path?rawQuery.
func (c *Client) get(ctx context.Context, path, rawQuery string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	u := *c.base
	u.Path = strings.TrimSuffix(u.Path, "/") + path
	u.RawQuery = rawQuery
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, fmt.Errorf("building request: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", path, err)
	}
	defer resp.Body.Close()
	body := io.LimitReader(resp.Body, maxBody)
	if resp.StatusCode != http.StatusOK {
		if resp.StatusCode == http.StatusNotFound && path == LastUpdatedPath {
			_, _ = io.Copy(io.Discard, body)
			return nil, ErrNoChangeSignal
		}
		return nil, statusError(path, resp.StatusCode, body)
	}
	data, err := io.ReadAll(body)
	if err != nil {
		return nil, fmt.Errorf("GET %s: reading answer: %w", path, err)
	}
	return data, nil
}

func statusError(path string, status int, body io.Reader) error {
	b, _ := io.ReadAll(io.LimitReader(body, 4096))
	var e apiwire.Error
	msg := strings.TrimSpace(string(b))
	if json.Unmarshal(b, &e) == nil && e.Error != "" {
		msg = e.Error
	}
	return fmt.Errorf("GET %s: %s: %s", path, strconv.Itoa(status)+" "+http.StatusText(status), msg)
}
