package model

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/perkgo/perk/nn"
	"github.com/perkgo/perk/nn/cpu"
	"github.com/perkgo/perk/runtime"
)

// fullLogits returns the full forward's logits of every position of ids
// (one segment), as rows of float64.
func fullLogits(t *testing.T, m *Model, ad *Adapter, ids []int32) [][]float64 {
	t.Helper()
	lg, err := m.Logits(Batch{IDs: ids}, ad, 0, len(ids))
	require.NoError(t, err)
	v, err := hostFloat64(lg)
	require.NoError(t, err)
	V := m.Config().Vocab
	out := make([][]float64, len(ids))
	for i := range out {
		out[i] = v[i*V : (i+1)*V]
	}
	return out
}

func maxDiff(a, b []float64) float64 {
	d := 0.0
	for i := range a {
		d = max(d, math.Abs(a[i]-b[i]))
	}
	return d
}

func randomIDs(seed uint64, n, vocab int) []int32 {
	rng := newRNG(seed)
	ids := make([]int32, n)
	for i := range ids {
		ids[i] = int32(rng.IntN(vocab))
	}
	return ids
}

// TestDecoderParity checks that prefill + step-by-step decoding gives the
// full forward's logits at every position, in float64 to 1e-10, for both
// architectures, with and without an adapter, for several prefill lengths
// and for a multi-token append, on the host cache and on a backend-resident
// cache.
func TestDecoderParity(t *testing.T) {
	for _, arch := range []struct {
		name string
		cfg  Config
	}{{"gpt2", tinyGPT2(2)}, {"qwen2", tinyQwen2(2, false)}, {"qwen2-tied", tinyQwen2(2, true)}} {
		for _, withAdapter := range []bool{false, true} {
			for _, backend := range []string{"host-cache", "device-cache"} {
				name := fmt.Sprintf("%s/adapter=%v/%s", arch.name, withAdapter, backend)
				t.Run(name, func(t *testing.T) {
					m := randomModel(t, arch.cfg, 3)
					if backend == "device-cache" {
						m.b = &cacheCPU{Backend: cpu.New()}
					}
					var ad *Adapter
					if withAdapter {
						ad = randomAdapter(t, m, 4, 0.1) // dropout must be off when decoding
					}
					const T = 20
					ids := randomIDs(11, T, arch.cfg.Vocab)
					want := fullLogits(t, m, ad, ids)
					dec, err := m.NewDecoder(ad)
					require.NoError(t, err)
					defer dec.Release()
					worst := 0.0
					for _, pre := range []int{1, 7, T} {
						got, err := dec.Prefill(ids[:pre])
						require.NoError(t, err)
						worst = max(worst, maxDiff(got, want[pre-1]))
						for i := pre; i < T; i++ {
							got, err := dec.Step(ids[i])
							require.NoError(t, err)
							worst = max(worst, maxDiff(got, want[i]))
						}
						assert.Equal(t, T, dec.Len())
					}
					// Prefill 5, append 6 at once, then step.
					_, err = dec.Prefill(ids[:5])
					require.NoError(t, err)
					got, err := dec.Append(ids[5:11])
					require.NoError(t, err)
					worst = max(worst, maxDiff(got, want[10]))
					got, err = dec.Step(ids[11])
					require.NoError(t, err)
					worst = max(worst, maxDiff(got, want[11]))
					t.Logf("max logit difference %.3g", worst)
					assert.LessOrEqual(t, worst, 1e-10, "max |decode − forward| logit difference")
					st := dec.Stats()
					assert.Positive(t, dec.CacheBytes())
					assert.GreaterOrEqual(t, st.PeakBytes, dec.CacheBytes())
				})
			}
		}
	}
}

// TestDecoderF32 checks the float32 path against the float32 forward.
func TestDecoderF32(t *testing.T) {
	for _, cfg := range []Config{tinyGPT2(2), tinyQwen2(2, false)} {
		m, err := NewRandom(cfg, cpu.New(), runtime.F32, RandomOptions{Seed: 3, Std: 0.3})
		require.NoError(t, err)
		ids := randomIDs(5, 12, cfg.Vocab)
		want := fullLogits(t, m, nil, ids)
		dec, err := m.NewDecoder(nil)
		require.NoError(t, err)
		got, err := dec.Prefill(ids[:4])
		require.NoError(t, err)
		assert.InDelta(t, 0, maxDiff(got, want[3]), 1e-5)
		for i := 4; i < len(ids); i++ {
			got, err = dec.Step(ids[i])
			require.NoError(t, err)
			assert.InDelta(t, 0, maxDiff(got, want[i]), 1e-5, "%s position %d", cfg.ModelType, i)
		}
		assert.Equal(t, int64(2*cfg.Layers*len(ids)*cfg.KVHeads*cfg.HeadDim()*4), dec.CacheBytes())
	}
}

