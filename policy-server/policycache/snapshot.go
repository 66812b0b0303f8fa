package policycache

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/maphash"
	"iter"
	"math/bits"
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
// It is 64 bytes, one cache line, with what a poll reads of it (encoded) first.
type Policy struct {
	encoded     []byte // see encodeAll
	Source      *Group
	Destination *Group
	Protocol    string
	Start, End  int32
}

func newPolicy(src, dst *Group, proto string, start, end int) *Policy {
	return &Policy{Source: src, Destination: dst, Protocol: models.InternProtocol(proto), Start: int32(start), End: int32(end)}
}

func (p *Policy) key() sortKey {
	return sortKey{src: prefixOf(p.Source.ID), dst: prefixOf(p.Destination.ID), g: p.Source, p: p}
}

// prefixOf is the first 8 bytes of id, big-endian and zero-padded: comparing them
// orders two ids whenever they differ (as they do for almost any two GUIDs).
func prefixOf(id string) uint64 {
	var b [8]byte
	copy(b[:], id)
	return binary.BigEndian.Uint64(b[:])
}

// AppendEncoded appends the policy's wire form i (see Encoding) to b.
func (p *Policy) AppendEncoded(b []byte, i int) []byte { return appendForm(b, p.encoded, i) }

// EncodedLen is the length of the policy's wire form i.
func (p *Policy) EncodedLen(i int) int { return formLen(p.encoded, i) }

// appendForm appends form i of a run of encoded forms (see encodeAll) to b.
func appendForm(b, run []byte, i int) []byte {
	h := run[16*i : 16*i+16]
	b = append(b, run[binary.LittleEndian.Uint32(h):binary.LittleEndian.Uint32(h[4:])]...)
	return append(b, run[binary.LittleEndian.Uint32(h[8:]):binary.LittleEndian.Uint32(h[12:])]...)
}

// formLen is the length of form i of a run.
func formLen(run []byte, i int) int {
	h := run[16*i : 16*i+16]
	return int(binary.LittleEndian.Uint32(h[4:]) - binary.LittleEndian.Uint32(h) + binary.LittleEndian.Uint32(h[12:]) - binary.LittleEndian.Uint32(h[8:]))
}

// Hit is one policy of a lookup's answer, with its encoded forms at hand: reading them
// through the Hit takes one step fewer than through the Policy, and a poll's answer is
// hundreds of policies scattered over the heap.
type Hit struct {
	p     *Policy
	forms []byte
}

// Policy is the policy.
func (h Hit) Policy() *Policy { return h.p }

// AppendEncoded is h.Policy().AppendEncoded(b, i).
func (h Hit) AppendEncoded(b []byte, i int) []byte { return appendForm(b, h.forms, i) }

// FetchForms returns the total length of form i of hits, after reading a byte of every
// cache line of their encoded forms; sink is the xor of those bytes, which the caller
// must store somewhere (so that the reads are made). Run it before copying the forms:
// they are scattered over the heap, and these reads do not depend on one another, so the
// CPU makes many at a time, where a copy waits for each line in turn. The copies then
// find the forms in its caches (measured: a tenth of a 100-id poll's CPU).
func FetchForms(hits []Hit, i int) (length int, sink byte) {
	for _, h := range hits {
		for o := 0; o < len(h.forms); o += 64 {
			sink ^= h.forms[o]
		}
		sink ^= h.forms[len(h.forms)-1]
		length += formLen(h.forms, i)
	}
	return length, sink
}

// Encoding is how a cache writes each policy's wire forms (Options.Encoding), once per
// policy, when the policy enters a snapshot, so that answering a poll is copying bytes.
// Encode appends to b the bytes the policy's Forms forms are made of and sets forms[i]
// to the spans of them form i is: forms that share most of their bytes (as the internal
// API's v0 and v1 shapes do) keep them once.
type Encoding struct {
	Forms  int
	Encode func(b []byte, p *Policy, forms []Form) []byte
}

// Form is one wire form of a policy: the bytes of its first span, then those of its
// second (which may be empty). Offsets count from the first byte Encode appended.
type Form [2]struct{ Start, End int }

// Separately is the Encoding of independent forms, one written by each of encoders.
func Separately(encoders ...func(b []byte, p *Policy) []byte) Encoding {
	return Encoding{Forms: len(encoders), Encode: func(b []byte, p *Policy, forms []Form) []byte {
		base := len(b)
		for i, enc := range encoders {
			start := len(b) - base
			b = enc(b, p)
			forms[i] = Form{{start, len(b) - base}}
		}
		return b
	}}
}

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
	return a.Key().Compare(b.Key())
}

