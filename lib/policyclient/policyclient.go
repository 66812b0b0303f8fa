// Package policyclient asks the policy server's internal API, over mutual TLS, which
// policies concern a set of policy groups.
//
// Policies come from the v0 endpoint the spec documents for third-party enforcement
// (GET /networking/v0/internal/policies?id=...), reading the "ports" range a netman server
// adds for port-range policies. SecurityGroups reads the application security groups the
// server syncs from Cloud Controller (all pages).
//
// Poll is what an agent polls with: against a netman server it sends the ETag of its
// last answer, so an unchanged answer costs a 304, and a wait, so the server holds the
// request until the answer changes (a long poll) and the agent learns of a change as soon
// as the server has it. Against a server without ETags it fetches the policies every time.
package policyclient

import (
	"bytes"
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
	PoliciesPath   = apiwire.InternalPoliciesV0Path
	PoliciesV1Path = apiwire.InternalPoliciesV1Path
)

// maxBody bounds what one answer may be: 10,000 policies are about 2 MB.
const maxBody = 256 << 20

// Client talks to one policy server. It is safe for concurrent use and keeps
// connections alive between polls.
type Client struct {
	http     *http.Client
	base     *url.URL
	timeout  time.Duration
	observer Observer
}

// Observer is told of every request a Client makes: the route (the path, such as
// PoliciesPath), the outcome (one of the Outcome constants) and how long it took (a
// long poll's included).
type Observer interface {
	ObserveRequest(route, outcome string, took time.Duration)
}

// Outcomes of a request, for an Observer. They are few on purpose: each is a
// different thing for an operator to look at.
const (
	OutcomeSuccess     = "success"       // a 2xx or 304 answer
	OutcomeClientError = "client_error"  // a 4xx answer
	OutcomeServerError = "server_error"  // a 5xx answer
	OutcomeTimeout     = "timeout"       // no answer within the timeout
	OutcomeNetwork     = "network_error" // no answer: refused, reset, TLS handshake failed
)

// Option changes a Client.
type Option func(*Client)

// WithObserver has o told of every request.
func WithObserver(o Observer) Option { return func(c *Client) { c.observer = o } }

// New returns a client for the server at baseURL (https://host:port). tlsConfig is the
// mutual TLS configuration (lib/mutualtls.ClientConfig); it is used as given, so the
// server's version and cipher pin hold. Every call ends after timeout at the latest.
func New(baseURL string, tlsConfig *tls.Config, timeout time.Duration, opts ...Option) (*Client, error) {
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
	// No ResponseHeaderTimeout or Client.Timeout: a long poll waits for its headers
	// longer than timeout. Every request carries a context deadline instead (do).
	transport := &http.Transport{
		TLSClientConfig:     tlsConfig,
		DialContext:         (&net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout: timeout,
		IdleConnTimeout:     90 * time.Second,
		MaxIdleConnsPerHost: 2,
		// The pinned TLS 1.2 configuration rules out HTTP/2's negotiation; say so
		// explicitly rather than rely on it.
		ForceAttemptHTTP2: false,
	}
	c := &Client{
		http:    &http.Client{Transport: transport},
		base:    u,
		timeout: timeout,
	}
	for _, o := range opts {
		o(c)
	}
	return c, nil
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
		rawQuery = idQuery(q.IDs)
	}
	data, err := c.get(ctx, path, rawQuery)
	if err != nil {
		return nil, nil, err
	}
	out, err := decodePolicies(path, data)
	return out, data, err
}

// idQuery is the ?id= filter. The commas stay literal, as in the spec's examples; each
// id is escaped on its own.
func idQuery(ids []string) string {
	escaped := make([]string, len(ids))
	for i, id := range ids {
		escaped[i] = url.QueryEscape(id)
	}
	return "id=" + strings.Join(escaped, ",")
}

