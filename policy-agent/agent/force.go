package agent

import (
	"context"
	"net/http"

	"netman/lib/apiwire"
	"netman/lib/httpapi"
)

type forceRequest struct {
	done chan forceResult // buffered: Run never waits for the requester
}

type forceResult struct {
	out Outcome
	err error
}

// ForceCycle makes Run start a cycle now, instead of at the end of its wait, and returns
// that cycle's outcome. Requests that arrive while a cycle runs are all served by the
// next one, so a burst of container creations costs one cycle, not one each. It waits
// until ctx is done when Run is not running.
func (a *Agent) ForceCycle(ctx context.Context) (Outcome, error) {
	req := forceRequest{done: make(chan forceResult, 1)}
	a.interruptLongPoll()
	select {
	case a.force <- req:
	case <-ctx.Done():
		return Failed, ctx.Err()
	}
	select {
	case r := <-req.done:
		return r.out, r.err
	case <-ctx.Done():
		// The cycle still runs; only this requester stops waiting.
		return Failed, ctx.Err()
	}
}

// drainForced adds the requests that are waiting already.
func (a *Agent) drainForced(reqs []forceRequest) []forceRequest {
	for {
		select {
		case req := <-a.force:
			reqs = append(reqs, req)
		default:
			return reqs
		}
	}
}

// ForcePollHandler serves GET /force-policy-poll-cycle: it runs a cycle at once and
// answers when it is done, 200 {"outcome": ...} when it succeeded and 500 {"error": ...}
// when it failed (the rules then stay as they were, as after any failed cycle), so a
// wrapper that gets 200 knows the new container's rules are in place.
func (a *Agent) ForcePollHandler() http.Handler {
	mw := httpapi.Middleware{Server: "force-poll", Logger: a.opts.Logger, Timeout: a.opts.CycleTimeout}
	return httpapi.NewMux(mw, []httpapi.Route{{
		Name: "force_policy_poll_cycle", Method: http.MethodGet, Path: apiwire.ForcePollPath,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			out, err := a.ForceCycle(r.Context())
			if err != nil {
				httpapi.WriteError(w, r, http.StatusInternalServerError, "forced policy poll cycle failed: "+err.Error())
				return
			}
			httpapi.WriteValue(w, r, http.StatusOK, map[string]Outcome{"outcome": out})
		}),
	}})
}
