package perk

import (
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/perkgo/perk/nn/cpu"
	"github.com/perkgo/perk/nn/model"
	"github.com/perkgo/perk/runtime"
)

func byteModelConfig() model.Config {
	c := tinyConfig()
	c.Vocab, c.MaxPositions = 257, 64
	return c
}

func trainSetup(t *testing.T, m *model.Model, trainBase bool) (*Engine, *Params, *Dataset) {
	t.Helper()
	p, err := NewParams(m, ParamsConfig{
		LoRA:  model.LoRAConfig{R: 2, Alpha: 4, Dropout: 0.1, TargetModules: model.DefaultTargets(model.GPT2), UseRSLoRA: true},
		Steps: 2, LR: 0.01, Weighting: true, WeightingHidden: 8, Seed: 3,
	})
	require.NoError(t, err)
	c := DefaultInnerConfig()
	c.Steps, c.UnrollStart = 2, 1
	e := &Engine{Model: m, Inner: c, TrainBase: trainBase}
	ds := &Dataset{Records: tinyRecords(3), ShuffleDocs: true,
		Encoder: &Encoder{Tok: byteTokenizer(t), EOS: 256, Vocab: 257, MaxPositions: 64}}
	return e, p, ds
}

func outerConfig() OuterConfig {
	o := DefaultOuterConfig(6)
	o.LR, o.Accum, o.WarmupFrac = 1e-2, 2, 0.2
	return o
}

func trainSteps(t *testing.T, tr *Trainer, ds *Dataset, n int) []StepReport {
	t.Helper()
	var out []StepReport
	for i := 0; i < n; i++ {
		exs, err := tr.NextExamples(ds, tr.Outer.Accum)
		require.NoError(t, err)
		rep, err := tr.TrainStep(exs)
		require.NoError(t, err)
		out = append(out, rep)
	}
	return out
}

// paramBits collects every trained value of a trainer, exactly.
func paramBits(t *testing.T, tr *Trainer) []float64 {
	t.Helper()
	var out []float64
	for _, a := range []*model.Adapter{tr.Params.Init, tr.mInit, tr.vInit} {
		for _, x := range a.Params().Tensors() {
			out = append(out, hostValues(t, x)...)
		}
	}
	for _, l := range []*LearnedLRs{tr.Params.LRs, tr.mLR, tr.vLR} {
		for _, v := range l.Values {
			out = append(out, v...)
		}
	}
	for _, w := range []*Weighting{tr.Params.Weighting, tr.mW, tr.vW} {
		for _, ts := range w.Tensors() {
			out = append(out, ts.Data...)
		}
	}
	if tr.Engine.TrainBase {
		for _, s := range []*model.ParamSet{tr.Engine.Model.Params(), tr.mBase, tr.vBase} {
			for _, x := range s.Tensors() {
				out = append(out, hostValues(t, x)...)
			}
		}
	}
	return out
}

// TestResumeBitForBit trains 4 steps straight and 2+2 steps with a
// checkpoint in between: parameters, optimiser state and step reports must
// agree bit for bit.
func TestResumeBitForBit(t *testing.T) {
	for _, c := range []struct {
		name      string
		dt        runtime.DType
		trainBase bool
	}{{"f64", runtime.F64, false}, {"f32-train-base", runtime.F32, true}} {
		t.Run(c.name, func(t *testing.T) {
			newModel := func() *model.Model {
				m, err := model.NewRandom(byteModelConfig(), cpu.New(), c.dt, model.RandomOptions{Seed: 9, Std: 0.2})
				require.NoError(t, err)
				return m
			}
			e, p, ds := trainSetup(t, newModel(), c.trainBase)
			tr, err := NewTrainer(e, p, outerConfig(), 42)
			require.NoError(t, err)
			first := trainSteps(t, tr, ds, 2)
			dir := filepath.Join(t.TempDir(), "ckpt")
			require.NoError(t, tr.SaveCheckpoint(dir))
			straight := trainSteps(t, tr, ds, 2)
			want := paramBits(t, tr)

			// Resume from the checkpoint in a fresh engine.
			m2 := newModel()
			if c.trainBase {
				tb, err := CheckpointTrainsBase(dir)
				require.NoError(t, err)
				require.True(t, tb)
				m2, err = model.LoadModel(filepath.Join(dir, BaseDir), cpu.New(), c.dt)
				require.NoError(t, err)
			}
			e2, _, _ := trainSetup(t, m2, c.trainBase)
			tr2, err := LoadCheckpoint(dir, e2, outerConfig())
			require.NoError(t, err)
			assert.Equal(t, 2, tr2.Step)
			assert.Equal(t, 4, tr2.Seen)
			resumed := trainSteps(t, tr2, ds, 2)
			assert.Equal(t, straight, resumed)
			got := paramBits(t, tr2)
			require.Equal(t, len(want), len(got))
			for i := range want {
				if math.Float64bits(want[i]) != math.Float64bits(got[i]) {
					t.Fatalf("value %d differs after resume: %v vs %v", i, got[i], want[i])
				}
			}
			t.Logf("steps: %+v then %+v", first, straight)
			// The run must move the parameters and report finite losses.
			for _, r := range append(first, straight...) {
				assert.False(t, math.IsNaN(r.OuterLoss) || math.IsNaN(r.GradNorm))
			}
		})
	}
}