func decodePolicies(path string, data []byte) ([]models.Policy, error) {
	// One shape reads both versions: v0 has "port" (and "ports" for a range), v1 only
	// "ports".
	var body apiwire.InternalPoliciesV0
	if err := json.Unmarshal(data, &body); err != nil {
		return nil, fmt.Errorf("GET %s: decoding answer: %w", path, err)
	}
	if body.Policies == nil {
		return nil, fmt.Errorf("GET %s: answer has no \"policies\" list", path)
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
	return out, nil
}

// Answer is what Poll got.
type Answer struct {
	// Policies is the answer; nil when NotModified.
	Policies []models.Policy
	// NotModified: the answer is still the one the ETag given to Poll stands for.
	NotModified bool
	// ETag stands for this answer, to give to the next Poll for the same ids; "" when
	// the server sends none (it then answers in full every time).
	ETag string
	// Unconfirmed: the server could not confirm its policies with its database
	// (apiwire.UnconfirmedHeader); they may be behind.
	Unconfirmed bool
}

// Poll asks for the policies whose source or destination is one of ids (no ids: none,
// without asking). With etag from an earlier Answer for the same ids, an unchanged
// answer comes back as NotModified; with wait as well, the server holds the request
// until the answer changes or wait ends (a long poll; a server caps the wait at its
// request timeout, and one without long polls answers at once). The call ends after
// wait plus the client's timeout at the latest.
func (c *Client) Poll(ctx context.Context, ids []string, etag string, wait time.Duration) (Answer, error) {
	if len(ids) == 0 {
		return Answer{Policies: []models.Policy{}}, nil
	}
	rawQuery := idQuery(ids)
	header := http.Header{}
	if etag != "" {
		header.Set("If-None-Match", etag)
		if wait > 0 {
			rawQuery += "&" + apiwire.WaitParam + "=" + strconv.FormatFloat(wait.Seconds(), 'f', -1, 64)
		}
	} else {
		wait = 0
	}
	resp, data, err := c.do(ctx, PoliciesPath, rawQuery, header, c.timeout+wait)
	if err != nil {
		return Answer{}, err
	}
	a := Answer{ETag: resp.Header.Get("ETag"), Unconfirmed: resp.Header.Get(apiwire.UnconfirmedHeader) != ""}
	switch resp.StatusCode {
	case http.StatusNotModified:
		if etag == "" {
			return Answer{}, fmt.Errorf("GET %s: 304 Not Modified to an unconditional request", PoliciesPath)
		}
		a.NotModified = true
		if a.ETag == "" {
			a.ETag = etag
		}
		return a, nil
	case http.StatusOK:
		a.Policies, err = decodePolicies(PoliciesPath, data)
		return a, err
	}
	return Answer{}, statusError(PoliciesPath, resp.StatusCode, bytes.NewReader(data))
}

// get returns the body of a 200 answer to GET path?rawQuery.
func (c *Client) get(ctx context.Context, path, rawQuery string) ([]byte, error) {
	resp, data, err := c.do(ctx, path, rawQuery, nil, c.timeout)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, statusError(path, resp.StatusCode, bytes.NewReader(data))
	}
	return data, nil
}

// do sends GET path?rawQuery with header and returns the answer and its body, all
// within timeout.
func (c *Client) do(ctx context.Context, path, rawQuery string, header http.Header, timeout time.Duration) (*http.Response, []byte, error) {
	start := time.Now()
	resp, data, err := c.send(ctx, path, rawQuery, header, timeout)
	if c.observer != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		c.observer.ObserveRequest(path, outcome(status, err), time.Since(start))
	}
	return resp, data, err
}

func outcome(status int, err error) string {
	var netErr net.Error
	switch {
	case status >= 500:
		return OutcomeServerError
	case status >= 400:
		return OutcomeClientError
	case status > 0 && err == nil:
		return OutcomeSuccess
	case errors.Is(err, context.DeadlineExceeded) || errors.As(err, &netErr) && netErr.Timeout():
		return OutcomeTimeout
	}
	return OutcomeNetwork
}

// send does the request of do.
func (c *Client) send(ctx context.Context, path, rawQuery string, header http.Header, timeout time.Duration) (*http.Response, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	u := *c.base
	u.Path = strings.TrimSuffix(u.Path, "/") + path
	u.RawQuery = rawQuery
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, nil, fmt.Errorf("building request: %w", err)
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		// The url.Error would repeat the method and the URL with its query, which
		// names up to thousands of ids: say where, without them.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, nil, fmt.Errorf("GET %s://%s%s: %w", u.Scheme, u.Host, u.Path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return nil, nil, fmt.Errorf("GET %s: reading answer: %w", path, err)
	}
	return resp, data, nil
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
