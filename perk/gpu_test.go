package perk

import (
	"io"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/perkgo/perk/nn/gpu"
	"github.com/perkgo/perk/nn/model"
	"github.com/perkgo/perk/runtime"
)

// TestMetaGradientOnEmu runs the whole meta-gradient — inner AdamW steps,
// their VJPs, the finite-difference HVPs and the weighting network — on the
// GPU backend over the emulated device and compares it with the CPU
// backend in float32 on the same model, data and meta-parameters.
func TestMetaGradientOnEmu(t *testing.T) {
	mc := tinyModel(t, runtime.F32)
	ex := tinyExample(newRNG(3), mc.Config().Vocab, []int{7, 9, 6}, []int{2, 3, 1}, 10, 6)
	for _, opt := range []string{OptAdamW, OptSGD} {
		t.Run(opt, func(t *testing.T) {
			pc := tinyParams(t, mc, 2, opt, true, 11)
			gc, err := tinyEngine(mc, opt, 2, 0).MetaGradient(pc, ex, 1)
			require.NoError(t, err)

			dir := t.TempDir()
			require.NoError(t, model.SaveModel(filepath.Join(dir, "model"), mc, model.SaveOptions{DType: runtime.F32}))
			require.NoError(t, SaveParams(filepath.Join(dir, "params"), pc, mc.Backend()))
			be, err := gpu.Open("emu")
			require.NoError(t, err)
			if c, ok := be.(io.Closer); ok {
				t.Cleanup(func() { _ = c.Close() })
			}
			mg, err := model.LoadModel(filepath.Join(dir, "model"), be, runtime.F32)
			require.NoError(t, err)
			pg, err := LoadParams(mg, filepath.Join(dir, "params"), filepath.Join(dir, "params", StateFile))
			require.NoError(t, err)
			gg, err := tinyEngine(mg, opt, 2, 0).MetaGradient(pg, ex, 1)
			require.NoError(t, err)

			want, err := gc.Tensors(mc.Backend(), runtime.F64)
			require.NoError(t, err)
			got, err := gg.Tensors(mg.Backend(), runtime.F64)
			require.NoError(t, err)
			require.Len(t, got, len(want))
			worst := 0.0
			for i := range want {
				require.Equal(t, want[i].Name, got[i].Name)
				// Both sides are float32 with different summation orders and
				// the f32 finite-difference HVP amplifies rounding by 1/h, so
				// the groups are compared in norm, at the f32 level the CPU
				// backend itself reaches against float64 (about 1e-3, see
				// TestFloat32MetaGradient).
				e := relErr(got[i].F64, want[i].F64)
				require.LessOrEqual(t, e, 2e-3, "%s: relative error %.2e", want[i].Name, e)
				worst = max(worst, e)
			}
			t.Logf("%s: worst per-tensor relative error, emu vs cpu (f32): %.2e", opt, worst)
		})
	}
}

// TestTrainStepReleasesOnEmu: a training step frees every meta-gradient it
// computed, so on the GPU backend the memory in use after a step does not
// grow from step to step (it once grew by the LoRA gradient's size, per
// example, every step).
func TestTrainStepReleasesOnEmu(t *testing.T) {
	mc := tinyModel(t, runtime.F32)
	ex := tinyExample(newRNG(3), mc.Config().Vocab, []int{7, 9, 6}, []int{2, 3, 1}, 10, 6)
	pc := tinyParams(t, mc, 2, OptAdamW, true, 11)
	dir := t.TempDir()
	require.NoError(t, model.SaveModel(filepath.Join(dir, "model"), mc, model.SaveOptions{DType: runtime.F32}))
	require.NoError(t, SaveParams(filepath.Join(dir, "params"), pc, mc.Backend()))
	be, err := gpu.Open("emu")
	require.NoError(t, err)
	t.Cleanup(func() { _ = be.(io.Closer).Close() })
	mg, err := model.LoadModel(filepath.Join(dir, "model"), be, runtime.F32)
	require.NoError(t, err)
	pg, err := LoadParams(mg, filepath.Join(dir, "params"), filepath.Join(dir, "params", StateFile))
	require.NoError(t, err)
	tr, err := NewTrainer(tinyEngine(mg, OptAdamW, 2, 0), pg, OuterConfig{LR: 1e-3, Beta1: 0.9, Beta2: 0.95, Eps: 1e-8, Steps: 10, Accum: 2}, 1)
	require.NoError(t, err)
	pool := be.(interface{ Stats() runtime.Stats })
	var inUse []int64
	for i := 0; i < 3; i++ {
		_, err := tr.TrainStep([]*Example{ex, ex})
		require.NoError(t, err)
		inUse = append(inUse, pool.Stats().InUse)
	}
	require.Equal(t, []int64{inUse[0], inUse[0], inUse[0]}, inUse, "bytes in use after each step")
}
