// Package testproc runs a program for a test in a process group of its own, so the test
// can interrupt it the way Ctrl-C does (SIGINT to the whole group) and check what the
// program leaves behind; the test's cleanup kills the group if it is still running and
// shows the program's output when the test failed.
package testproc

import (
	"os/exec"
	"syscall"
	"testing"
	"time"

	"netman/internal/testsupport/syncbuf"
)

// Proc is one started program.
type Proc struct {
	name string
	cmd  *exec.Cmd
	out  syncbuf.Buffer
	done chan struct{} // closed when Wait returned; err is set before
	err  error
}

// Start starts cmd (its Stdout and Stderr are taken over) in a new process group.
func Start(t testing.TB, name string, cmd *exec.Cmd) *Proc {
	t.Helper()
	p := &Proc{name: name, cmd: cmd, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = &p.out, &p.out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-p.done
		}
		if t.Failed() {
			t.Logf("---- %s output ----\n%s", name, p.out.String())
		}
	})
	return p
}

// Output is everything the program printed so far.
func (p *Proc) Output() string { return p.out.String() }

// WaitOutput waits until ready(output) holds, checking as output arrives (every 100 ms);
// it fails the test when the program ends first or timeout passes.
func (p *Proc) WaitOutput(t testing.TB, what string, timeout time.Duration, ready func(output string) bool) {
	t.Helper()
	deadline := time.After(timeout)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for !ready(p.out.String()) {
		select {
		case <-p.done:
			if ready(p.out.String()) {
				return
			}
			t.Fatalf("%s ended (%v) before %s", p.name, p.err, what)
		case <-deadline:
			t.Fatalf("%s: no %s within %v", p.name, what, timeout)
		case <-tick.C:
		}
	}
}

// Interrupt sends SIGINT to the program's process group and returns what its Wait
// returned; it fails the test when the program has not ended within timeout.
func (p *Proc) Interrupt(t testing.TB, timeout time.Duration) error {
	t.Helper()
	if err := syscall.Kill(-p.cmd.Process.Pid, syscall.SIGINT); err != nil {
		t.Fatalf("interrupting %s: %v", p.name, err)
	}
	select {
	case <-p.done:
		return p.err
	case <-time.After(timeout):
		t.Fatalf("%s did not end within %v of SIGINT", p.name, timeout)
		return nil
	}
}
