package perk

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"

	"github.com/perkgo/perk/nn"
	"github.com/perkgo/perk/nn/model"
	"github.com/perkgo/perk/nn/safetensors"
	"github.com/perkgo/perk/runtime"
)

// File and directory names of a checkpoint directory. Besides StateFile it
// holds the PEFT adapter (model.AdapterConfigFile, model.AdapterWeightsFile)
// with the LoRA initialisation and, when the base model is trained, BaseDir
// with the base weights as a Hugging Face checkpoint.
const (
	// StateFile holds the learned learning rates, the weighting network
	// and, in a training checkpoint, the outer optimiser's state.
	StateFile = "perk_state.safetensors"
	// BaseDir is the sub-directory with the trained base model.
	BaseDir = "base"
)

// Names and metadata keys of StateFile.
const (
	optimMPrefix = "optim.m."
	optimVPrefix = "optim.v."
	basePrefix   = "base."

	metaFormat    = "format"
	formatState   = "perk-state"
	metaBeta      = "weighting_beta"
	metaSteps     = "inner_steps"
	metaStep      = "step"
	metaSeen      = "seen"
	metaSeed      = "seed"
	metaRNG       = "rng"
	metaTrainBase = "train_base"
	metaInner     = "inner_config"
	metaOuter     = "outer_config"
)

// innerKey is the part of the inner configuration a resumed run must share
// (accumulation changes only rounding).
func innerKey(c InnerConfig) string {
	c.Accum = 0
	b, _ := json.Marshal(c)
	return string(b)
}

// stateEntries lists the learned learning rates and the weighting network.
func (p *Params) stateEntries() []safetensors.Tensor {
	out := sliceEntries(p.LRs.Tensors(), runtime.F64)
	if p.Weighting != nil {
		out = append(out, sliceEntries(p.Weighting.Tensors(), runtime.F64)...)
	}
	return out
}

func (p *Params) stateMeta() map[string]string {
	meta := map[string]string{metaFormat: formatState, metaSteps: strconv.Itoa(p.LRs.Steps())}
	if p.Weighting != nil {
		meta[metaBeta] = formatFloat(p.Weighting.Beta)
	}
	return meta
}

// storageType is the dtype a backend tensor is stored as in a checkpoint:
// its own precision, so a resumed run sees the same bits.
func storageType(dt runtime.DType) runtime.DType {
	if dt == runtime.F64 {
		return runtime.F64
	}
	return runtime.F32
}

// SaveParams writes meta-parameters to dir (created if needed, replaced
// atomically): the PEFT adapter of the LoRA initialisation and StateFile
// with the learning rates and the weighting network.
func SaveParams(dir string, p *Params, b nn.Backend) error {
	return writeDirAtomic(dir, func(tmp string) error {
		if err := model.SaveAdapter(tmp, p.Init, storageType(p.Init.Params().Tensors()[0].DType())); err != nil {
			return err
		}
		return safetensors.Write(filepath.Join(tmp, StateFile), p.stateEntries(), p.stateMeta())
	})
}

// writeDirAtomic fills a temporary directory next to dir with fill and
// renames it into place, so dir is either the old or the complete new
// directory.
func writeDirAtomic(dir string, fill func(tmp string) error) error {
	dir = filepath.Clean(dir)
	parent := filepath.Dir(dir)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return fmt.Errorf("checkpoint %s: %w", dir, err)
	}
	tmp, err := os.MkdirTemp(parent, "."+filepath.Base(dir)+".tmp-*")
	if err != nil {
		return fmt.Errorf("checkpoint %s: %w", dir, err)
	}
	if err := fill(tmp); err != nil {
		_ = os.RemoveAll(tmp)
		return fmt.Errorf("checkpoint %s: %w", dir, err)
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		_ = os.RemoveAll(tmp)
		return fmt.Errorf("checkpoint %s: %w", dir, err)
	}
	var old string
	if _, err := os.Stat(dir); err == nil {
		old = tmp + ".old"
		if err := os.Rename(dir, old); err != nil {
			_ = os.RemoveAll(tmp)
			return fmt.Errorf("checkpoint %s: %w", dir, err)
		}
	}
	if err := os.Rename(tmp, dir); err != nil {
		if old != "" {
			_ = os.Rename(old, dir)
		}
		_ = os.RemoveAll(tmp)
		return fmt.Errorf("checkpoint %s: %w", dir, err)
	}
	if old != "" {
		_ = os.RemoveAll(old)
	}
	return nil
}

