package store

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"io"
	"net"
	"strings"
	"syscall"

	"github.com/lib/pq"
)

// ErrUnavailable is wrapped by every error that says the database could not serve the
// call now but may later: it did not answer before the caller's deadline (also when it
// hangs without closing the connection), a statement was cancelled (57014), the server is
// starting or shutting down (57P0x), it refused or dropped the connection, or it has no
// connection slot left. An HTTP API answers it with 503 and Retry-After; everything else
// from the store that is not *InvalidInputError or ErrTagsExhausted is a bug or a
// permanent fault (500).
var ErrUnavailable = errors.New("the policy database is unavailable")

type unavailableError struct{ err error }

func (e *unavailableError) Error() string        { return ErrUnavailable.Error() + ": " + e.err.Error() }
func (e *unavailableError) Unwrap() []error      { return []error{ErrUnavailable, e.err} }
func (e *unavailableError) Is(target error) bool { return target == ErrUnavailable }

// markUnavailable wraps err in ErrUnavailable when it is transient (see ErrUnavailable).
func markUnavailable(err error) error {
	if err == nil || errors.Is(err, ErrUnavailable) || !transient(err) {
		return err
	}
	return &unavailableError{err: err}
}

func transient(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) ||
		errors.Is(err, driver.ErrBadConn) || errors.Is(err, sql.ErrConnDone) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) {
		return true
	}
	var pqErr *pq.Error
	if errors.As(err, &pqErr) {
		code := string(pqErr.Code)
		// 57014 query_canceled (statement_timeout or a cancelled context), 57P01..57P05
		// shutdown/starting/idle-session, 08xxx connection exceptions, 53xxx out of
		// resources (too many connections), 40001/40P01 serialization failure/deadlock.
		return code == "57014" || strings.HasPrefix(code, "57P") || strings.HasPrefix(code, "08") ||
			strings.HasPrefix(code, "53") || code == "40001" || code == "40P01"
	}
	var netErr net.Error
	if errors.As(err, &netErr) {
		return true
	}
	var opErr *net.OpError
	return errors.As(err, &opErr)
}

// bounded runs fn and returns its result, or, when ctx ends first, an ErrUnavailable
// error at once while fn goes on in the background until the driver gives up. lib/pq
// reacts to a cancelled context by asking the server to cancel the statement, which a
// server that hangs (stopped, or behind a dead link) never does, so without this a call
// would outlive its caller's deadline by minutes. fn must not write to anything the
// caller reads after bounded returns.
func bounded[T any](ctx context.Context, fn func() (T, error)) (T, error) {
	type result struct {
		v   T
		err error
	}
	if ctx.Done() == nil {
		v, err := fn()
		return v, markUnavailable(err)
	}
	if err := ctx.Err(); err != nil {
		var zero T
		return zero, markUnavailable(err)
	}
	done := make(chan result, 1)
	go func() {
		v, err := fn()
		done <- result{v, err}
	}()
	select {
	case r := <-done:
		return r.v, markUnavailable(r.err)
	case <-ctx.Done():
		var zero T
		return zero, markUnavailable(context.Cause(ctx))
	}
}

// boundedErr is bounded for calls that return only an error.
func boundedErr(ctx context.Context, fn func() error) error {
	_, err := bounded(ctx, func() (struct{}, error) { return struct{}{}, fn() })
	return err
}

// Ping checks that the database answers a trivial query before ctx ends (the health
// check).
func (s *Store) Ping(ctx context.Context) error {
	return boundedErr(ctx, func() error {
		var one int
		return s.db.QueryRowContext(ctx, "SELECT 1").Scan(&one)
	})
}
