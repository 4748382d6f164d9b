package kernels_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/perkgo/perk/kernels"
	kt "github.com/perkgo/perk/kernels/kerneltest"
	"github.com/perkgo/perk/nn/cpu"
	"github.com/perkgo/perk/runtime"
)

// embedShape: tokens, table rows, row length, position-table rows (0: none).
type embedShape struct{ n, v, d, p int }

// embedIDs returns n random ids in [0,v) (with the last row used when n > 1)
// and positions that restart at 0 in each of a few packed segments.
func embedIDs(rng *rand.Rand, n, v int) (ids, positions []int32) {
	ids = make([]int32, n)
	for i := range ids {
		ids[i] = int32(rng.IntN(v))
	}
	if n > 1 {
		ids[n/2] = int32(v - 1)
	}
	positions = make([]int32, n)
	for t, p := 0, 0; t < n; t++ {
		if t > 0 && rng.IntN(16) == 0 {
			p = 0
		}
		positions[t] = int32(p)
		p++
	}
	return ids, positions
}

func newEmbedIDs(t *testing.T, dev runtime.Device, ids []int32) *kernels.EmbedIDs {
	x, err := kernels.NewEmbedIDs(dev, ids)
	require.NoError(t, err)
	t.Cleanup(func() { _ = x.Free() })
	return x
}

func embedMaxPos(positions []int32) int {
	m := 0
	for _, p := range positions {
		m = max(m, int(p))
	}
	return m
}

func TestGoldenEmbedForward(t *testing.T) {
	dev := kt.Device(t)
	rng := rand.New(rand.NewPCG(81, 82))
	shapes := []embedShape{{1, 50, 16, 0}, {37, 50, 33, 40}, {300, 1000, 100, 0}, {257, 13, 1, 64}, {129, 77, 65, 200}}
	for _, dt := range []runtime.DType{runtime.F32, runtime.BF16, runtime.F16} {
		for _, s := range shapes {
			t.Run(fmt.Sprintf("%s/n%d_v%d_d%d_p%d", dt, s.n, s.v, s.d, s.p), func(t *testing.T) {
				ids, positions := embedIDs(rng, s.n, s.v)
				table := kt.Rand(rng, dt, s.v*s.d, 1)
				y := kt.Poisoned(t, dev, dt, []int{s.n, s.d})
				want := xentTensor(t, make([]float64, s.n*s.d), s.n, s.d)
				scale := make([]float64, s.n*s.d)
				var posArr kernels.Array
				var posIDs *kernels.EmbedIDs
				var pos []float64
				if s.p > 0 {
					s.p = max(s.p, embedMaxPos(positions)+1)
					pos = kt.Rand(rng, dt, s.p*s.d, 1)
					posArr = kt.Upload(t, dev, dt, []int{s.p, s.d}, pos)
					posIDs = newEmbedIDs(t, dev, positions)
					require.NoError(t, cpu.New().EmbeddingForward(ids, xentTensor(t, table, s.v, s.d), positions, xentTensor(t, pos, s.p, s.d), want))
				} else {
					require.NoError(t, cpu.New().EmbeddingForward(ids, xentTensor(t, table, s.v, s.d), nil, nil, want))
				}
				for tok := range s.n {
					for c := range s.d {
						scale[tok*s.d+c] = math.Abs(table[int(ids[tok])*s.d+c])
						if pos != nil {
							scale[tok*s.d+c] += math.Abs(pos[int(positions[tok])*s.d+c])
						}
					}
				}
				require.NoError(t, kernels.EmbedForward(0, newEmbedIDs(t, dev, ids), kt.Upload(t, dev, dt, []int{s.v, s.d}, table), posIDs, posArr, y))
				kt.CheckScaled(t, "embed_fwd_"+xentSfx(dt), kt.Tolerance(dt), kt.Download(t, y), xentValues(t, want), scale)
			})
		}
	}
}