// Sizes of the persistent structure. A change copies one chunk of the ordered list
// (at most chunkMax pointers), the list of chunks (n/chunkMax/2 or so), the array of
// shards (nShards slice headers) and one shard's table per group it touches (about
// 2*groups/nShards entries): at 100k policies and 50k groups a few microseconds, where
// copying the whole snapshot would take tens of milliseconds.
const (
	chunkMax  = 1024
	shardBits = 10
	nShards   = 1 << shardBits
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
	shards   *[nShards]shard
	seed     maphash.Seed
	encoding Encoding

	bodies []lazyBody
	// scratch holds lookups' sort buffers; every snapshot of a cache shares it.
	scratch *sync.Pool
}

type chunk struct{ ps []*Policy }

// shard is the groups whose id hashes to it, in an open-addressing table (linear
// probing) of entries held by value: finding a group reads one slot, then its id and its
// list, which are independent reads, where a Go map of pointers took four or five
// dependent ones. Entries are never removed one by one (see forgetRemoved), so a probe
// ends at the first empty slot.
type shard struct {
	slots []entry // at most 3/5 full (see tableSize); nil when the shard is empty
	used  int
}

// entry is a group and its policies (as source or destination) in order, as sort keys,
// with the version that last changed them. When a group loses its last policy its entry
// stays, empty, as a tombstone, so that LookupChanged sees the removal. It is one cache
// line: hash and id say which group the slot holds (g == nil: an empty slot).
type entry struct {
	hash     uint64
	id       string
	g        *Group
	ps       []sortKey
	modified int64
}

// find returns the index of id's slot (h its hash), or -1.
func (sh *shard) find(h uint64, id string) int {
	if sh.used == 0 {
		return -1
	}
	for i := home(h, len(sh.slots)); ; i = sh.next(i) {
		e := &sh.slots[i]
		if e.g == nil {
			return -1
		}
		if e.hash == h && e.id == id {
			return i
		}
	}
}

// tableSize is the table length for n entries: at most 3/5 full, where a lookup reads
// 1.75 slots on average (linear probing), and any length, not a power of two, so that
// the tables of 50k groups take 5 MB rather than up to twice that.
func tableSize(n int) int { return max(8, n*5/3+1) }

// home is where hash h's probe sequence starts in a table of n slots: the high bits of
// h scaled to n (the low ones chose the shard).
func home(h uint64, n int) int {
	hi, _ := bits.Mul64(h, uint64(n))
	return int(hi)
}

// next is the slot after i.
func (sh *shard) next(i int) int {
	if i++; i == len(sh.slots) {
		return 0
	}
	return i
}

// insert adds e, whose group the shard does not hold, and returns its index. It may
// move every entry (pointers into slots do not survive it).
func (sh *shard) insert(e entry) int {
	if 5*(sh.used+1) > 3*len(sh.slots) {
		old := sh.slots
		sh.slots, sh.used = make([]entry, tableSize(2*(sh.used+1))), 0
		for _, o := range old {
			if o.g != nil {
				sh.insert(o)
			}
		}
	}
	for i := home(e.hash, len(sh.slots)); ; i = sh.next(i) {
		if sh.slots[i].g == nil {
			sh.slots[i] = e
			sh.used++
			return i
		}
	}
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
	hits, changed := s.AppendLookup(nil, ids)
	ps := make([]*Policy, len(hits))
	for i, h := range hits {
		ps[i] = h.p
	}
	return ps, changed
}

