// Package internalapi serves the policy server's internal API (mutual TLS, for
// enforcement agents): the v0 and v1 policy lists and policies_last_updated, every one
// answered from the policy snapshot with an ETag, conditional requests (304) and long
// polls, and the v1 tags route.
package internalapi

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"netman/lib/apiwire"
	"netman/lib/httpapi"
	"netman/policy-server/api"
	"netman/policy-server/policycache"
)

// PoliciesPath is where the v0 internal API lists policies.
const PoliciesPath = apiwire.InternalPoliciesV0Path

// PolicySource is the policy snapshot the reads are answered from (*policycache.Cache).
type PolicySource interface {
	// Serve returns the snapshot to answer from; confirmed is false when it could not
	// be confirmed with the database.
	Serve(ctx context.Context) (snap *policycache.Snapshot, confirmed bool, err error)
	// Current returns the snapshot and when it was last confirmed.
	Current() (*policycache.Snapshot, time.Time)
	// Moved is closed once the snapshot's version is no longer version.
	Moved(version int64) <-chan struct{}
}

// reader is one GET route answered from the snapshot.
type reader struct {
	source PolicySource
	maxIDs int
	// enc: which encoded form its list uses, which takes ?id=, or -1 for
	// policies_last_updated.
	enc  int
	bufs sync.Pool // of *buffers
}

// buffers are one filtered answer's: reused, because a poll's answer is rebuilt on
// every request.
type buffers struct {
	found []policycache.Hit
	body  []byte
	sink  byte // see appendList
}

func newList(source PolicySource, maxIDs, enc int) *reader {
	return &reader{source: source, maxIDs: maxIDs, enc: enc}
}

func newLastUpdated(source PolicySource) *reader {
	return &reader{source: source, enc: -1}
}

func (h *reader) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	q, err := httpapi.Query(r)
	if err != nil {
		httpapi.WriteError(w, r, http.StatusBadRequest, fmt.Sprintf("invalid query string: %v", err))
		return
	}
	var ids []string
	all := true
	if h.enc >= 0 {
		// ?id= with nothing in it names no group (all is false): the empty answer, not
		// everything.
		if ids, all, err = api.ParseIDs(q, h.maxIDs); err != nil {
			httpapi.WriteError(w, r, http.StatusBadRequest, err.Error())
			return
		}
	}
	wait, err := parseWait(q)
	if err != nil {
		httpapi.WriteError(w, r, http.StatusBadRequest, err.Error())
		return
	}
	tags := parseIfNoneMatch(r.Header.Values("If-None-Match"))
	ctx := r.Context()
	var expired <-chan time.Time
	if wait > 0 && tags != nil {
		if dl, ok := ctx.Deadline(); ok {
			// Answer before the request's deadline, with time to write the answer.
			wait = min(wait, time.Until(dl)*9/10)
		}
		t := time.NewTimer(wait)
		defer t.Stop()
		expired = t.C
	}
	var bufs *buffers
	if !all {
		bufs, _ = h.bufs.Get().(*buffers)
		if bufs == nil {
			bufs = new(buffers)
		}
		defer h.putBuffers(bufs)
	}
	for {
		snap, confirmed, err := h.source.Serve(ctx)
		if err != nil {
			w.Header().Set("Retry-After", api.RetryAfter)
			httpapi.WriteError(w, r, http.StatusServiceUnavailable, err.Error())
			return
		}
		etag := snap.Version
		var found []policycache.Hit
		if !all {
			found, etag = snap.AppendLookup(bufs.found[:0], ids)
			bufs.found = found
		}
		current := tags.current(etag, snap.Version)
		ahead := tags.ahead(snap.Version)
		if (current || ahead) && expired != nil {
			// A long poll: wait for the next snapshot (or, for a client that saw a
			// newer version on another replica, for this one to catch up).
			select {
			case <-h.source.Moved(snap.Version):
				continue
			case <-expired:
			case <-ctx.Done():
			}
		}
		h.setHeaders(w, snap, etag, confirmed)
		if current {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		h.writeBody(w, snap, found, all, bufs)
		return
	}
}

