package ccclient

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

const tokenEndpoint = "uaa_token"

// tokenSource holds the network-policy client's UAA token and fetches a new one
// (grant_type=client_credentials, HTTP basic client authentication) shortly before it
// expires or when CC refused it.
type tokenSource struct {
	url, id, secret string
	client          *http.Client
	call            func(ctx context.Context, endpoint string, build func(context.Context) (*http.Request, error), hc *http.Client, out any) error

	mu      sync.Mutex // held across a fetch: concurrent callers wait for one token
	token   string
	expires time.Time
}

func (t *tokenSource) get(ctx context.Context) (string, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.token != "" && time.Now().Before(t.expires) {
		return t.token, nil
	}
	var answer struct {
		AccessToken string `json:"access_token"`
		ExpiresIn   int    `json:"expires_in"`
	}
	form := url.Values{"grant_type": {"client_credentials"}, "client_id": {t.id}}.Encode()
	err := t.call(ctx, tokenEndpoint, func(ctx context.Context) (*http.Request, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.url, strings.NewReader(form))
		if err != nil {
			return nil, err
		}
		req.SetBasicAuth(url.QueryEscape(t.id), url.QueryEscape(t.secret))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Accept", "application/json")
		return req, nil
	}, t.client, &answer)
	if err != nil {
		var se *StatusError
		if errors.As(err, &se) {
			// Wrong uaa_client or uaa_client_secret: CC cannot be used until fixed.
			return "", fmt.Errorf("%w: getting a UAA token for client %q: %v", ErrUnavailable, t.id, err)
		}
		return "", fmt.Errorf("getting a UAA token for client %q: %w", t.id, err)
	}
	if answer.AccessToken == "" {
		return "", fmt.Errorf("%w: UAA's token answer holds no access_token", ErrUnavailable)
	}
	lifetime := time.Duration(answer.ExpiresIn) * time.Second
	t.token = answer.AccessToken
	t.expires = time.Now().Add(lifetime - min(time.Minute, lifetime/2))
	return t.token, nil
}

func (t *tokenSource) invalidate() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.token = ""
}
