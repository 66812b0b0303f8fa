package policycache

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/maphash"
	"iter"
	"maps"
	"slices"
	"sync"

	"netman/lib/models"
)

// Group is a policy group as a snapshot keeps it: one value per id, shared by every
// policy that names the group.
type Group struct {
	ID  string
	Tag string
}

// Policy is the compact form of models.Policy, with its encoded forms (see Encoder).
// It is never modified once in a snapshot.
type Policy struct {
	// prefix is the first 8 bytes of Source.ID, big-endian and zero-padded: comparing
	// it orders two policies whenever it differs (as it does for almost any two GUIDs),
	// which makes sorting a poll's answer cheap. dprefix is the same of Destination.ID,
	// which orders two policies of one source. These, Source and encoded, which a
	// poll reads, come first so that they share a cache line.
	prefix, dprefix uint64
	Source          *Group
	encoded         []byte // see encodeAll
	Destination     *Group
	Protocol        string
	Start, End      int32
}

func newPolicy(src, dst *Group, proto string, start, end int) *Policy {
	p := &Policy{Source: src, Destination: dst, Protocol: models.InternProtocol(proto), Start: int32(start), End: int32(end)}
	p.setPrefix()
	return p
}

func (p *Policy) key() sortKey {
	return sortKey{src: p.prefix, dst: p.dprefix, g: p.Source, p: p}
}

func (p *Policy) setPrefix() {
	p.prefix, p.dprefix = prefixOf(p.Source.ID), prefixOf(p.Destination.ID)
}

func prefixOf(id string) uint64 {
	var b [8]byte
	copy(b[:], id)
	return binary.BigEndian.Uint64(b[:])
}

// Encoded is the policy as encoder i of Options.Encoders wrote it.
func (p *Policy) Encoded(i int) []byte {
	start := binary.LittleEndian.Uint32(p.encoded[4*i:])
	end := binary.LittleEndian.Uint32(p.encoded[4*i+4:])
	return p.encoded[start:end:end]
}

// Encoder appends one policy's wire form to b. The cache runs every encoder once per
// policy, when the policy enters a snapshot, so that answering a poll is copying bytes.
type Encoder func(b []byte, p *Policy) []byte

// Key returns p's place in the policy order (models.PolicyKey).
func (p *Policy) Key() models.PolicyKey {
	return models.PolicyKey{
		Source: p.Source.ID, Destination: p.Destination.ID, Protocol: p.Protocol,
		Start: int(p.Start), End: int(p.End),
	}
}

// Compare orders policies by source id, destination id, protocol, then ports.
func Compare(a, b *Policy) int {
	if a == b {
		return 0
	}
	if a.prefix != b.prefix {
		if a.prefix < b.prefix {
			return -1
		}
		return 1
	}
	return a.Key().Compare(b.Key())
}

// Sizes of the persistent structure. A change copies one chunk of the ordered list
// (at most chunkMax pointers), the list of chunks (n/chunkMax/2 or so), the array of
// shards (nShards pointers) and one shard per group it touches (groups/nShards
// entries): at 100k policies and 50k groups a few microseconds, where copying the whole
// snapshot would take tens of milliseconds.
const (
	chunkMax = 1024
	nShards  = 1024
)

// Snapshot is every policy at one store version, in the stable order (Compare), indexed
// by group id. It is immutable: a change produces a new snapshot that shares everything
// it did not touch with the old one.
type Snapshot struct {
	Version int64
	// Floor is the version this snapshot's change tracking starts at (its full load,
	// or the last time it forgot removed groups): LookupChanged is never below it.
	Floor int64

	n        int
	groups   int      // entries with policies
	tombs    int      // entries of groups whose last policy was removed (see entry)
	chunks   []*chunk // the policies in order, split into runs of at most chunkMax
	shards   *[nShards]*shard
	seed     maphash.Seed
	encoders []Encoder

	bodies []lazyBody
	// scratch holds lookups' sort buffers; every snapshot of a cache shares it.
	scratch *sync.Pool
}

type chunk struct{ ps []*Policy }

type shard struct{ groups map[string]*entry }