// SaveCheckpoint writes the trainer's whole state to dir (replaced
// atomically): the adapter, StateFile with the learning rates, the
// weighting network, the outer optimiser's moments ("optim.m.<name>",
// "optim.v.<name>"), and in its metadata the step, the data position, the
// seed and the RNG state; with TrainBase also BaseDir.
func (t *Trainer) SaveCheckpoint(dir string) error {
	e, p := t.Engine, t.Params
	b := e.Model.Backend()
	dt := storageType(e.Model.DType())
	return writeDirAtomic(dir, func(tmp string) error {
		if err := model.SaveAdapter(tmp, p.Init, dt); err != nil {
			return err
		}
		entries := p.stateEntries()
		for _, pair := range []struct {
			prefix string
			a      *model.Adapter
		}{{optimMPrefix, t.mInit}, {optimVPrefix, t.vInit}} {
			es, err := adapterEntries(pair.a, b, dt)
			if err != nil {
				return err
			}
			for i := range es {
				es[i].Name = pair.prefix + es[i].Name
			}
			entries = append(entries, es...)
		}
		host := func(prefix string, ns []NamedSlice) {
			for _, e := range sliceEntries(ns, runtime.F64) {
				e.Name = prefix + e.Name
				entries = append(entries, e)
			}
		}
		host(optimMPrefix, t.mLR.Tensors())
		host(optimVPrefix, t.vLR.Tensors())
		if p.Weighting != nil {
			host(optimMPrefix, t.mW.Tensors())
			host(optimVPrefix, t.vW.Tensors())
		}
		meta := p.stateMeta()
		if t.mBase != nil {
			if err := model.SaveModel(filepath.Join(tmp, BaseDir), e.Model, model.SaveOptions{DType: dt}); err != nil {
				return err
			}
			for _, pair := range []struct {
				prefix string
				s      *model.ParamSet
			}{{optimMPrefix, t.mBase}, {optimVPrefix, t.vBase}} {
				for _, prm := range pair.s.Params() {
					es, err := hostEntry(b, pair.prefix+basePrefix+prm.Name, prm.Value, dt)
					if err != nil {
						return err
					}
					entries = append(entries, es)
				}
			}
			meta[metaTrainBase] = "true"
		}
		rng, err := t.pcg.MarshalBinary()
		if err != nil {
			return err
		}
		meta[metaInner] = innerKey(e.Inner)
		if ob, err := json.Marshal(t.Outer); err == nil {
			meta[metaOuter] = string(ob)
		}
		meta[metaStep] = strconv.Itoa(t.Step)
		meta[metaSeen] = strconv.Itoa(t.Seen)
		meta[metaSeed] = strconv.FormatUint(t.Seed, 10)
		meta[metaRNG] = hex.EncodeToString(rng)
		return safetensors.Write(filepath.Join(tmp, StateFile), entries, meta)
	})
}

// readState opens StateFile and checks its format.
func readState(path string) (*safetensors.File, map[string]string, error) {
	f, err := safetensors.Open(path)
	if err != nil {
		return nil, nil, err
	}
	meta := f.Metadata()
	if meta[metaFormat] != formatState {
		f.Close()
		return nil, nil, fmt.Errorf("%s: not a PERK state file (metadata format %q, want %q)", path, meta[metaFormat], formatState)
	}
	return f, meta, nil
}

