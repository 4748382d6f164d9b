package gpu

import (
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	kt "github.com/perkgo/perk/kernels/kerneltest"
	"github.com/perkgo/perk/nn"
	"github.com/perkgo/perk/runtime"
)

// TestUploadCaches checks that repeated integer inputs reuse their device
// copies, that the caches stay bounded, and that with caching off nothing
// is kept (and nothing leaks).
func TestUploadCaches(t *testing.T) {
	for _, size := range []int{0, 2} {
		b, err := New(kt.Device(t), WithCacheSize(size))
		require.NoError(t, err)
		table, err := b.Alloc(runtime.F32, 10, 4)
		require.NoError(t, err)
		y, err := b.Alloc(runtime.F32, 3, 4)
		require.NoError(t, err)
		inUse := b.Stats().InUse
		for round := range 2 {
			for _, ids := range [][]int32{{1, 2, 3}, {3, 2, 1}, {1, 2, 3}, {0, 0, 9}} {
				require.NoError(t, b.EmbeddingForward(ids, table, nil, nil, y))
				y3 := reshape(t, y, 3, 1, 4)
				require.NoError(t, b.RoPEForward(y3, ids, 1e4, y3))
			}
			require.LessOrEqual(t, len(b.c.ids.items), size, "round %d", round)
			require.LessOrEqual(t, len(b.c.ints.items), size)
		}
		if size > 0 {
			require.Len(t, b.c.ids.items, size)
			require.Equal(t, int32Key([]int32{0, 0, 9}), b.c.ids.items[0].key, "most recent first")
		} else {
			require.Equal(t, inUse, b.Stats().InUse, "caching off keeps nothing")
		}
		require.NoError(t, b.FreeCaches())
		require.Equal(t, inUse, b.Stats().InUse)
		require.NoError(t, b.Close())
	}
}

func reshape(t *testing.T, x *nn.Tensor, shape ...int) *nn.Tensor {
	t.Helper()
	v, err := x.Reshape(shape...)
	require.NoError(t, err)
	return v
}

// TestConcurrentOps runs ops from several goroutines on one backend: they
// are serialised and give the sequential results.
func TestConcurrentOps(t *testing.T) {
	b := testBackend(t)
	e := newEnv(t, runtime.F32, 31)
	var wg sync.WaitGroup
	const workers = 4
	results := make([]float64, workers)
	x := e.rand(1, 40, 30)
	want, err := b.Sum(x.g)
	require.NoError(t, err)
	for w := range workers {
		wg.Go(func() {
			y, err := b.Alloc(runtime.F32, 40, 30)
			if err != nil {
				panic(err)
			}
			defer func() { _ = b.Release(y) }()
			for range 5 {
				if err := b.Copy(y, x.g); err != nil {
					panic(err)
				}
				if err := b.Scale(2, y); err != nil {
					panic(err)
				}
			}
			s, err := b.Sum(y)
			if err != nil {
				panic(err)
			}
			results[w] = s
		})
	}
	wg.Wait()
	for _, r := range results {
		require.Equal(t, 2*want, r)
	}
}
