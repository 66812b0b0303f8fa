package internalapi

import (
	"slices"
	"strconv"

	"netman/lib/httpapi"
	"netman/policy-server/policycache"
)

// Each policy's wire forms are written once, when it enters the policy snapshot (see
// Encoders), in the shapes of apiwire.InternalPolicyV0 and apiwire.InternalPolicyV1, so
// that answering a poll is copying bytes.

// Indexes of the encoded forms in policycache.Policy.Encoded.
const (
	encV0 = iota
	encV1
)

// Encoders are the policy cache's encoders (policycache.Options.Encoders) the handlers
// of this package read.
func Encoders() []policycache.Encoder {
	return []policycache.Encoder{encV0: appendPolicyV0, encV1: appendPolicyV1}
}

func appendPolicyV0(b []byte, p *policycache.Policy) []byte {
	b = append(b, `{"destination":{"id":`...)
	b = httpapi.AppendString(b, p.Destination.ID)
	b = append(b, `,"port":`...)
	b = strconv.AppendInt(b, int64(p.Start), 10)
	if p.End != p.Start {
		b = append(b, `,"ports":{"start":`...)
		b = strconv.AppendInt(b, int64(p.Start), 10)
		b = append(b, `,"end":`...)
		b = strconv.AppendInt(b, int64(p.End), 10)
		b = append(b, '}')
	}
	b = append(b, `,"protocol":`...)
	b = httpapi.AppendString(b, p.Protocol)
	b = append(b, `,"tag":`...)
	b = httpapi.AppendString(b, p.Destination.Tag)
	b = append(b, `},"source":{"id":`...)
	b = httpapi.AppendString(b, p.Source.ID)
	b = append(b, `,"tag":`...)
	b = httpapi.AppendString(b, p.Source.Tag)
	return append(b, "}}"...)
}

func appendPolicyV1(b []byte, p *policycache.Policy) []byte {
	b = append(b, `{"source":{"id":`...)
	b = httpapi.AppendString(b, p.Source.ID)
	b = append(b, `,"tag":`...)
	b = httpapi.AppendString(b, p.Source.Tag)
	b = append(b, `},"destination":{"id":`...)
	b = httpapi.AppendString(b, p.Destination.ID)
	b = append(b, `,"tag":`...)
	b = httpapi.AppendString(b, p.Destination.Tag)
	b = append(b, `,"protocol":`...)
	b = httpapi.AppendString(b, p.Protocol)
	b = append(b, `,"ports":{"start":`...)
	b = strconv.AppendInt(b, int64(p.Start), 10)
	b = append(b, `,"end":`...)
	b = strconv.AppendInt(b, int64(p.End), 10)
	return append(b, "}}}"...)
}

// appendList appends a list body around the encoded forms enc of the hits: v0 is
// {"policies":[...]}, v1 {"total_policies":N,"policies":[...]}.
func appendList(b []byte, enc int, hits []policycache.Hit) []byte {
	// First only the sizes: the forms are scattered over the heap, and with no copy in
	// between, the CPU fetches the first line of many of them at once instead of
	// waiting for each in turn.
	size := len(b) + 48 + len(hits)
	for _, h := range hits {
		size += len(h.Encoded(enc))
	}
	b = slices.Grow(b, size-len(b))
	b = appendListStart(b, enc, len(hits))
	for i, h := range hits {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, h.Encoded(enc)...)
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
			size += len(p.Encoded(enc)) + 1
		}
		b := appendListStart(make([]byte, 0, size), enc, s.Len())
		first := true
		for p := range s.All() {
			if !first {
				b = append(b, ',')
			}
			first = false
			b = append(b, p.Encoded(enc)...)
		}
		return append(b, "]}"...)
	}
}