// AppendLookup is LookupChanged appending the answer to dst as Hits, so that a caller
// can reuse one buffer for many answers and copy the encoded forms without reading the
// policies. Duplicates in ids are harmless.
func (s *Snapshot) AppendLookup(dst []Hit, ids []string) ([]Hit, int64) {
	if len(ids) == 0 {
		return dst, s.Version
	}
	changed := s.Floor
	if len(ids) == 1 {
		if e := s.entry(ids[0]); e != nil {
			for _, k := range e.ps {
				dst = append(dst, Hit{p: k.p, forms: k.p.encoded})
			}
			return dst, max(changed, e.modified)
		}
		return dst, changed
	}
	sc, _ := s.scratch.Get().(*lookupScratch)
	if sc == nil {
		sc = new(lookupScratch)
	}
	// The reads a lookup makes are cache misses (a poll's groups are scattered over a
	// snapshot of tens of megabytes), so they go in stages, each a short loop of reads
	// that do not depend on one another, which the CPU then makes many at a time instead
	// of one after the other: the slots, then the ids in them and the lists.
	found := sc.found[:0]
	for _, id := range ids {
		h := maphash.String(s.seed, id)
		found = append(found, s.candidate(h))
	}
	runs := sc.runs[:0]
	for i, e := range found {
		if e == nil {
			continue
		}
		if e.id != ids[i] {
			// Another group with the same 64-bit hash, or a slot further on.
			if e = s.entry(ids[i]); e == nil {
				continue
			}
		}
		changed = max(changed, e.modified)
		for j := range e.ps {
			// Reading src here, in a loop of independent reads, brings each key into
			// the cache for the sort.
			k := &e.ps[j]
			runs = append(runs, item{k.src, k})
		}
	}
	// The items hold what orders almost any two policies, so sorting them reads no
	// policy.
	keys, spare := sortItems(runs, sc.tmp)
	for i, it := range keys {
		// A policy between two requested groups is in both lists, and so twice here,
		// side by side.
		if i == 0 || it.k.p != keys[i-1].k.p {
			dst = append(dst, Hit{p: it.k.p, forms: it.k.p.encoded})
		}
	}
	if cap(keys) <= 1<<16 && cap(spare) <= 1<<16 {
		// Keep no snapshot alive through the pool.
		clear(found)
		clear(keys[:cap(keys)])
		clear(spare[:cap(spare)])
		sc.found, sc.runs, sc.tmp = found[:0], keys[:0], spare[:0]
		s.scratch.Put(sc)
	}
	return dst, changed
}

// candidate returns the entry in the first slot of hash h's probe sequence that has hash
// h, or nil at an empty slot: the entry of the id with that hash, unless another id
// with the same 64-bit hash comes first (the caller checks the id).
func (s *Snapshot) candidate(h uint64) *entry {
	sh := &s.shards[h&(nShards-1)]
	if sh.used == 0 {
		return nil
	}
	for i := home(h, len(sh.slots)); ; i = sh.next(i) {
		e := &sh.slots[i]
		if e.g == nil {
			return nil
		}
		if e.hash == h {
			return e
		}
	}
}

// sortItems sorts items as less orders them, with tmp as the second buffer, and returns
// the sorted items and the other buffer, for reuse. A poll's few hundred items sort
// fastest by a radix sort on the first four bytes of src (four passes of moves, no
// comparisons, where the comparisons of a merge or quicksort are each a branch the CPU
// cannot predict), then by less within each run of items those bytes do not tell
// apart: mostly one group's own policies as source, already in order, since the radix
// sort is stable and each group's list is sorted.
func sortItems(items, tmp []item) (sorted, spare []item) {
	n := len(items)
	if n < 2 {
		return items, tmp
	}
	var counts [4][256]uint32
	for _, it := range items {
		for d := range 4 {
			counts[d][byte(it.src>>(32+8*d))]++
		}
	}
	tmp = slices.Grow(tmp[:0], n)[:n]
	for d := range 4 {
		shift := 32 + 8*d
		c := &counts[d]
		if c[byte(items[0].src>>shift)] == uint32(n) {
			continue // every item has this digit
		}
		var sum uint32
		for i, k := range c {
			c[i], sum = sum, sum+k
		}
		for _, it := range items {
			b := byte(it.src >> shift)
			tmp[c[b]] = it
			c[b]++
		}
		items, tmp = tmp, items
	}
	for i := 0; i < n; {
		j := i + 1
		for j < n && items[j].src>>32 == items[i].src>>32 {
			j++
		}
		if run := items[i:j]; len(run) > 16 {
			slices.SortStableFunc(run, func(a, b item) int { return compareKeys(a.k, b.k) })
		} else {
			for x := 1; x < len(run); x++ {
				for y := x; y > 0 && less(run[y], run[y-1]); y-- {
					run[y], run[y-1] = run[y-1], run[y]
				}
			}
		}
		i = j
	}
	return items, tmp
}

// less is compareKeys(a.k, b.k) < 0, reading the keys (in the cache since the items
// were gathered) only when src ties.
func less(a, b item) bool {
	if a.src != b.src {
		return a.src < b.src
	}
	return compareKeys(a.k, b.k) < 0
}