// embedBackwardCase runs EmbedBackward into tables holding dT0 and dP0 and
// returns the results.
func embedBackwardCase(t *testing.T, dev runtime.Device, dt runtime.DType, s embedShape, ids, positions []int32, dy, dT0, dP0 []float64) (dT, dP []float64) {
	dTable := kt.Upload(t, dev, dt, []int{s.v, s.d}, dT0)
	var dPos kernels.Array
	var posIDs *kernels.EmbedIDs
	if s.p > 0 {
		dPos = kt.Upload(t, dev, dt, []int{s.p, s.d}, dP0)
		posIDs = newEmbedIDs(t, dev, positions)
	}
	dyArr := kt.Upload(t, dev, dt, []int{s.n, s.d}, dy)
	require.NoError(t, kernels.EmbedBackward(0, newEmbedIDs(t, dev, ids), posIDs, dyArr, dTable, dPos))
	dT = kt.Download(t, dTable)
	if s.p > 0 {
		dP = kt.Download(t, dPos)
	}
	return dT, dP
}

func TestGoldenEmbedBackward(t *testing.T) {
	dev := kt.Device(t)
	rng := rand.New(rand.NewPCG(83, 84))
	shapes := []embedShape{{300, 13, 33, 64}, {37, 1000, 16, 40}, {1, 5, 7, 0}, {200, 50, 100, 128}, {64, 3, 1, 0}}
	for _, dt := range []runtime.DType{runtime.F32, runtime.BF16, runtime.F16} {
		for _, s := range shapes {
			t.Run(fmt.Sprintf("%s/n%d_v%d_d%d_p%d", dt, s.n, s.v, s.d, s.p), func(t *testing.T) {
				ids, positions := embedIDs(rng, s.n, s.v)
				if s.p > 0 {
					s.p = max(s.p, embedMaxPos(positions)+1)
				}
				dy := kt.Rand(rng, dt, s.n*s.d, 1)
				dT0 := kt.Rand(rng, dt, s.v*s.d, 1)
				dP0 := kt.Rand(rng, dt, s.p*s.d, 1)
				gotT, gotP := embedBackwardCase(t, dev, dt, s, ids, positions, dy, dT0, dP0)

				wantT := xentTensor(t, dT0, s.v, s.d)
				scaleT := make([]float64, len(dT0))
				for i, v := range dT0 {
					scaleT[i] = math.Abs(v)
				}
				scaleP := make([]float64, len(dP0))
				for i, v := range dP0 {
					scaleP[i] = math.Abs(v)
				}
				for tok := range s.n {
					for c := range s.d {
						scaleT[int(ids[tok])*s.d+c] += math.Abs(dy[tok*s.d+c])
						if s.p > 0 {
							scaleP[int(positions[tok])*s.d+c] += math.Abs(dy[tok*s.d+c])
						}
					}
				}
				if s.p > 0 {
					wantP := xentTensor(t, dP0, s.p, s.d)
					require.NoError(t, cpu.New().EmbeddingBackward(ids, positions, xentTensor(t, dy, s.n, s.d), wantT, wantP))
					kt.CheckScaled(t, "embed_bwd_"+xentSfx(dt), kt.Tolerance(dt), gotP, xentValues(t, wantP), scaleP, "dPos")
				} else {
					require.NoError(t, cpu.New().EmbeddingBackward(ids, nil, xentTensor(t, dy, s.n, s.d), wantT, nil))
				}
				kt.CheckScaled(t, "embed_bwd_"+xentSfx(dt), kt.Tolerance(dt), gotT, xentValues(t, wantT), scaleT, "dTable")
			})
		}
	}
}

func TestEmbedDeterministic(t *testing.T) {
	dev := kt.Device(t)
	rng := rand.New(rand.NewPCG(85, 86))
	for _, dt := range []runtime.DType{runtime.F32, runtime.BF16} {
		s := embedShape{n: 500, v: 7, d: 40, p: 64}
		ids, positions := embedIDs(rng, s.n, s.v)
		s.p = max(s.p, embedMaxPos(positions)+1)
		dy := kt.Rand(rng, dt, s.n*s.d, 1)
		dT0 := kt.Rand(rng, dt, s.v*s.d, 1)
		dP0 := kt.Rand(rng, dt, s.p*s.d, 1)
		t1, p1 := embedBackwardCase(t, dev, dt, s, ids, positions, dy, dT0, dP0)
		t2, p2 := embedBackwardCase(t, dev, dt, s, ids, positions, dy, dT0, dP0)
		for i := range t1 {
			require.Equal(t, math.Float64bits(t1[i]), math.Float64bits(t2[i]), "%s dTable element %d differs between runs", dt, i)
		}
		for i := range p1 {
			require.Equal(t, math.Float64bits(p1[i]), math.Float64bits(p2[i]), "%s dPos element %d differs between runs", dt, i)
		}
	}
}

