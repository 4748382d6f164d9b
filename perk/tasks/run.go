package tasks

import (
	"fmt"
	"runtime"

	"github.com/perkgo/perk/perk"
)

// Item is a generated record with its metadata, written as one JSONL line
// by MarshalItem and read back by perk.ReadEvalRecords as a
// perk.EvalRecord.
type Item struct {
	// Record is the record.
	Record perk.Record
	// Meta says how the record was built. A generator sets Meta.Tokens to
	// the context length it counted with its Counter (the sum of the
	// segments' counts, the total it keeps within Options.Tokens), and
	// Meta.Depth to the depth it placed the support at, when it placed it
	// at a chosen depth (Options.Depths); Depth is nil when the placement
	// was random (no depths, or a record with no support).
	Meta perk.RecordMeta
}

// Generator makes records. Item(i) depends only on the generator's
// options and i, and is safe to call from several goroutines at once.
type Generator interface {
	Item(i int) (Item, error)
}

// Run generates items 0..n-1 of g on workers goroutines
// (runtime.GOMAXPROCS(0) when workers ≤ 0) and calls emit with each, in
// index order, from the calling goroutine. At most workers + 2 records are
// being generated or waiting for emit at once. The first error, from g or from emit, stops
// the run and is returned; records already emitted stay emitted. The output
// is the same for every worker count.
func Run(g Generator, n, workers int, emit func(Item) error) error {
	if n < 0 {
		return fmt.Errorf("record count %d: must not be negative", n)
	}
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	type result struct {
		item Item
		err  error
	}
	// pending holds one channel per started record, in index order; its
	// capacity bounds how far generation runs ahead of emit.
	pending := make(chan chan result, workers)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		defer close(pending)
		for i := 0; i < n; i++ {
			ch := make(chan result, 1)
			select {
			case pending <- ch:
			case <-stop:
				return
			}
			go func(i int) {
				it, err := g.Item(i)
				ch <- result{it, err}
			}(i)
		}
	}()
	for ch := range pending {
		res := <-ch
		if res.err != nil {
			return res.err
		}
		if err := emit(res.item); err != nil {
			return err
		}
	}
	return nil
}