// item is a key as a lookup sorts it: 16 bytes, its first field at hand.
type item struct {
	src uint64
	k   *sortKey
}

// sortKey is a policy as a group's list holds it: with the first 8 bytes of its source
// and destination ids (prefixOf) and its source group, which order it against almost
// any other policy without reading it.
type sortKey struct {
	src, dst uint64
	g        *Group
	p        *Policy
}

type lookupScratch struct {
	found     []*entry
	runs, tmp []item
}

// compareKeys orders as Compare does, reading the policies only to break the ties the
// prefixes leave.
func compareKeys(a, b *sortKey) int {
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

func (s *Snapshot) hash(id string) uint64 { return maphash.String(s.seed, id) }

// entry returns id's entry, or nil.
func (s *Snapshot) entry(id string) *entry {
	h := s.hash(id)
	sh := &s.shards[h&(nShards-1)]
	if i := sh.find(h, id); i >= 0 {
		return &sh.slots[i]
	}
	return nil
}

func newSnapshot(version int64, encoding Encoding, seed maphash.Seed) *Snapshot {
	return &Snapshot{
		Version:  version,
		shards:   new([nShards]shard),
		seed:     seed,
		encoding: encoding,
		bodies:   make([]lazyBody, encoding.Forms),
		scratch:  new(sync.Pool),
	}
}

// build makes a snapshot of all, which need not be sorted.
func build(version int64, all []models.Policy, encoding Encoding, seed maphash.Seed) *Snapshot {
	s := newSnapshot(version, encoding, seed)
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
		ps[i] = &backing[i]
	}
	// The store returns this order already; checking is cheaper than sorting.
	if !slices.IsSortedFunc(ps, Compare) {
		slices.SortStableFunc(ps, Compare)
	}
	ps = slices.CompactFunc(ps, func(a, b *Policy) bool { return Compare(a, b) == 0 })
	encodeAll(ps, encoding)
	for i := 0; i < len(ps); i += chunkMax / 2 {
		s.chunks = append(s.chunks, &chunk{ps: slices.Clip(ps[i:min(i+chunkMax/2, len(ps))])})
	}
	s.n = len(ps)
	// Every group's list is cut from one array of exactly the keys needed (a change
	// copies the lists it touches, so the array is never written again).
	sizes := make(map[*Group]int, len(groups))
	total := 0
	for _, p := range ps {
		sizes[p.Source]++
		total++
		if p.Destination != p.Source {
			sizes[p.Destination]++
			total++
		}
	}
	keys := make([]sortKey, total)
	lists := make(map[*Group][]sortKey, len(sizes))
	for g, n := range sizes {
		lists[g], keys = keys[:0:n], keys[n:]
	}
	for _, p := range ps {
		// Policies come in order, so each list is sorted.
		lists[p.Source] = append(lists[p.Source], p.key())
		if p.Destination != p.Source {
			lists[p.Destination] = append(lists[p.Destination], p.key())
		}
	}
	var counts [nShards]int
	for g := range lists {
		counts[s.hash(g.ID)&(nShards-1)]++
	}
	for i, n := range counts {
		if n > 0 {
			s.shards[i].slots = make([]entry, tableSize(n))
		}
	}
	for g, ps := range lists {
		s.shards[s.hash(g.ID)&(nShards-1)].insert(entry{hash: s.hash(g.ID), id: g.ID, g: g, ps: ps, modified: version})
	}
	s.groups = len(lists)
	return s
}

// encode writes the forms of a snapshot built without them (to be compared), so that it
// can be served. Only for a snapshot no one has seen: it writes to its policies.
func (s *Snapshot) encode(encoding Encoding) {
	s.encoding, s.bodies = encoding, make([]lazyBody, encoding.Forms)
	encodeAll(slices.Collect(s.All()), encoding)
}