// entry is a group and its policies (as source or destination) in order, as sort keys,
// with the version that last changed them. When a group loses its last policy its entry
// stays, empty, as a tombstone, so that LookupChanged sees the removal.
type entry struct {
	g        *Group
	ps       []sortKey
	modified int64
}

type lazyBody struct {
	once sync.Once
	b    []byte
}

// Len is the number of policies.
func (s *Snapshot) Len() int { return s.n }

// All yields every policy in order.
func (s *Snapshot) All() iter.Seq[*Policy] {
	return func(yield func(*Policy) bool) {
		for _, c := range s.chunks {
			for _, p := range c.ps {
				if !yield(p) {
					return
				}
			}
		}
	}
}

// Body returns encode(s) for encoder i, calling encode at most once per snapshot: the
// internal API keeps each encoded full list here so it lives exactly as long as the
// snapshot.
func (s *Snapshot) Body(i int, encode func(*Snapshot) []byte) []byte {
	b := &s.bodies[i]
	b.once.Do(func() { b.b = encode(s) })
	return b.b
}

// Lookup returns the policies that name one of ids as source or destination, in order,
// each once. ids must hold no duplicates.
func (s *Snapshot) Lookup(ids []string) []*Policy {
	ps, _ := s.LookupChanged(ids)
	return ps
}

// LookupChanged is Lookup plus the last version at which that answer changed, never
// below Floor: an answer given at version v >= that is still exact. It is the internal
// API's ETag of a filtered list, so a long poll wakes only the clients whose answer
// changed. With no ids it is Version (the answer is the full list).
func (s *Snapshot) LookupChanged(ids []string) ([]*Policy, int64) {
	return s.AppendLookup(nil, ids)
}

// AppendLookup is LookupChanged appending the answer to dst, so that a caller can reuse
// one buffer for many answers.
func (s *Snapshot) AppendLookup(dst []*Policy, ids []string) ([]*Policy, int64) {
	if len(ids) == 0 {
		return dst, s.Version
	}
	changed := s.Floor
	if len(ids) == 1 {
		if e := s.entry(ids[0]); e != nil {
			for _, k := range e.ps {
				dst = append(dst, k.p)
			}
			return dst, max(changed, e.modified)
		}
		return dst, changed
	}
	sc, _ := s.scratch.Get().(*lookupScratch)
	if sc == nil {
		sc = new(lookupScratch)
	}
	keys, lists := sc.keys[:0], 0
	for _, id := range ids {
		e := s.entry(id)
		if e == nil {
			continue
		}
		changed = max(changed, e.modified)
		if len(e.ps) > 0 {
			lists++
			keys = append(keys, e.ps...)
		}
	}
	if lists > 1 {
		// The lists are sorted, but for a poll's ~100 lists of a few policies each one
		// sort of all their keys takes no more comparisons than a 100-way merge, and is
		// simpler. The keys hold what orders almost any two policies, so gathering and
		// sorting them reads no policy: the policies are scattered over the heap, and
		// comparing the policies themselves was a third of a poll's CPU.
		slices.SortFunc(keys, compareKeys)
	}
	for i, k := range keys {
		// A policy between two requested groups is in both lists, and so twice here,
		// side by side.
		if i == 0 || k.p != keys[i-1].p {
			dst = append(dst, k.p)
		}
	}
	if cap(keys) <= 1<<16 {
		clear(keys) // keep no policy alive through the pool
		sc.keys = keys[:0]
		s.scratch.Put(sc)
	}
	return dst, changed
}

// sortKey is a policy as a group's list holds it: with the first 8 bytes of its source
// and destination ids (Policy.prefix) and its source group, which order it against
// almost any other policy without reading either.
type sortKey struct {
	src, dst uint64
	g        *Group
	p        *Policy
}

type lookupScratch struct{ keys []sortKey }

// compareKeys orders as Compare does, reading the policies only to break the ties the
// prefixes leave.
func compareKeys(a, b sortKey) int {
	if a.src != b.src {
		if a.src < b.src {
			return -1
		}
		return 1
	}
	if a.g != b.g {
		// Two sources with one prefix (or one id in two groups: never within a
		// snapshot, but the full comparison is right either way).
		return Compare(a.p, b.p)
	}
	if a.dst != b.dst {
		if a.dst < b.dst {
			return -1
		}
		return 1
	}
	return Compare(a.p, b.p)
}

