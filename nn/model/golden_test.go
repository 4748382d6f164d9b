package model

import (
	"encoding/binary"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/perkgo/perk/nn"
	"github.com/perkgo/perk/nn/cpu"
	"github.com/perkgo/perk/nn/safetensors"
	"github.com/perkgo/perk/runtime"
)

// goldenInts reads an I64 tensor of the fixture file as int32s.
func goldenInts(t *testing.T, f *safetensors.File, name string) []int32 {
	t.Helper()
	info, err := f.Info(name)
	require.NoError(t, err)
	require.Equal(t, "I64", info.DType, name)
	raw, err := f.Bytes(name)
	require.NoError(t, err)
	out := make([]int32, len(raw)/8)
	for i := range out {
		out[i] = int32(int64(binary.LittleEndian.Uint64(raw[8*i:])))
	}
	return out
}

// TestGoldenPyTorch compares logits, losses and gradients with fixtures
// written by tools/golden (a float64 PyTorch implementation of the Hugging
// Face GPT-2/Qwen2 definitions with PEFT LoRA; testdata/golden/<arch>:
// config.json, model.safetensors, the adapter and expected.safetensors). It
// is skipped when the fixtures are absent.
func TestGoldenPyTorch(t *testing.T) {
	for _, arch := range []string{GPT2, Qwen2} {
		t.Run(arch, func(t *testing.T) {
			dir := filepath.Join("testdata", "golden", arch)
			if _, err := os.Stat(filepath.Join(dir, "expected.safetensors")); err != nil {
				t.Skipf("no fixtures in %s", dir)
			}
			m, err := LoadModel(dir, cpu.New(), runtime.F64)
			require.NoError(t, err)
			ad, err := LoadAdapter(dir, m)
			require.NoError(t, err)
			f, err := safetensors.Open(filepath.Join(dir, "expected.safetensors"))
			require.NoError(t, err)
			defer f.Close()
			get := func(name string) []float64 {
				v, err := f.Float64s(name)
				require.NoError(t, err, name)
				return v
			}

			batch := Batch{IDs: goldenInts(t, f, "input_ids"), CuSeqlens: goldenInts(t, f, "cu_seqlens")}
			require.Equal(t, goldenInts(t, f, "positions"), batch.Positions())
			labels := goldenInts(t, f, "labels")
			require.Equal(t, batch.CausalLabels(), labels)
			w, err := nn.FromF64(get("weights"), batch.Len())
			require.NoError(t, err)
			n := 0
			for _, l := range labels {
				if l != nn.IgnoreIndex {
					n++
				}
			}

			p, err := m.Forward(batch, Options{Adapter: ad})
			require.NoError(t, err)
			defer p.Release()
			logits, err := p.Logits(0, batch.Len())
			require.NoError(t, err)
			want := get("logits")
			got := f64(t, logits)
			worstLogit, worstGrad := 0.0, 0.0
			for i := range want {
				require.InDelta(t, want[i], got[i], 1e-10*(1+math.Abs(want[i])), "logit %d", i)
				worstLogit = max(worstLogit, math.Abs(want[i]-got[i]))
			}
			lossU, err := p.Loss(Targets{Labels: labels, Norm: float64(n)})
			require.NoError(t, err)
			require.InDelta(t, get("loss_unweighted")[0], lossU, 1e-12)
			loss, err := p.Loss(Targets{Labels: labels, Weights: w, Norm: float64(n)})
			require.NoError(t, err)
			require.InDelta(t, get("loss")[0], loss, 1e-12)

			g, err := ad.ZerosLike()
			require.NoError(t, err)
			dw, err := nn.Zeros(runtime.F64, batch.Len())
			require.NoError(t, err)
			require.NoError(t, p.Backward(1, Grads{LoRA: g, DWeights: dw}))
			checked := 0
			for _, prm := range g.Params().Params() {
				want := get("grad." + prm.Name)
				got := f64(t, prm.Value)
				scale := maxAbs(want)
				for i := range want {
					require.InDelta(t, want[i], got[i], 1e-9*scale, "%s[%d]", prm.Name, i)
					worstGrad = max(worstGrad, math.Abs(want[i]-got[i])/scale)
				}
				checked++
			}
			wantDW := get("grad.weights")
			for i := range wantDW {
				require.InDelta(t, wantDW[i], f64(t, dw)[i], 1e-12, "grad.weights[%d]", i)
			}
			n = 0
			for _, name := range f.Names() {
				if strings.HasPrefix(name, "grad.base_model.") {
					n++
				}
			}
			require.Equal(t, n, checked)
			t.Logf("%s: max |Δlogit| %.2g, max LoRA-gradient error %.2g (relative to each tensor's max)", arch, worstLogit, worstGrad)
		})
	}
}
