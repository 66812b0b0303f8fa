package httpapi

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"netman/lib/logattr"
)

// RequestIDHeader carries the request id in both directions: a caller's id is kept if
// it is sane, otherwise one is made up; either way it is sent back and logged.
const RequestIDHeader = "X-Request-Id"

type loggerKey struct{}

// Logger returns the request's logger (with its request id), or slog's default
// outside a request.
func Logger(ctx context.Context) *slog.Logger {
	if l, ok := ctx.Value(loggerKey{}).(*slog.Logger); ok {
		return l
	}
	return slog.Default()
}

// Metrics are the HTTP metrics of one registry, named netman_server_* (the policy
// server is this package's one user; docs/operations.md lists them).
type Metrics struct {
	requests   *prometheus.CounterVec
	duration   *prometheus.HistogramVec
	handshakes *prometheus.CounterVec
	suppressed *prometheus.CounterVec
}

// NewMetrics registers the request counter and latency histogram, and the counters of
// failed TLS handshakes and of log lines left out, with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "netman_server",
			Name:      "http_requests_total",
			Help:      "HTTP requests served, by server, route and status code.",
		}, []string{"server", "route", "status"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "netman_server",
			Name:      "http_request_duration_seconds",
			Help:      "Time from reading a request to writing the last byte of its response.",
			Buckets:   []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"server", "route"}),
		handshakes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "netman_server",
			Name:      "tls_handshake_errors_total",
			Help:      "Failed TLS handshakes by server, logged or not.",
		}, []string{"server"}),
		suppressed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "netman_server",
			Name:      "log_lines_suppressed_total",
			Help:      "Log lines the rate limits left out, by server and event (request, tls_handshake).",
		}, []string{"server", "event"}),
	}
	reg.MustRegister(m.requests, m.duration, m.handshakes, m.suppressed)
	return m
}

// HandshakeFailed counts a failed TLS handshake of server and, when suppressed, its
// log line that was left out (for ratelog.ServerErrorLog).
func (m *Metrics) HandshakeFailed(server string, suppressed bool) {
	m.handshakes.WithLabelValues(server).Inc()
	if suppressed {
		m.suppressed.WithLabelValues(server, "tls_handshake").Inc()
	}
}

// ExpectTLS exports server's handshake counter at 0 before the first failure.
func (m *Metrics) ExpectTLS(server string) {
	m.handshakes.WithLabelValues(server)
	m.suppressed.WithLabelValues(server, "tls_handshake")
}

// Middleware is what every request of one server passes through.
type Middleware struct {
	Server  string // "internal", "health": the server label of the metrics
	Logger  *slog.Logger
	Metrics *Metrics      // nil: no metrics
	Timeout time.Duration // each request's context deadline; 0: none
	// Access bounds the access lines (nil: one per request).
	Access *AccessLog
}

// Wrap gives h a request id, a logger, a deadline, metrics labelled route, and an
// access line (see AccessLog) naming the caller: the CN of its client certificate,
// the subject of its token (SetCaller).
func (m Middleware) Wrap(route string, h http.Handler) http.Handler {
	var requests *prometheus.CounterVec
	var duration prometheus.Observer
	var unlogged prometheus.Counter // requests left out of the access log
	if m.Metrics != nil {
		requests = m.Metrics.requests.MustCurryWith(prometheus.Labels{"server": m.Server, "route": route})
		duration = m.Metrics.duration.WithLabelValues(m.Server, route)
		unlogged = m.Metrics.suppressed.WithLabelValues(m.Server, "request")
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		id := r.Header.Get(RequestIDHeader)
		if !saneRequestID(id) {
			id = newRequestID()
		}
		w.Header().Set(RequestIDHeader, id)
		logger := m.Logger.With("request_id", id)
		ctx := context.WithValue(r.Context(), loggerKey{}, logger)
		if m.Timeout > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, m.Timeout)
			defer cancel()
		}
		caller := &Caller{}
		if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
			caller.ClientCN = r.TLS.PeerCertificates[0].Subject.CommonName
		}
		ctx = context.WithValue(ctx, callerKey{}, caller)
		rec := &recorder{ResponseWriter: w, status: http.StatusOK}
		h.ServeHTTP(rec, r.WithContext(ctx))

		took := time.Since(start)
		if requests != nil {
			requests.WithLabelValues(strconv.Itoa(rec.status)).Inc()
			duration.Observe(took.Seconds())
		}
		if !logger.Enabled(ctx, slog.LevelInfo) {
			return
		}
		// With debug logging every request is logged.
		ok, suppressed := true, int64(0)
		if !logger.Enabled(ctx, slog.LevelDebug) {
			ok, suppressed = m.Access.allow(route, caller, rec.status, time.Now())
		}
		if !ok {
			if unlogged != nil {
				unlogged.Inc()
			}
			return
		}
		attrs := []slog.Attr{
			slog.String("server", m.Server),
			slog.String("route", route),
			slog.String("method", r.Method),
			slog.String("path", r.URL.Path),
			slog.Int("status", rec.status),
			slog.Int64("bytes", rec.bytes),
			logattr.Duration(took),
			slog.String("remote", r.RemoteAddr),
		}
		attrs = append(attrs, caller.attrs()...)
		if suppressed > 0 {
			attrs = append(attrs, slog.Int64("suppressed", suppressed))
		}
		logger.LogAttrs(ctx, slog.LevelInfo, "request", attrs...)
	})
}

type recorder struct {
	http.ResponseWriter
	status      int
	bytes       int64
	wroteHeader bool
}

func (r *recorder) WriteHeader(status int) {
	if !r.wroteHeader {
		r.status, r.wroteHeader = status, true
	}
	r.ResponseWriter.WriteHeader(status)
}

func (r *recorder) Write(b []byte) (int, error) {
	r.wroteHeader = true
	n, err := r.ResponseWriter.Write(b)
	r.bytes += int64(n)
	return n, err
}

// Unwrap lets http.ResponseController reach the connection's writer.
func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

func saneRequestID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c == '-' || c == '_' || c == '.' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z') {
			return false
		}
	}
	return true
}

func newRequestID() string {
	var b [8]byte
	rand.Read(b[:]) // crypto/rand.Read never fails on Linux
	return hex.EncodeToString(b[:])
}