// LoadState reads the learned learning rates and the weighting network of
// StateFile at path for adapter ad (its tensor names) and a model of hidden
// size d. The weighting network's β comes from the file's metadata
// (DefaultWeightingBeta when absent); the result has no weighting network
// when the file holds none.
func LoadState(path string, ad *model.Adapter, d int) (*LearnedLRs, *Weighting, error) {
	f, meta, err := readState(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	lrs, err := ReadLRs(f, ad.Params().Names())
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	if !HasWeighting(f) {
		return lrs, nil, nil
	}
	beta := DefaultWeightingBeta
	if s, ok := meta[metaBeta]; ok {
		if beta, err = strconv.ParseFloat(s, 64); err != nil {
			return nil, nil, fmt.Errorf("%s: metadata %s: %w", path, metaBeta, err)
		}
	}
	w, err := ReadWeighting(f, d, beta)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	return lrs, w, nil
}

// LoadParams reads meta-parameters for model m: the PEFT adapter in
// adapterDir (rank, alpha, rsLoRA, dropout and targets come from its
// adapter_config.json) and the learning rates and weighting network of
// statePath.
func LoadParams(m *model.Model, adapterDir, statePath string) (*Params, error) {
	ad, err := model.LoadAdapter(adapterDir, m)
	if err != nil {
		return nil, err
	}
	lrs, w, err := LoadState(statePath, ad, m.Config().Hidden)
	if err != nil {
		return nil, err
	}
	return &Params{Init: ad, LRs: lrs, Weighting: w}, nil
}

// CheckpointTrainsBase reports whether the checkpoint in dir was written
// by a run that trains the base model (its base weights are in BaseDir).
func CheckpointTrainsBase(dir string) (bool, error) {
	f, meta, err := readState(filepath.Join(dir, StateFile))
	if err != nil {
		return false, err
	}
	f.Close()
	return meta[metaTrainBase] == "true", nil
}

// LoadCheckpoint restores a trainer from a checkpoint directory written by
// SaveCheckpoint. e.Model must already hold the checkpoint's base weights
// (load them from BaseDir when the run trains the base model), and
// e.TrainBase must match the checkpoint. The number of inner steps comes
// from the checkpoint's learning rates: e.Inner.Steps is set when 0 and
// must agree otherwise.
func LoadCheckpoint(dir string, e *Engine, cfg OuterConfig) (*Trainer, error) {
	statePath := filepath.Join(dir, StateFile)
	p, err := LoadParams(e.Model, dir, statePath)
	if err != nil {
		return nil, err
	}
	switch T := p.LRs.Steps(); e.Inner.Steps {
	case 0:
		e.Inner.Steps = T
	case T:
	default:
		return nil, fmt.Errorf("checkpoint %s has learning rates for %d inner steps, the run asks for %d", dir, T, e.Inner.Steps)
	}
	f, meta, err := readState(statePath)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if (meta[metaTrainBase] == "true") != e.TrainBase {
		return nil, fmt.Errorf("checkpoint %s: train_base is %q, the run's is %v", dir, meta[metaTrainBase], e.TrainBase)
	}
	if want, ok := meta[metaInner]; ok && want != innerKey(e.Inner) {
		return nil, fmt.Errorf("checkpoint %s was trained with the inner loop %s, the run has %s", dir, want, innerKey(e.Inner))
	}
	seed, err := strconv.ParseUint(meta[metaSeed], 10, 64)
	if err != nil {
		return nil, fmt.Errorf("checkpoint %s: metadata %s: %w", dir, metaSeed, err)
	}
	t, err := NewTrainer(e, p, cfg, seed)
	if err != nil {
		return nil, err
	}
	if t.Step, err = strconv.Atoi(meta[metaStep]); err != nil {
		return nil, fmt.Errorf("checkpoint %s: metadata %s: %w", dir, metaStep, err)
	}
	if t.Seen, err = strconv.Atoi(meta[metaSeen]); err != nil {
		return nil, fmt.Errorf("checkpoint %s: metadata %s: %w", dir, metaSeen, err)
	}
	raw, err := hex.DecodeString(meta[metaRNG])
	if err != nil {
		return nil, fmt.Errorf("checkpoint %s: metadata %s: %w", dir, metaRNG, err)
	}
	pcg := &rand.PCG{}
	if err := pcg.UnmarshalBinary(raw); err != nil {
		return nil, fmt.Errorf("checkpoint %s: metadata %s: %w", dir, metaRNG, err)
	}
	t.pcg, t.rng = pcg, rand.New(pcg)
	b := e.Model.Backend()
	setDev := func(name string, dst *nn.Tensor) error {
		v, err := readFloats(f, name, dst.Shape())
		if err != nil {
			return err
		}
		h, err := nn.FromF64(v, dst.Shape()...)
		if err != nil {
			return err
		}
		d, err := b.FromHost(h, dst.DType())
		if err != nil {
			return err
		}
		defer b.Release(d)
		return b.Copy(dst, d)
	}
	for _, pair := range []struct {
		prefix string
		a      *model.Adapter
	}{{optimMPrefix, t.mInit}, {optimVPrefix, t.vInit}} {
		for _, prm := range pair.a.Params().Params() {
			if err := setDev(pair.prefix+prm.Name, prm.Value); err != nil {
				return nil, fmt.Errorf("checkpoint %s: %w", dir, err)
			}
		}
	}
	if t.mBase != nil {
		for _, pair := range []struct {
			prefix string
			s      *model.ParamSet
		}{{optimMPrefix, t.mBase}, {optimVPrefix, t.vBase}} {
			for _, prm := range pair.s.Params() {
				if err := setDev(pair.prefix+basePrefix+prm.Name, prm.Value); err != nil {
					return nil, fmt.Errorf("checkpoint %s: %w", dir, err)
				}
			}
		}
	}
	host := func(prefix string, ns []NamedSlice) error {
		for _, n := range ns {
			v, err := readFloats(f, prefix+n.Name, n.Shape)
			if err != nil {
				return fmt.Errorf("checkpoint %s: %w", dir, err)
			}
			copy(n.Data, v)
		}
		return nil
	}
	if err := host(optimMPrefix, t.mLR.Tensors()); err != nil {
		return nil, err
	}
	if err := host(optimVPrefix, t.vLR.Tensors()); err != nil {
		return nil, err
	}
	if p.Weighting != nil {
		if err := host(optimMPrefix, t.mW.Tensors()); err != nil {
			return nil, err
		}
		if err := host(optimVPrefix, t.vW.Tensors()); err != nil {
			return nil, err
		}
	}
	return t, nil
}