// encodeAll writes each policy's encoded forms as one run of bytes: for each of the k
// forms four little-endian uint32 offsets into the run (where its two spans start and
// end), then the bytes. Reading a form is then one step from the policy, with the
// offsets in the same cache line as the form's first bytes.
func encodeAll(ps []*Policy, encoding Encoding) {
	if encoding.Forms == 0 {
		return
	}
	header := 16 * encoding.Forms
	forms := make([]Form, encoding.Forms)
	var run, buf []byte
	for _, p := range ps {
		// Each run is written apart first, then copied where it stays: into big shared
		// buffers for a full load, into one of its own size for a change (a buffer
		// sized for the worst case would waste four fifths of it, for every policy a
		// change adds, for as long as the policy lives).
		clear(forms)
		run = append(run[:0], make([]byte, header)...)
		run = encoding.Encode(run, p, forms)
		for j, f := range forms {
			h := run[16*j:]
			for k, sp := range f {
				if sp.End > sp.Start {
					sp.Start, sp.End = sp.Start+header, sp.End+header
				} else {
					sp.Start, sp.End = header, header
				}
				binary.LittleEndian.PutUint32(h[8*k:], uint32(sp.Start))
				binary.LittleEndian.PutUint32(h[8*k+4:], uint32(sp.End))
			}
		}
		if len(ps) < 64 {
			p.encoded = slices.Clone(run)
			continue
		}
		if cap(buf)-len(buf) < len(run) {
			buf = make([]byte, 0, max(256<<10, len(run)))
		}
		start := len(buf)
		buf = append(buf, run...)
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
	next := newSnapshot(version, s.encoding, s.seed)
	next.Floor, next.n, next.groups, next.tombs = s.Floor, s.n, s.groups, s.tombs
	next.scratch = s.scratch
	next.chunks = slices.Clone(s.chunks)
	*next.shards = *s.shards
	a := applier{s: next, chunks: map[*chunk]bool{}, shards: map[int]bool{}, entries: map[string]bool{}}
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
	shards  map[int]bool    // by index
	entries map[string]bool // by group id: the entry's list is its own copy
}

func probe(m models.Policy) *Policy {
	return newPolicy(&Group{ID: m.Source.ID, Tag: m.Source.Tag}, &Group{ID: m.Destination.ID, Tag: m.Destination.Tag},
		m.Destination.Protocol, m.Destination.Ports.Start, m.Destination.Ports.End)
}

// ownEntry returns the new snapshot's own copy of id's entry, creating the entry (with
// tag) when create is set and it does not exist; nil when it does not exist otherwise.
// The pointer is good until the next call that creates an entry (which may move the
// shard's table).
func (a *applier) ownEntry(id, tag string, create bool) (*entry, error) {
	h := a.s.hash(id)
	si := int(h & (nShards - 1))
	sh := &a.s.shards[si]
	if !a.shards[si] {
		sh.slots = slices.Clone(sh.slots)
		a.shards[si] = true
	}
	var e *entry
	if i := sh.find(h, id); i >= 0 {
		e = &sh.slots[i]
	}
	switch {
	case (e == nil || len(e.ps) == 0) && !create:
		return nil, nil
	case e == nil:
		// A new group: its tag may be a new one.
		a.s.groups++
		e = &sh.slots[sh.insert(entry{hash: h, id: id, g: &Group{ID: id, Tag: tag}})]
	case len(e.ps) == 0:
		// A group that had lost its policies: its tag may be a new one.
		a.s.tombs--
		a.s.groups++
		e.g, e.ps = &Group{ID: id, Tag: tag}, nil
	case e.g.Tag != tag:
		return nil, fmt.Errorf("%w: group %q has tag %s, the change says %s", errInconsistent, id, e.g.Tag, tag)
	case !a.entries[id]:
		e.ps = slices.Clone(e.ps)
	}
	a.entries[id] = true
	return e, nil
}

// forgetRemoved drops the tombstones and raises Floor to Version: every client that
// holds an older answer gets a new one once. O(groups), when tombstones outnumber half
// the groups.
func (s *Snapshot) forgetRemoved() {
	for i, sh := range s.shards {
		n := 0
		for _, e := range sh.slots {
			if len(e.ps) > 0 {
				n++
			}
		}
		var kept shard
		if n > 0 {
			kept.slots = make([]entry, tableSize(n))
			for _, e := range sh.slots {
				if len(e.ps) > 0 {
					kept.insert(e)
				}
			}
		}
		s.shards[i] = kept
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
		src = a.s.entry(m.Source.ID) // creating dst may have moved src's table
	} else if m.Destination.Tag != m.Source.Tag {
		return fmt.Errorf("%w: group %q with two tags", errInconsistent, m.Source.ID)
	}
	p := newPolicy(src.g, dst.g, m.Destination.Protocol, m.Destination.Ports.Start, m.Destination.Ports.End)
	encodeAll([]*Policy{p}, a.s.encoding)
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
	i, _ := slices.BinarySearchFunc(e.ps, &k, func(a sortKey, b *sortKey) int { return compareKeys(&a, b) })
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