func (s *Snapshot) shardOf(id string) int {
	return int(maphash.String(s.seed, id) % nShards)
}

func (s *Snapshot) entry(id string) *entry {
	sh := s.shards[s.shardOf(id)]
	if sh == nil {
		return nil
	}
	return sh.groups[id]
}

func newSnapshot(version int64, encoders []Encoder, seed maphash.Seed) *Snapshot {
	return &Snapshot{
		Version:  version,
		shards:   new([nShards]*shard),
		seed:     seed,
		encoders: encoders,
		bodies:   make([]lazyBody, len(encoders)),
		scratch:  new(sync.Pool),
	}
}

// build makes a snapshot of all, which need not be sorted.
func build(version int64, all []models.Policy, encoders []Encoder, seed maphash.Seed) *Snapshot {
	s := newSnapshot(version, encoders, seed)
	s.Floor = version
	groups := make(map[string]*Group)
	group := func(id, tag string) *Group {
		if g, ok := groups[id]; ok {
			return g
		}
		g := &Group{ID: id, Tag: tag}
		groups[id] = g
		return g
	}
	// One allocation for all policies and one buffer for their encoded forms.
	backing := make([]Policy, len(all))
	ps := make([]*Policy, len(all))
	for i, m := range all {
		backing[i] = Policy{
			Source:      group(m.Source.ID, m.Source.Tag),
			Destination: group(m.Destination.ID, m.Destination.Tag),
			Protocol:    models.InternProtocol(m.Destination.Protocol),
			Start:       int32(m.Destination.Ports.Start),
			End:         int32(m.Destination.Ports.End),
		}
		backing[i].setPrefix()
		ps[i] = &backing[i]
	}
	// The store returns this order already; checking is cheaper than sorting.
	if !slices.IsSortedFunc(ps, Compare) {
		slices.SortStableFunc(ps, Compare)
	}
	ps = slices.CompactFunc(ps, func(a, b *Policy) bool { return Compare(a, b) == 0 })
	encodeAll(ps, encoders)
	for i := 0; i < len(ps); i += chunkMax / 2 {
		s.chunks = append(s.chunks, &chunk{ps: slices.Clip(ps[i:min(i+chunkMax/2, len(ps))])})
	}
	s.n = len(ps)
	entries := make(map[*Group]*entry, len(groups))
	add := func(g *Group, p *Policy) {
		e := entries[g]
		if e == nil {
			e = &entry{g: g, modified: version}
			entries[g] = e
			s.groups++
			h := s.shardOf(g.ID)
			if s.shards[h] == nil {
				s.shards[h] = &shard{groups: map[string]*entry{}}
			}
			s.shards[h].groups[g.ID] = e
		}
		e.ps = append(e.ps, p.key()) // policies come in order, so each list is sorted
	}
	for _, p := range ps {
		add(p.Source, p)
		if p.Destination != p.Source {
			add(p.Destination, p)
		}
	}
	return s
}

// encodeAll writes each policy's encoded forms, for k encoders, as one run of bytes: k+1
// little-endian uint32 offsets into the run (where form 0 starts, then where each form
// ends), then the forms. Reading a form is then one step from the policy, with the
// offsets in the same cache line as the form's first bytes; a slice per form would add
// a step, and a cache miss per policy a poll copies.
func encodeAll(ps []*Policy, encoders []Encoder) {
	if len(encoders) == 0 {
		return
	}
	header := 4 * (len(encoders) + 1)
	var buf []byte
	for i, p := range ps {
		if cap(buf)-len(buf) < header+len(encoders)*512 {
			// Big buffers for a full load, a small one for a single change.
			buf = make([]byte, 0, min(256<<10, header+(len(ps)-i)*len(encoders)*512))
		}
		start := len(buf)
		buf = append(buf, make([]byte, header)...)
		binary.LittleEndian.PutUint32(buf[start:], uint32(header))
		for j, enc := range encoders {
			buf = enc(buf, p)
			binary.LittleEndian.PutUint32(buf[start+4*(j+1):], uint32(len(buf)-start))
		}
		p.encoded = buf[start:len(buf):len(buf)]
	}
}