func (h *reader) setHeaders(w http.ResponseWriter, snap *policycache.Snapshot, etag int64, confirmed bool) {
	hd := w.Header()
	hd.Set("ETag", `"`+strconv.FormatInt(etag, 10)+`"`)
	hd.Set(apiwire.VersionHeader, strconv.FormatInt(snap.Version, 10))
	if !confirmed {
		_, at := h.source.Current()
		hd.Set(apiwire.UnconfirmedHeader, strconv.FormatInt(int64(time.Since(at).Seconds()), 10))
	}
}

func (h *reader) writeBody(w http.ResponseWriter, snap *policycache.Snapshot, found []policycache.Hit, all bool, bufs *buffers) {
	switch {
	case h.enc < 0:
		httpapi.WriteJSON(w, http.StatusOK, strconv.AppendInt(nil, snap.Version, 10))
	case all:
		// Every agent asking for everything gets the same bytes: made once per snapshot.
		httpapi.WriteJSON(w, http.StatusOK, snap.Body(h.enc, encodeSnapshot(h.enc)))
	default:
		bufs.body = appendList(bufs.body[:0], h.enc, found, &bufs.sink)
		httpapi.WriteJSON(w, http.StatusOK, bufs.body)
	}
}

// putBuffers keeps the buffers of ordinary polls for reuse, not the rare huge ones.
func (h *reader) putBuffers(b *buffers) {
	if cap(b.body) > 1<<20 || cap(b.found) > 1<<14 {
		return
	}
	clear(b.found[:cap(b.found)]) // keep no snapshot alive through the pool (a long poll's earlier, longer answer included)
	b.found = b.found[:0]
	h.bufs.Put(b)
}

// maxWait caps the wait parameter; the request timeout caps it further.
const maxWait = time.Hour

func parseWait(q url.Values) (time.Duration, error) {
	vs, ok := q[apiwire.WaitParam]
	if !ok {
		return 0, nil
	}
	if len(vs) != 1 {
		return 0, fmt.Errorf("%s may be given once", apiwire.WaitParam)
	}
	secs, err := strconv.ParseFloat(vs[0], 64)
	if err != nil || secs < 0 || math.IsNaN(secs) || math.IsInf(secs, 0) {
		return 0, fmt.Errorf("%s=%q is not a number of seconds", apiwire.WaitParam, vs[0])
	}
	return min(time.Duration(secs*float64(time.Second)), maxWait), nil
}

// etags are the versions an If-None-Match header names; nil when it names none. any:
// the header was "*".
type etags struct {
	any      bool
	versions []int64
}

func parseIfNoneMatch(values []string) *etags {
	if len(values) == 0 {
		return nil
	}
	t := &etags{}
	for _, v := range values {
		for tag := range strings.SplitSeq(v, ",") {
			tag = strings.TrimSpace(tag)
			if tag == "" {
				continue
			}
			if tag == "*" {
				t.any = true
				continue
			}
			// Weak and strong tags compare alike here (RFC 9110 13.1.2: weak comparison).
			tag = strings.TrimPrefix(tag, "W/")
			n, err := strconv.ParseInt(strings.Trim(tag, `"`), 10, 64)
			if err != nil || len(tag) < 2 || tag[0] != '"' || tag[len(tag)-1] != '"' {
				// Not a tag this server made: it cannot match, and is ignored.
				continue
			}
			t.versions = append(t.versions, n)
		}
	}
	return t
}

// current: the client holds the answer whose ETag is etag. A tag v is the answer as of
// version v; it is still exact when nothing in it changed after v (etag <= v) and this
// snapshot has got as far as v.
func (t *etags) current(etag, version int64) bool {
	if t == nil {
		return false
	}
	if t.any {
		return true
	}
	for _, v := range t.versions {
		if etag <= v && v <= version {
			return true
		}
	}
	return false
}

// ahead: the client holds a version this snapshot has not reached (another replica
// is ahead of this one).
func (t *etags) ahead(version int64) bool {
	if t == nil || t.any {
		return false
	}
	for _, v := range t.versions {
		if v > version {
			return true
		}
	}
	return false
}
