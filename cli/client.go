package cli

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"netman/lib/apiwire"
	"netman/lib/mutualtls"
)

// maxResponse bounds what the CLI reads from the server: 100,000 policies are ~15 MB.
const maxResponse = 512 << 20

// client speaks the external API.
type client struct {
	base  *url.URL
	token string
	http  *http.Client
}

func newClient(c common) (*client, error) {
	u, err := url.Parse(c.api)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, usageError{msg: fmt.Sprintf("--api %q is not an http:// or https:// URL", c.api)}
	}
	token := strings.TrimSpace(c.token)
	if token == "" {
		token = strings.TrimSpace(c.envToken)
	}
	// `cf oauth-token` prints "bearer eyJ...": accept it as is.
	if scheme, rest, ok := strings.Cut(token, " "); ok && strings.EqualFold(scheme, "bearer") {
		token = strings.TrimSpace(rest)
	}
	if token == "" {
		return nil, usageError{msg: "no token: pass --token or set NETMAN_TOKEN (for example NETMAN_TOKEN=\"$(cf oauth-token)\", or NETMAN_TOKEN=\"$(netman dev-token --key FILE)\" for a local server)"}
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	if c.ca != "" {
		pool, err := mutualtls.CAPool(c.ca)
		if err != nil {
			return nil, fmt.Errorf("--ca: %w", err)
		}
		transport.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool}
	}
	return &client{base: u, token: token, http: &http.Client{Transport: transport, Timeout: c.timeout}}, nil
}

// do sends body (if not nil) as JSON and returns the response body of a 200. Any other
// status becomes an error carrying the server's {"error"} message.
func (c *client) do(ctx context.Context, method, path, rawQuery string, body any) ([]byte, error) {
	u := *c.base
	u.Path = strings.TrimSuffix(u.Path, "/") + path
	u.RawQuery = rawQuery
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, fmt.Errorf("encoding request: %w", err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), rd)
	if err != nil {
		return nil, fmt.Errorf("building request: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	where := method + " " + u.Redacted()
	resp, err := c.http.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, explain(where, err, false)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	if err != nil {
		return nil, explain(where, fmt.Errorf("reading the answer: %w", err), false)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, serverError(where, resp.StatusCode, data)
	}
	return data, nil
}

// serverError shows the status and the server's own message, with a hint for the
// mistakes that cause the usual ones.
func serverError(where string, status int, body []byte) error {
	msg := strings.TrimSpace(string(body))
	var e apiwire.Error
	if json.Unmarshal(body, &e) == nil && e.Error != "" {
		msg = e.Error
	}
	if len(msg) > 500 {
		msg = msg[:500] + "..."
	}
	err := fmt.Errorf("%s: %d %s: %s", where, status, http.StatusText(status), msg)
	if hint := statusHint(status, msg); hint != "" {
		return hinted{err, hint}
	}
	return err
}

// printJSON writes the server's JSON indented.
func printJSON(w io.Writer, data []byte) error {
	var buf bytes.Buffer
	if err := json.Indent(&buf, data, "", "  "); err != nil {
		return fmt.Errorf("the server's answer is not JSON: %w", err)
	}
	buf.WriteByte('\n')
	_, err := buf.WriteTo(w)
	return err
}