// TestCheckpointFiles checks the checkpoint layout: a PEFT adapter that
// model.LoadAdapter reads, a state file with the learned learning rates and
// the weighting network under their names, and no temporary leftovers;
// SaveParams/LoadParams round-trip the meta-parameters.
func TestCheckpointFiles(t *testing.T) {
	m, err := model.NewRandom(byteModelConfig(), cpu.New(), runtime.F64, model.RandomOptions{Seed: 9, Std: 0.2})
	require.NoError(t, err)
	e, p, ds := trainSetup(t, m, false)
	tr, err := NewTrainer(e, p, outerConfig(), 1)
	require.NoError(t, err)
	trainSteps(t, tr, ds, 1)
	root := t.TempDir()
	dir := filepath.Join(root, "checkpoint-1")
	require.NoError(t, tr.SaveCheckpoint(dir))
	require.NoError(t, tr.SaveCheckpoint(dir)) // replacing works
	entries, err := os.ReadDir(root)
	require.NoError(t, err)
	require.Len(t, entries, 1, "temporary directories left behind")
	for _, f := range []string{model.AdapterConfigFile, model.AdapterWeightsFile, StateFile} {
		assert.FileExists(t, filepath.Join(dir, f))
	}
	f := openST(t, filepath.Join(dir, StateFile))
	for _, n := range p.Init.Params().Names() {
		assert.True(t, f.Has(LRPrefix+n), n)
		info, err := f.Info(LRPrefix + n)
		require.NoError(t, err)
		assert.Equal(t, []int{2}, info.Shape)
		assert.True(t, f.Has("optim.m."+n))
	}
	for _, ts := range p.Weighting.Tensors() {
		info, err := f.Info(ts.Name)
		require.NoError(t, err)
		assert.Equal(t, ts.Shape, info.Shape)
	}
	assert.Equal(t, "1", f.Metadata()["step"])

	out := filepath.Join(root, "final")
	require.NoError(t, SaveParams(out, p, m.Backend()))
	q, err := LoadParams(m, out, filepath.Join(out, StateFile))
	require.NoError(t, err)
	assert.Equal(t, p.LRs, q.LRs)
	assert.Equal(t, p.Weighting, q.Weighting)
	pc, qc := p.Init.Config(), q.Init.Config()
	assert.ElementsMatch(t, pc.TargetModules, qc.TargetModules)
	pc.TargetModules, qc.TargetModules = nil, nil
	assert.Equal(t, pc, qc)
	for i, x := range p.Init.Params().Tensors() {
		assert.Equal(t, hostValues(t, x), hostValues(t, q.Init.Params().Tensors()[i]))
	}
}

// TestTrainingReducesLoss runs a few outer steps on one repeated example
// and checks that the outer loss goes down.
func TestTrainingReducesLoss(t *testing.T) {
	m, err := model.NewRandom(byteModelConfig(), cpu.New(), runtime.F64, model.RandomOptions{Seed: 9, Std: 0.2})
	require.NoError(t, err)
	e, p, ds := trainSetup(t, m, false)
	ds.Records = ds.Records[:1]
	o := outerConfig()
	o.Accum, o.Steps, o.WarmupFrac, o.LR = 1, 8, 0, 3e-2
	tr, err := NewTrainer(e, p, o, 1)
	require.NoError(t, err)
	reps := trainSteps(t, tr, ds, 8)
	t.Logf("outer loss %.4f → %.4f", reps[0].OuterLoss, reps[len(reps)-1].OuterLoss)
	assert.Less(t, reps[len(reps)-1].OuterLoss, reps[0].OuterLoss)
}

func TestOuterSchedule(t *testing.T) {
	o := DefaultOuterConfig(100)
	assert.Equal(t, 3, o.WarmupSteps())
	assert.Equal(t, 0.0, o.Schedule(0))
	assert.InDelta(t, 2.0/3, o.Schedule(2), 1e-15)
	assert.Equal(t, 1.0, o.Schedule(3))
	assert.InDelta(t, 0.5, o.Schedule(3+97/2), 0.02)
	assert.InDelta(t, 0, o.Schedule(100), 1e-15)
}

func TestResumeChecksInnerConfig(t *testing.T) {
	m, err := model.NewRandom(byteModelConfig(), cpu.New(), runtime.F64, model.RandomOptions{Seed: 9, Std: 0.2})
	require.NoError(t, err)
	e, p, _ := trainSetup(t, m, false)
	tr, err := NewTrainer(e, p, outerConfig(), 1)
	require.NoError(t, err)
	dir := filepath.Join(t.TempDir(), "ckpt")
	require.NoError(t, tr.SaveCheckpoint(dir))
	e2, _, _ := trainSetup(t, m, false)
	e2.Inner.Optimizer = OptSGD
	_, err = LoadCheckpoint(dir, e2, outerConfig())
	require.ErrorContains(t, err, "was trained with the inner loop")
	e3, _, _ := trainSetup(t, m, false)
	e3.Inner.Steps = 3
	_, err = LoadCheckpoint(dir, e3, outerConfig())
	require.ErrorContains(t, err, "learning rates for 2 inner steps, the run asks for 3")
	e4, _, _ := trainSetup(t, m, false)
	e4.TrainBase = true
	_, err = LoadCheckpoint(dir, e4, outerConfig())
	require.ErrorContains(t, err, "train_base")
}
