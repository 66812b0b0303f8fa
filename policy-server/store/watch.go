package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/lib/pq"
)

// notifyChannel is the Postgres notification channel the schema's triggers signal on.
const notifyChannel = "netman_policies"

// Watch calls onChange with the store's version (LastUpdated) once when it starts and
// again whenever the version changes, whichever replica made the change. It LISTENs on
// its own connection to dsn: triggers NOTIFY inside every writing transaction, so the
// notification arrives when that transaction commits. Because notifications are lost
// while the connection is down, Watch also reads the version after every reconnect and
// every pollInterval. onChange runs on Watch's goroutine, one call at a time; a slow
// onChange delays the next check, never skips it. Watch blocks until ctx is done and then
// returns nil; a caller that starts it first and loads on each call cannot miss a change.
func (s *Store) Watch(ctx context.Context, dsn string, pollInterval time.Duration, onChange func(version int64)) error {
	if pollInterval <= 0 {
		return fmt.Errorf("watching the store: poll interval must be positive, got %s", pollInterval)
	}
	listener := pq.NewListener(dsn, 100*time.Millisecond, 5*time.Second, func(ev pq.ListenerEventType, err error) {
		switch ev {
		case pq.ListenerEventConnected:
			s.log.Info("store watch connected")
		case pq.ListenerEventReconnected:
			s.log.Info("store watch reconnected")
		case pq.ListenerEventDisconnected:
			s.log.Warn("store watch disconnected", "error", errString(err))
		case pq.ListenerEventConnectionAttemptFailed:
			s.log.Warn("store watch cannot connect", "error", errString(err))
		}
	})
	defer listener.Close()

	// Listen blocks until the first connection is up and knows no context: run it aside
	// and rely on polling until it returns.
	listening := make(chan error, 1)
	go func() { listening <- listener.Listen(notifyChannel) }()

	last, known := int64(0), false
	check := func() {
		// A connection that hangs (a lock, a dead peer) must not stall the feed.
		qctx, cancel := context.WithTimeout(ctx, s.queryTimeout)
		v, err := s.LastUpdated(qctx)
		cancel()
		if err != nil {
			if ctx.Err() == nil {
				s.log.Warn("store watch cannot read the version", "error", err.Error())
			}
			return
		}
		if !known || v != last {
			last, known = v, true
			onChange(v)
		}
	}
	check()

	ticker := time.NewTicker(pollInterval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-listening:
			listening = nil
			if err != nil {
				s.log.Warn("store watch cannot listen; polling only", "error", err.Error())
			}
			check() // a change may have committed before LISTEN took effect
		case _, ok := <-listener.Notify:
			if !ok {
				return errors.New("watching the store: listener closed")
			}
			// A burst of commits arrives as a burst of notifications: one check covers them.
			drain(listener.Notify)
			check()
		case <-ticker.C:
			check()
		}
	}
}

func drain(c <-chan *pq.Notification) {
	for {
		select {
		case _, ok := <-c:
			if !ok {
				return
			}
		default:
			return
		}
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
