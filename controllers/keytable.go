package controllers

import (
	"hash/maphash"
	"math/bits"
)

// keyTable maps session keys to index entries: an open-addressing hash
// table with linear probing, in one slice of 40-byte slots. A Go map of
// the same entries cost 150 bytes a session at a million (its tables grow
// by doubling, so at a power-of-two size they are half empty); this one
// keeps its load between 0.64 and 0.8 (0.75 when sized for a known count),
// about 55 bytes a session, which is most of what the collector holds (see
// `make bench-scale`).
type keyTable struct {
	slots []keySlot
	n     int
	seed  maphash.Seed
}

// keySlot is an entry packed into 40 bytes (a gcEntry is 32, its key 16):
// times in unix seconds as uint32 (until 2106), the resourceVersion in two
// halves, and the flags in the top bits of the subject id.
type keySlot struct {
	key        sessionKey
	rvLo, rvHi uint32
	due        uint32
	created    uint32
	subject    uint32
	client     uint32
}

const (
	// slotUsed marks an occupied slot; the entry's own flags sit below it.
	slotUsed      uint32 = 1 << 31
	slotFlagShift        = 29
	// maxSubjectID is the largest subject id a slot can hold.
	maxSubjectID = 1<<slotFlagShift - 1
)

func (s *keySlot) used() bool { return s.subject&slotUsed != 0 }

func packSlot(k sessionKey, e gcEntry) keySlot {
	return keySlot{
		key: k, rvLo: uint32(e.rv), rvHi: uint32(e.rv >> 32),
		due: uint32(min(max(e.due, 0), 1<<32-1)), created: e.created,
		subject: slotUsed | uint32(e.flags&(entryRevoked|entryInexact))<<slotFlagShift | e.subject&maxSubjectID,
		client:  e.client,
	}
}

func (s *keySlot) entry() gcEntry {
	return gcEntry{
		rv: uint64(s.rvHi)<<32 | uint64(s.rvLo), due: int64(s.due), created: s.created,
		subject: s.subject & maxSubjectID, client: s.client,
		flags: uint8(s.subject>>slotFlagShift) & (entryRevoked | entryInexact),
	}
}

const (
	keyTableMinSize = 64
	// A table grows by a quarter when it passes keyTableMaxLoad.
	keyTableMaxLoad = 0.8
	// keyTableHintLoad is the load of a table sized for a hint, leaving
	// room for new sessions before it grows.
	keyTableHintLoad = 0.75
)

// newKeyTable returns a table with room for about hint entries before it
// grows: a table built from a known count never holds two copies of itself.
func newKeyTable(hint int) keyTable {
	t := keyTable{seed: maphash.MakeSeed()}
	if hint > 0 {
		t.slots = make([]keySlot, max(keyTableMinSize, int(float64(hint)/keyTableHintLoad)))
	}
	return t
}

func (t *keyTable) len() int { return t.n }

// home is the slot k's probe starts at: a seeded hash (names can be chosen
// by whoever may create RefreshTokens) reduced to the table's size.
func (t *keyTable) home(k *sessionKey) int {
	hi, _ := bits.Mul64(maphash.Comparable(t.seed, *k), uint64(len(t.slots)))
	return int(hi)
}

func (t *keyTable) next(i int) int {
	if i++; i == len(t.slots) {
		return 0
	}
	return i
}

// find returns k's slot, or the empty slot where it would go (found false).
func (t *keyTable) find(k *sessionKey) (i int, found bool) {
	for i = t.home(k); ; i = t.next(i) {
		s := &t.slots[i]
		if !s.used() {
			return i, false
		}
		if s.key == *k {
			return i, true
		}
	}
}

func (t *keyTable) get(k sessionKey) (gcEntry, bool) {
	if t.n == 0 {
		return gcEntry{}, false
	}
	i, ok := t.find(&k)
	if !ok {
		return gcEntry{}, false
	}
	return t.slots[i].entry(), true
}

func (t *keyTable) set(k sessionKey, e gcEntry) {
	if float64(t.n+1) > keyTableMaxLoad*float64(len(t.slots)) {
		t.grow()
	}
	i, found := t.find(&k)
	if !found {
		t.n++
	}
	t.slots[i] = packSlot(k, e)
}

func (t *keyTable) grow() {
	old := t.slots
	t.slots = make([]keySlot, max(keyTableMinSize, len(old)+len(old)/4))
	for i := range old {
		if s := &old[i]; s.used() {
			j, _ := t.find(&s.key)
			t.slots[j] = *s
		}
	}
}

// delete removes k, shifting later entries of its probe run back so that
// no run has a hole (no tombstones: a table of long-lived sessions sees as
// many deletes as inserts).
func (t *keyTable) delete(k sessionKey) {
	if t.n == 0 {
		return
	}
	i, ok := t.find(&k)
	if !ok {
		return
	}
	t.n--
	for j := t.next(i); ; j = t.next(j) {
		s := &t.slots[j]
		if !s.used() {
			break
		}
		// The entry at j may fill the hole at i unless its home lies
		// cyclically in (i, j].
		if h := t.home(&s.key); i <= j && (i < h && h <= j) || i > j && (i < h || h <= j) {
			continue
		}
		t.slots[i] = *s
		i = j
	}
	t.slots[i] = keySlot{}
}

// each calls f for every entry.
func (t *keyTable) each(f func(k sessionKey, e gcEntry)) {
	for i := range t.slots {
		if s := &t.slots[i]; s.used() {
			f(s.key, s.entry())
		}
	}
}
