package internalapi

import (
	"slices"
	"strconv"

	"netman/lib/httpapi"
	"netman/policy-server/policycache"
)

// Each policy's wire forms are written once, when it enters the policy snapshot (see
// Encoding), in the shapes of apiwire.InternalPolicyV0 and apiwire.InternalPolicyV1, so
// that answering a poll is copying bytes.

// Indexes of the forms in policycache.Encoding.
const (
	encV0 = iota
	encV1
)

// Encoding is the policy cache's encoding (policycache.Options.Encoding) the handlers of
// this package read. The v0 and v1 forms differ only in how they state the ports, so
// each policy's bytes are written once, with both statements of the ports:
//
//	{"destination":{"id":D,  "port":N,  "ports":{"start":N,"end":M},  "protocol":P,"tag":T},"source":{...}}
//	|---------- a ---------| |-- p0 --| |--------- p1 -------------| |------------ rest ------------------|
//
// v0 is a p0 rest (a p0 p1 rest for a range), v1 is a p1 rest: each is at most two
// spans, and the snapshot holds about half the bytes two separate forms would take.
func Encoding() policycache.Encoding {
	return policycache.Encoding{Forms: 2, Encode: appendPolicy}
}

func appendPolicy(b []byte, p *policycache.Policy, forms []policycache.Form) []byte {
	base := len(b)
	b = append(b, `{"destination":{"id":`...)
	b = httpapi.AppendString(b, p.Destination.ID)
	b = append(b, ',')
	a := len(b) - base
	b = append(b, `"port":`...)
	b = strconv.AppendInt(b, int64(p.Start), 10)
	b = append(b, ',')
	p0 := len(b) - base
	b = append(b, `"ports":{"start":`...)
	b = strconv.AppendInt(b, int64(p.Start), 10)
	b = append(b, `,"end":`...)
	b = strconv.AppendInt(b, int64(p.End), 10)
	b = append(b, `},`...)
	p1 := len(b) - base
	b = append(b, `"protocol":`...)
	b = httpapi.AppendString(b, p.Protocol)
	b = append(b, `,"tag":`...)
	b = httpapi.AppendString(b, p.Destination.Tag)
	b = append(b, `},"source":{"id":`...)
	b = httpapi.AppendString(b, p.Source.ID)
	b = append(b, `,"tag":`...)
	b = httpapi.AppendString(b, p.Source.Tag)
	b = append(b, "}}"...)
	end := len(b) - base
	if p.End != p.Start {
		forms[encV0] = policycache.Form{{0, end}}
	} else {
		forms[encV0] = policycache.Form{{0, p0}, {p1, end}}
	}
	forms[encV1] = policycache.Form{{0, a}, {p0, end}}
	return b
}

// appendList appends a list body around the encoded forms enc of the hits: v0 is
// {"policies":[...]}, v1 {"total_policies":N,"policies":[...]}. bufSink keeps
// FetchForms' sink.
func appendList(b []byte, enc int, hits []policycache.Hit, bufSink *byte) []byte {
	n, sink := policycache.FetchForms(hits, enc)
	*bufSink = sink
	size := len(b) + 48 + len(hits) + n
	b = slices.Grow(b, size-len(b))
	b = appendListStart(b, enc, len(hits))
	for i, h := range hits {
		if i > 0 {
			b = append(b, ',')
		}
		b = h.AppendEncoded(b, enc)
	}
	return append(b, "]}"...)
}

func appendListStart(b []byte, enc, n int) []byte {
	if enc == encV1 {
		b = append(b, `{"total_policies":`...)
		b = strconv.AppendInt(b, int64(n), 10)
		return append(b, `,"policies":[`...)
	}
	return append(b, `{"policies":[`...)
}

// encodeSnapshot is the full list of a snapshot, made once per snapshot (Snapshot.Body).
func encodeSnapshot(enc int) func(*policycache.Snapshot) []byte {
	return func(s *policycache.Snapshot) []byte {
		size := 32
		for p := range s.All() {
			size += p.EncodedLen(enc) + 1
		}
		b := appendListStart(make([]byte, 0, size), enc, s.Len())
		first := true
		for p := range s.All() {
			if !first {
				b = append(b, ',')
			}
			first = false
			b = p.AppendEncoded(b, enc)
		}
		return append(b, "]}"...)
	}
}
