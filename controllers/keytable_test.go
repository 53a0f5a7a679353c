package controllers

import (
	"crypto/rand"
	mathrand "math/rand/v2"
	"runtime"
	"testing"

	. "github.com/onsi/gomega"
)

// The table agrees with a Go map through random inserts, updates and
// deletes, in a table small enough that probe runs wrap around its end.
func TestKeyTableAgreesWithAMap(t *testing.T) {
	g := NewWithT(t)
	rng := mathrand.New(mathrand.NewPCG(1, 2))
	keys := make([]sessionKey, 300)
	for i := range keys {
		_, _ = rand.Read(keys[i][:])
	}
	table, want := newKeyTable(0), map[sessionKey]gcEntry{}
	for op := range 200000 {
		k := keys[rng.IntN(len(keys))]
		switch rng.IntN(3) {
		case 0, 1:
			e := gcEntry{
				rv: uint64(op)<<33 | uint64(op), due: int64(op) + 1_800_000_000, created: uint32(op),
				subject: uint32(op*31) & maxSubjectID, client: uint32(op * 7), flags: uint8(op) & (entryRevoked | entryInexact),
			}
			table.set(k, e)
			want[k] = e
		case 2:
			table.delete(k)
			delete(want, k)
		}
		if op%997 == 0 {
			g.Expect(table.len()).To(Equal(len(want)))
			got := map[sessionKey]gcEntry{}
			table.each(func(k sessionKey, e gcEntry) { got[k] = e })
			g.Expect(got).To(Equal(want))
			for _, k := range keys {
				e, ok := table.get(k)
				w, wok := want[k]
				g.Expect(ok).To(Equal(wok))
				g.Expect(e).To(Equal(w))
			}
		}
	}
}

// What an index of a million sessions holds on the heap.
func TestKeyTableHoldsAMillionSessionsInUnder70BytesEach(t *testing.T) {
	if testing.Short() {
		t.Skip("allocates about 60 MiB")
	}
	const n = 1000000
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	table := newKeyTable(0)
	for i := range n {
		var k sessionKey
		_, _ = rand.Read(k[:])
		table.set(k, gcEntry{rv: uint64(i)})
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	perSession := float64(after.HeapAlloc-before.HeapAlloc) / n
	t.Logf("%.0f bytes a session (%d slots for %d)", perSession, len(table.slots), table.len())
	NewWithT(t).Expect(perSession).To(BeNumerically("<", 70), "a Go map of the same entries: about 150")
	runtime.KeepAlive(&table)
}

func TestAKeyTableSizedForItsEntriesDoesNotGrow(t *testing.T) {
	g := NewWithT(t)
	table := newKeyTable(10000)
	size := len(table.slots)
	for i := range 10000 {
		var k sessionKey
		_, _ = rand.Read(k[:])
		table.set(k, gcEntry{rv: uint64(i)})
	}
	g.Expect(table.len()).To(Equal(10000))
	g.Expect(len(table.slots)).To(Equal(size), "no copy of the table was made")
}
