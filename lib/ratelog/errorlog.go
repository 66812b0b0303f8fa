package ratelog

import (
	"context"
	"log"
	"log/slog"
	"strings"
	"time"
)

// handshakePrefix is how net/http reports a failed TLS handshake to Server.ErrorLog
// ("http: TLS handshake error from ADDR: ERR"); it has no other way to report one.
const handshakePrefix = "http: TLS handshake error from "

// HandshakeLogger returns what to call with each failed TLS handshake of server (the
// client's address and the reason): a structured warning ("TLS handshake failed" with
// server, remote, error and suppressed), limited by lim, and onHandshake told whether
// its line was suppressed (for the metrics).
func HandshakeLogger(logger *slog.Logger, server string, lim *Limiter, onHandshake func(suppressed bool)) func(remote, reason string) {
	return func(remote, reason string) {
		ok, suppressed := lim.Allow(time.Now())
		if onHandshake != nil {
			onHandshake(!ok)
		}
		if ok {
			logger.LogAttrs(context.Background(), slog.LevelWarn, "TLS handshake failed",
				slog.String("server", server), slog.String("remote", remote), slog.String("error", reason),
				slog.Int64("suppressed", suppressed))
		}
	}
}

// ServerErrorLog returns the logger for an http.Server's ErrorLog. Failed TLS handshakes
// become structured warnings ("TLS handshake failed" with server, remote and error),
// limited by lim, and each is reported to onHandshake with whether its line was
// suppressed (for the metrics). Everything else the server reports is a warning with
// the server's name.
func ServerErrorLog(logger *slog.Logger, server string, lim *Limiter, onHandshake func(suppressed bool)) *log.Logger {
	return log.New(&errorLog{logger: logger, server: server, handshake: HandshakeLogger(logger, server, lim, onHandshake)}, "", 0)
}

type errorLog struct {
	logger    *slog.Logger
	server    string
	handshake func(remote, reason string)
}

// Write gets one message of the server's log.Logger per call.
func (e *errorLog) Write(p []byte) (int, error) {
	msg := strings.TrimSpace(string(p))
	rest, isHandshake := strings.CutPrefix(msg, handshakePrefix)
	if !isHandshake {
		e.logger.LogAttrs(context.Background(), slog.LevelWarn, msg, slog.String("server", e.server))
		return len(p), nil
	}
	remote, reason, _ := strings.Cut(rest, ": ")
	e.handshake(remote, reason)
	return len(p), nil
}