func TestEmbedBadInput(t *testing.T) {
	dev := kt.Device(t)
	_, err := kernels.NewEmbedIDs(dev, []int32{1, 4, -3})
	require.ErrorContains(t, err, "embed ids: ids[2] = -3 is negative")

	ids := newEmbedIDs(t, dev, []int32{3, 50, 7, 50})
	positions := newEmbedIDs(t, dev, []int32{0, 1, 2, 0})
	short := newEmbedIDs(t, dev, []int32{0, 1})
	table := kt.Alloc(t, dev, runtime.F32, []int{51, 8})
	pos := kt.Alloc(t, dev, runtime.F32, []int{3, 8})
	y := kt.Poisoned(t, dev, runtime.F32, []int{4, 8})
	require.NoError(t, kernels.EmbedForward(0, ids, table, positions, pos, y))

	small := kt.Alloc(t, dev, runtime.F32, []int{50, 8})
	require.ErrorContains(t, kernels.EmbedForward(0, ids, small, nil, kernels.Array{}, y), "embed_fwd: argument ids has ids[1] = 50 outside [0,50)")
	require.ErrorContains(t, kernels.EmbedForward(0, nil, table, nil, kernels.Array{}, y), "embed_fwd: argument ids is nil")
	require.ErrorContains(t, kernels.EmbedForward(0, ids, table, nil, kernels.Array{}, kt.Alloc(t, dev, runtime.F32, []int{4, 9})), "embed_fwd: argument y has shape [4 9], want [4,8]")
	require.ErrorContains(t, kernels.EmbedForward(0, ids, table, nil, kernels.Array{}, kt.Alloc(t, dev, runtime.BF16, []int{4, 8})), "embed_fwd: argument y has dtype BF16")
	require.ErrorContains(t, kernels.EmbedForward(0, ids, kt.Alloc(t, dev, runtime.F64, []int{51, 8}), nil, kernels.Array{}, y), "embed_fwd: argument table has dtype F64")
	require.ErrorContains(t, kernels.EmbedForward(0, ids, table, nil, pos, y), "embed_fwd: argument positions is nil")
	require.ErrorContains(t, kernels.EmbedForward(0, ids, table, short, pos, y), "embed_fwd: argument positions has 2 ids, want 4")
	require.ErrorContains(t, kernels.EmbedForward(0, ids, table, positions, kt.Alloc(t, dev, runtime.F32, []int{2, 8}), y), "embed_fwd: argument positions has positions[2] = 2 outside [0,2)")
	require.ErrorContains(t, kernels.EmbedForward(0, ids, table, positions, kt.Alloc(t, dev, runtime.F32, []int{3, 7}), y), "embed_fwd: argument pos has shape [3 7], want [rows,8]")
	for _, v := range kt.Download(t, y) {
		require.False(t, math.IsNaN(v)) // the first, valid call wrote y
	}

	dy := kt.Alloc(t, dev, runtime.F32, []int{4, 8})
	require.ErrorContains(t, kernels.EmbedBackward(0, ids, nil, dy, small, kernels.Array{}), "embed_bwd: argument ids has ids[1] = 50 outside [0,50)")
	require.ErrorContains(t, kernels.EmbedBackward(0, ids, nil, dy, table, pos), "embed_bwd: argument positions is nil")
	require.ErrorContains(t, kernels.EmbedBackward(0, short, nil, dy, table, kernels.Array{}), "embed_bwd: argument ids has 2 ids, want 4")
	require.ErrorContains(t, kernels.EmbedBackward(0, ids, nil, dy, kt.Alloc(t, dev, runtime.BF16, []int{51, 8}), kernels.Array{}), "embed_bwd: argument dTable has dtype BF16")
	require.ErrorContains(t, kernels.EmbedBackward(0, ids, nil, kt.Alloc(t, dev, runtime.F32, []int{4}), table, kernels.Array{}), "embed_bwd: argument dy has shape [4], want [T,d]")
	require.NoError(t, kernels.EmbedBackward(0, nil, positions, dy, kernels.Array{}, pos))
}