// errInconsistent says a change does not fit the snapshot (adding a policy it holds,
// removing one it does not, a group whose tag differs): the snapshot is not the state
// the change was made on, and the cache must load everything.
var errInconsistent = errors.New("change does not fit the snapshot")

// apply returns the snapshot that changes (consecutive versions after s.Version, the
// last one being version) produce from s. s is not modified. Cost: O(changes), see
// chunkMax and nShards.
func (s *Snapshot) apply(version int64, changes []models.Change) (*Snapshot, error) {
	next := newSnapshot(version, s.encoders, s.seed)
	next.Floor, next.n, next.groups, next.tombs = s.Floor, s.n, s.groups, s.tombs
	next.scratch = s.scratch
	next.chunks = slices.Clone(s.chunks)
	*next.shards = *s.shards
	a := applier{s: next, chunks: map[*chunk]bool{}, shards: map[int]bool{}, entries: map[*entry]bool{}}
	for _, c := range changes {
		a.version = c.Version
		for _, m := range c.Policies {
			var err error
			if c.Added {
				err = a.add(m)
			} else {
				err = a.remove(m)
			}
			if err != nil {
				return nil, fmt.Errorf("version %d: %w", c.Version, err)
			}
		}
	}
	if next.tombs > max(1024, next.groups/2) {
		next.forgetRemoved()
	}
	return next, nil
}

// applier tracks which parts of the new snapshot are its own copies (may be modified)
// rather than shared with the old snapshot.
type applier struct {
	s       *Snapshot
	version int64 // of the change being applied
	chunks  map[*chunk]bool
	shards  map[int]bool
	entries map[*entry]bool
}

func probe(m models.Policy) *Policy {
	return newPolicy(&Group{ID: m.Source.ID, Tag: m.Source.Tag}, &Group{ID: m.Destination.ID, Tag: m.Destination.Tag},
		m.Destination.Protocol, m.Destination.Ports.Start, m.Destination.Ports.End)
}

// ownEntry returns the new snapshot's own copy of id's entry, creating the entry (with
// tag) when create is set and it does not exist; nil when it does not exist otherwise.
func (a *applier) ownEntry(id, tag string, create bool) (*entry, error) {
	h := a.s.shardOf(id)
	sh := a.s.shards[h]
	if !a.shards[h] {
		copied := &shard{groups: map[string]*entry{}}
		if sh != nil {
			copied.groups = maps.Clone(sh.groups)
		}
		a.s.shards[h], a.shards[h] = copied, true
		sh = copied
	}
	e := sh.groups[id]
	switch {
	case (e == nil || len(e.ps) == 0) && !create:
		return nil, nil
	case e == nil || len(e.ps) == 0:
		// A new group, or one that had lost its policies: its tag may be a new one.
		if e != nil {
			a.s.tombs--
		}
		a.s.groups++
		e = &entry{g: &Group{ID: id, Tag: tag}}
	case e.g.Tag != tag:
		return nil, fmt.Errorf("%w: group %q has tag %s, the change says %s", errInconsistent, id, e.g.Tag, tag)
	case !a.entries[e]:
		e = &entry{g: e.g, ps: slices.Clone(e.ps), modified: e.modified}
	default:
		return e, nil
	}
	sh.groups[id], a.entries[e] = e, true
	return e, nil
}

// forgetRemoved drops the tombstones and raises Floor to Version: every client that
// holds an older answer gets a new one once. O(groups), when tombstones outnumber half
// the groups.
func (s *Snapshot) forgetRemoved() {
	for h, sh := range s.shards {
		if sh == nil {
			continue
		}
		kept := &shard{groups: make(map[string]*entry, len(sh.groups))}
		for id, e := range sh.groups {
			if len(e.ps) > 0 {
				kept.groups[id] = e
			}
		}
		s.shards[h] = kept
	}
	s.tombs, s.Floor = 0, s.Version
}

// locate returns the index of the chunk p belongs in and p's position in it.
func (a *applier) locate(p *Policy) (ci, pi int, found bool) {
	cs := a.s.chunks
	ci, _ = slices.BinarySearchFunc(cs, p, func(c *chunk, p *Policy) int { return Compare(c.ps[len(c.ps)-1], p) })
	if ci == len(cs) {
		if ci == 0 {
			return 0, 0, false
		}
		ci-- // after everything: the end of the last chunk
	}
	pi, found = slices.BinarySearchFunc(cs[ci].ps, p, Compare)
	return ci, pi, found
}

