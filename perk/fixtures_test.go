package perk

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/perkgo/perk/nn/cpu"
	"github.com/perkgo/perk/nn/model"
	"github.com/perkgo/perk/nn/safetensors"
	"github.com/perkgo/perk/runtime"
)

// fixtureDir holds the PyTorch reference's meta-gradient fixtures, one
// directory per case; goldenGPT2 is the base model they use.
const (
	fixtureDir = "testdata/metagrad"
	goldenGPT2 = "../nn/model/testdata/golden/gpt2"
)

// fixtureCase is a case.json.
type fixtureCase struct {
	InnerSteps       int       `json:"inner_steps"`
	UnrollStart      int       `json:"unroll_start"`
	InnerOpt         string    `json:"inner_opt"`
	InnerBetas       []float64 `json:"inner_betas"`
	InnerEps         float64   `json:"inner_eps"`
	InnerWeightDecay float64   `json:"inner_weight_decay"`
	LoRARank         int       `json:"lora_rank"`
	LoRAAlpha        float64   `json:"lora_alpha"`
	RSLoRA           bool      `json:"rslora"`
	LoRATargets      []string  `json:"lora_targets"`
	Weighting        bool      `json:"weighting"`
	WeightingHidden  int       `json:"weighting_hidden"`
	WeightingBeta    float64   `json:"weighting_beta"`
	HVP              string    `json:"hvp"`
}

func openST(t *testing.T, path string) *safetensors.File {
	t.Helper()
	f, err := safetensors.Open(path)
	require.NoError(t, err)
	t.Cleanup(func() { _ = f.Close() })
	return f
}

// TestMetaGradientFixtures compares the fd-mode meta-gradient with the
// PyTorch double-backward reference, case by case, to 1e-7 relative (per
// tensor, ‖got−want‖/‖want‖).
func TestMetaGradientFixtures(t *testing.T) {
	entries, err := os.ReadDir(fixtureDir)
	if os.IsNotExist(err) {
		t.Skipf("no meta-gradient fixtures: %s does not exist", fixtureDir)
	}
	require.NoError(t, err)
	var cases []string
	for _, e := range entries {
		if e.IsDir() {
			cases = append(cases, e.Name())
		}
	}
	require.NotEmpty(t, cases, "%s holds no case directories", fixtureDir)
	m, err := model.LoadModel(goldenGPT2, cpu.New(), runtime.F64)
	require.NoError(t, err)
	worst := 0.0
	for _, name := range cases {
		t.Run(name, func(t *testing.T) {
			start := time.Now()
			dir := filepath.Join(fixtureDir, name)
			raw, err := os.ReadFile(filepath.Join(dir, "case.json"))
			require.NoError(t, err)
			var c fixtureCase
			require.NoError(t, json.Unmarshal(raw, &c))
			require.Len(t, c.InnerBetas, 2)

			lcfg := model.LoRAConfig{R: c.LoRARank, Alpha: c.LoRAAlpha, UseRSLoRA: c.RSLoRA, TargetModules: c.LoRATargets}
			ad, err := model.NewAdapter(m, lcfg, 0)
			require.NoError(t, err)
			init := openST(t, filepath.Join(dir, "init.safetensors"))
			require.NoError(t, SetAdapterTensors(ad, m.Backend(), init))
			lrs, err := ReadLRs(init, ad.Params().Names())
			require.NoError(t, err)
			require.Equal(t, c.InnerSteps, lrs.Steps())
			p := &Params{Init: ad, LRs: lrs}
			if c.Weighting {
				p.Weighting, err = ReadWeighting(init, m.Config().Hidden, c.WeightingBeta)
				require.NoError(t, err)
				require.Equal(t, c.WeightingHidden, p.Weighting.Hidden)
			}
			ex, err := ReadExample(openST(t, filepath.Join(dir, "inputs.safetensors")), name)
			require.NoError(t, err)

			e := &Engine{Model: m, Inner: InnerConfig{Steps: c.InnerSteps, UnrollStart: c.UnrollStart, Optimizer: c.InnerOpt,
				Beta1: c.InnerBetas[0], Beta2: c.InnerBetas[1], Eps: c.InnerEps, WeightDecay: c.InnerWeightDecay, Accum: 1}}
			switch c.HVP {
			case "exact":
				e.SecondOrder = FiniteDifference{}
			case "first-order":
				e.SecondOrder = FirstOrder{}
			default:
				t.Fatalf("case.json: unknown hvp %q", c.HVP)
			}
			g, err := e.MetaGradient(p, ex, 0)
			require.NoError(t, err)
			got, err := g.Tensors(m.Backend(), runtime.F64)
			require.NoError(t, err)

			want := openST(t, filepath.Join(dir, "expected.safetensors"))
			gotNames := make([]string, len(got))
			for i, x := range got {
				gotNames[i] = x.Name
			}
			sort.Strings(gotNames)
			assert.Equal(t, want.Names(), gotNames, "tensor names")
			caseWorst := 0.0
			for _, x := range got {
				if !want.Has(x.Name) {
					continue
				}
				w, err := want.Float64s(x.Name)
				require.NoError(t, err)
				require.Len(t, w, len(x.F64), x.Name)
				rel := relErr(x.F64, w)
				caseWorst = max(caseWorst, rel)
				assert.LessOrEqual(t, rel, 1e-7, "tensor %s", x.Name)
			}
			worst = max(worst, caseWorst)
			t.Logf("%s: worst tensor relative error %.2e (%v)", name, caseWorst, time.Since(start).Round(time.Millisecond))
		})
	}
	if !math.IsNaN(worst) {
		t.Logf("worst relative error over all fixture cases: %.2e", worst)
	}
}