func TestDecoderErrors(t *testing.T) {
	cfg := tinyGPT2(1)
	m := randomModel(t, cfg, 1)
	dec, err := m.NewDecoder(nil)
	require.NoError(t, err)
	_, err = dec.Prefill(nil)
	assert.ErrorContains(t, err, "no tokens")
	_, err = dec.Prefill([]int32{1, int32(cfg.Vocab)})
	assert.ErrorContains(t, err, "outside the vocabulary")
	_, err = dec.Prefill(make([]int32, cfg.MaxPositions+1))
	assert.ErrorContains(t, err, "positions")
	_, err = dec.Prefill(make([]int32, cfg.MaxPositions))
	require.NoError(t, err)
	_, err = dec.Step(0)
	assert.ErrorContains(t, err, "positions")
	dec.Release()
	_, err = dec.Step(0)
	assert.ErrorContains(t, err, "after Release")

	// An adapter of another architecture is refused.
	q := randomModel(t, tinyQwen2(1, false), 2)
	_, err = m.NewDecoder(randomAdapter(t, q, 1, 0))
	assert.ErrorContains(t, err, "adapter")
}

// cacheCPU is the CPU backend with the CacheBackend extension, to test the
// decoder's backend-resident cache path.
type cacheCPU struct{ *cpu.Backend }

func (c *cacheCPU) WriteRows(dst *nn.Tensor, row int, src *nn.Tensor) error {
	d, err := dst.F64()
	if err != nil {
		return err
	}
	s, err := src.F64()
	if err != nil {
		return err
	}
	C := dst.Dim(1)
	if src.Dim(1) != C || row < 0 || row+src.Dim(0) > dst.Dim(0) {
		return fmt.Errorf("write rows: %v at row %d into %v", src, row, dst)
	}
	copy(d[row*C:], s)
	return nil
}

func (c *cacheCPU) AttentionDecode(q, k, v *nn.Tensor, past int, scale float64, o *nn.Tensor) error {
	qv, err := q.F64()
	if err != nil {
		return err
	}
	kv, err := k.F64()
	if err != nil {
		return err
	}
	vv, err := v.F64()
	if err != nil {
		return err
	}
	ov, err := o.F64()
	if err != nil {
		return err
	}
	n, Hq, D, Hkv := q.Dim(0), q.Dim(1), q.Dim(2), k.Dim(1)
	if scale == 0 {
		scale = 1 / math.Sqrt(float64(D))
	}
	clear(ov)
	attendHost(qv, kv, vv, ov, n, past, Hq, Hkv, D, scale)
	return nil
}

// TestDecoderGolden runs the parity check on the PyTorch-checked fixture
// models with their PEFT adapters (skipped when the fixtures are absent).
func TestDecoderGolden(t *testing.T) {
	for _, arch := range []string{GPT2, Qwen2} {
		t.Run(arch, func(t *testing.T) {
			dir := filepath.Join("testdata", "golden", arch)
			if _, err := os.Stat(filepath.Join(dir, AdapterConfigFile)); err != nil {
				t.Skipf("no fixtures in %s", dir)
			}
			m, err := LoadModel(dir, cpu.New(), runtime.F64)
			require.NoError(t, err)
			ad, err := LoadAdapter(dir, m)
			require.NoError(t, err)
			ids := randomIDs(21, 24, m.Config().Vocab)
			want := fullLogits(t, m, ad, ids)
			dec, err := m.NewDecoder(ad)
			require.NoError(t, err)
			defer dec.Release()
			got, err := dec.Prefill(ids[:3])
			require.NoError(t, err)
			worst := maxDiff(got, want[2])
			for i := 3; i < len(ids); i++ {
				got, err = dec.Step(ids[i])
				require.NoError(t, err)
				worst = max(worst, maxDiff(got, want[i]))
			}
			assert.LessOrEqual(t, worst, 1e-10)
		})
	}
}
