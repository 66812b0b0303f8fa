package httpapi

import (
	"context"
	"log/slog"
	"time"

	"netman/lib/ratelog"
)

// Caller is who made a request, as far as the server knows: the CN of the client
// certificate (internal API), the token's subject and names (external API, once
// verified). The access line carries what is set.
type Caller struct {
	ClientCN     string
	TokenSubject string
	UserName     string
	ClientID     string
}

type callerKey struct{}

// SetCaller records the verified token's identity for the request's access line; an
// authentication middleware calls it inside Middleware.Wrap.
func SetCaller(ctx context.Context, subject, userName, clientID string) {
	if c, ok := ctx.Value(callerKey{}).(*Caller); ok {
		c.TokenSubject, c.UserName, c.ClientID = subject, userName, clientID
	}
}

func (c *Caller) attrs() []slog.Attr {
	var out []slog.Attr
	for _, f := range []struct{ key, value string }{
		{"client_cn", c.ClientCN}, {"token_subject", c.TokenSubject}, {"user_name", c.UserName}, {"client_id", c.ClientID},
	} {
		if f.value != "" {
			out = append(out, slog.String(f.key, f.value))
		}
	}
	return out
}

// The bounds of docs/operations.md ("Access lines").
const (
	// SampleEvery is how often a polling client's successful requests to one route
	// are logged.
	SampleEvery = time.Minute
	// sampledClients bounds the sampler's memory: clients are the cells' certificates.
	sampledClients = 100_000
	// AccessBurst and AccessRate cap a listener's access lines: a storm of failing
	// requests cannot flood the log.
	AccessBurst = 100
	AccessRate  = 50 // lines per second
)

// AccessLog decides which requests get an access line. Every failed request (4xx,
// 5xx) is logged; a sampled one that succeeds only the first time its client uses the
// route and then once per SampleEvery, carrying how many it stands for; all of it at
// most AccessRate lines a second. A nil *AccessLog logs every request.
type AccessLog struct {
	all     bool            // every route is sampled
	routes  map[string]bool // else these are
	sampler *ratelog.Sampler
	limiter *ratelog.Limiter
}

// NewAccessLog returns the access log of one listener. sampleAll is for listeners that
// clients poll (the internal API, health); sampledRoutes names the routes sampled on
// the others (a load balancer's health checks).
func NewAccessLog(sampleAll bool, sampledRoutes ...string) *AccessLog {
	a := &AccessLog{
		all:     sampleAll,
		routes:  map[string]bool{},
		sampler: &ratelog.Sampler{Every: SampleEvery, MaxKeys: sampledClients},
		limiter: &ratelog.Limiter{Burst: AccessBurst, Every: time.Second / AccessRate},
	}
	for _, r := range sampledRoutes {
		a.routes[r] = true
	}
	return a
}

// allow says whether the request gets a line, and how many requests of the same
// client and route the line stands for.
func (a *AccessLog) allow(route string, c *Caller, status int, now time.Time) (bool, int64) {
	if a == nil {
		return true, 0
	}
	var suppressed int64
	if (a.all || a.routes[route]) && status < 400 {
		var ok bool
		// Without a certificate (health) the route alone is the key.
		if ok, suppressed = a.sampler.Sample(c.ClientCN+" "+c.TokenSubject+" "+route, now); !ok {
			return false, 0
		}
	}
	if ok, _ := a.limiter.Allow(now); !ok {
		return false, 0
	}
	return true, suppressed
}