func (a *applier) ownChunk(ci int) *chunk {
	c := a.s.chunks[ci]
	if !a.chunks[c] {
		c = &chunk{ps: slices.Clone(c.ps)}
		a.s.chunks[ci], a.chunks[c] = c, true
	}
	return c
}

func (a *applier) add(m models.Policy) error {
	src, err := a.ownEntry(m.Source.ID, m.Source.Tag, true)
	if err != nil {
		return err
	}
	dst := src
	if m.Destination.ID != m.Source.ID {
		if dst, err = a.ownEntry(m.Destination.ID, m.Destination.Tag, true); err != nil {
			return err
		}
	} else if m.Destination.Tag != m.Source.Tag {
		return fmt.Errorf("%w: group %q with two tags", errInconsistent, m.Source.ID)
	}
	p := newPolicy(src.g, dst.g, m.Destination.Protocol, m.Destination.Ports.Start, m.Destination.Ports.End)
	encodeAll([]*Policy{p}, a.s.encoders)
	if len(a.s.chunks) == 0 {
		c := &chunk{ps: []*Policy{p}}
		a.s.chunks, a.chunks[c] = []*chunk{c}, true
	} else {
		ci, pi, found := a.locate(p)
		if found {
			return fmt.Errorf("%w: adding a policy it holds (%s -> %s)", errInconsistent, p.Source.ID, p.Destination.ID)
		}
		c := a.ownChunk(ci)
		c.ps = slices.Insert(c.ps, pi, p)
		if len(c.ps) > chunkMax {
			half := len(c.ps) / 2
			second := &chunk{ps: slices.Clone(c.ps[half:])}
			c.ps = slices.Clip(c.ps[:half])
			a.s.chunks = slices.Insert(a.s.chunks, ci+1, second)
			a.chunks[second] = true
		}
	}
	insertSorted(src, p)
	src.modified = a.version
	if dst != src {
		insertSorted(dst, p)
		dst.modified = a.version
	}
	a.s.n++
	return nil
}

func insertSorted(e *entry, p *Policy) {
	k := p.key()
	i, _ := slices.BinarySearchFunc(e.ps, k, compareKeys)
	e.ps = slices.Insert(e.ps, i, k)
}

func (a *applier) remove(m models.Policy) error {
	if len(a.s.chunks) == 0 {
		return fmt.Errorf("%w: removing a policy from an empty snapshot", errInconsistent)
	}
	ci, pi, found := a.locate(probe(m))
	if !found {
		return fmt.Errorf("%w: removing a policy it does not hold (%s -> %s)", errInconsistent, m.Source.ID, m.Destination.ID)
	}
	c := a.ownChunk(ci)
	p := c.ps[pi]
	c.ps = slices.Delete(c.ps, pi, pi+1)
	if len(c.ps) == 0 {
		a.s.chunks = slices.Delete(a.s.chunks, ci, ci+1)
	}
	for _, g := range []*Group{p.Source, p.Destination} {
		e, err := a.ownEntry(g.ID, g.Tag, false)
		if err != nil {
			return err
		}
		if e == nil {
			return fmt.Errorf("%w: group %q missing from the index", errInconsistent, g.ID)
		}
		if i := slices.IndexFunc(e.ps, func(k sortKey) bool { return k.p == p }); i >= 0 {
			e.ps = slices.Delete(e.ps, i, i+1)
		}
		e.modified = a.version
		if len(e.ps) == 0 {
			e.ps = nil // a tombstone
			a.s.groups--
			a.s.tombs++
		}
		if p.Destination == p.Source {
			break
		}
	}
	a.s.n--
	return nil
}

// equal reports whether two snapshots hold the same policies with the same tags.
func equal(a, b *Snapshot) bool {
	if a.n != b.n {
		return false
	}
	next, stop := iter.Pull(b.All())
	defer stop()
	for p := range a.All() {
		q, ok := next()
		if !ok || Compare(p, q) != 0 || p.Source.Tag != q.Source.Tag || p.Destination.Tag != q.Destination.Tag {
			return false
		}
	}
	return true
}
