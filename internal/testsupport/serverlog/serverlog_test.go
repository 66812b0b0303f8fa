package serverlog_test

import (
	"io"
	"testing"
	"time"

	"netman/internal/testsupport/serverlog"
)

func TestAddrFromListeningLines(t *testing.T) {
	var l serverlog.Log
	done := make(chan struct{})
	go func() {
		defer close(done)
		// Written in pieces that split lines, as a pipe delivers them.
		io.WriteString(&l, `{"msg":"starting"}`+"\n"+`{"msg":"listening","server":"inter`)
		io.WriteString(&l, `nal","addr":"127.0.0.1:40001","tls":true}`+"\n"+`{"msg":"listening","server":"health","addr":"127.0.0.1:40002"}`+"\n")
	}()
	if got := l.Port(t, "health", nil, 10*time.Second); got != 40002 {
		t.Errorf("health port %d, want 40002", got)
	}
	if got := l.Addr(t, "internal", nil, 10*time.Second); got != "127.0.0.1:40001" {
		t.Errorf("internal address %q", got)
	}
	<-done
}
