package perk

import (
	"fmt"
	"math"

	"github.com/perkgo/perk/nn/model"
)

// LRPrefix prefixes the checkpoint name of a learned learning rate:
// "perk.lr.<PEFT LoRA tensor name>".
const LRPrefix = "perk.lr."

// DefaultInnerLR is the paper's initial inner learning rate.
const DefaultInnerLR = 5e-5

// LearnedLRs are the per-step, per-tensor inner learning rates η_{t,m}:
// one vector of length T (the number of inner steps) per LoRA tensor.
type LearnedLRs struct {
	// Names are the LoRA tensors' PEFT names, in adapter order.
	Names []string
	// Values[i][t] is the learning rate of tensor Names[i] at inner step t.
	Values [][]float64
}

// NewLearnedLRs sets every rate of T steps of the named tensors to lr.
func NewLearnedLRs(names []string, steps int, lr float64) (*LearnedLRs, error) {
	if steps <= 0 {
		return nil, fmt.Errorf("learned learning rates: %d inner steps, want ≥ 1", steps)
	}
	if math.IsNaN(lr) || math.IsInf(lr, 0) {
		return nil, fmt.Errorf("learned learning rates: initial rate %v is not finite", lr)
	}
	l := &LearnedLRs{Names: append([]string(nil), names...), Values: make([][]float64, len(names))}
	for i := range l.Values {
		l.Values[i] = make([]float64, steps)
		for t := range l.Values[i] {
			l.Values[i][t] = lr
		}
	}
	return l, nil
}

// Steps is the number of inner steps T.
func (l *LearnedLRs) Steps() int {
	if len(l.Values) == 0 {
		return 0
	}
	return len(l.Values[0])
}

// At returns the rates of step t, one per tensor (a new slice).
func (l *LearnedLRs) At(t int) []float64 {
	out := make([]float64, len(l.Values))
	for i, v := range l.Values {
		out[i] = v[t]
	}
	return out
}

// Clone returns a deep copy.
func (l *LearnedLRs) Clone() *LearnedLRs {
	c := &LearnedLRs{Names: append([]string(nil), l.Names...), Values: make([][]float64, len(l.Values))}
	for i, v := range l.Values {
		c.Values[i] = append([]float64(nil), v...)
	}
	return c
}

// ZerosLike returns rates of the same shape, all zero (a gradient).
func (l *LearnedLRs) ZerosLike() *LearnedLRs {
	c := &LearnedLRs{Names: append([]string(nil), l.Names...), Values: make([][]float64, len(l.Values))}
	for i, v := range l.Values {
		c.Values[i] = make([]float64, len(v))
	}
	return c
}

// Tensors lists the rates under their checkpoint names ("perk.lr.<name>",
// shape [T]); the slices are shared.
func (l *LearnedLRs) Tensors() []NamedSlice {
	out := make([]NamedSlice, len(l.Names))
	for i, n := range l.Names {
		out[i] = NamedSlice{Name: LRPrefix + n, Shape: []int{len(l.Values[i])}, Data: l.Values[i], NoDecay: true}
	}
	return out
}

// check verifies that the rates cover the adapter's tensors, in order, for
// T steps, with finite values.
func (l *LearnedLRs) check(ad *model.Adapter, steps int) error {
	names := ad.Params().Names()
	if len(l.Names) != len(names) || len(l.Values) != len(names) {
		return fmt.Errorf("learned learning rates: %d tensors, the adapter has %d", len(l.Names), len(names))
	}
	for i, n := range names {
		if l.Names[i] != n {
			return fmt.Errorf("learned learning rates: tensor %d is %s, the adapter's is %s", i, l.Names[i], n)
		}
		if len(l.Values[i]) != steps {
			return fmt.Errorf("learned learning rates: %s%s has %d steps, want %d", LRPrefix, n, len(l.Values[i]), steps)
		}
		for t, v := range l.Values[i] {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				return fmt.Errorf("learned learning rates: %s%s[%d] = %v is not finite", LRPrefix, n, t, v)
			}
		}
	}
	return nil
}

// Params are the meta-learned parameters: the LoRA initialisation, the
// inner learning rates and, optionally, the token-weighting network.
type Params struct {
	// Init is the LoRA initialisation φ₀ (on the model's backend, in its
	// precision).
	Init *model.Adapter
	// LRs are the learned inner learning rates, one vector per tensor of
	// Init.
	LRs *LearnedLRs
	// Weighting is the token-weighting network; nil weighs every token 1.
	Weighting *Weighting
}

// ParamsConfig configures NewParams.
type ParamsConfig struct {
	// LoRA is the adapter's configuration.
	LoRA model.LoRAConfig
	// Steps is the number of inner steps T.
	Steps int
	// LR is the initial inner learning rate of every tensor and step.
	LR float64
	// Weighting enables the token-weighting network.
	Weighting bool
	// WeightingHidden is its width H (0: DefaultWeightingHidden).
	WeightingHidden int
	// WeightingBeta is its softplus β (0: DefaultWeightingBeta).
	WeightingBeta float64
	// Seed keys the LoRA A and fc1 initialisations.
	Seed uint64
}

// NewParams initialises meta-parameters for model m: a PEFT-initialised
// adapter (B zero), every learning rate c.LR, and, when enabled, a weighting
// network whose output layer is zero (every weight log 2/β).
func NewParams(m *model.Model, c ParamsConfig) (*Params, error) {
	ad, err := model.NewAdapter(m, c.LoRA, c.Seed)
	if err != nil {
		return nil, err
	}
	lrs, err := NewLearnedLRs(ad.Params().Names(), c.Steps, c.LR)
	if err != nil {
		return nil, err
	}
	p := &Params{Init: ad, LRs: lrs}
	if c.Weighting {
		h, beta := c.WeightingHidden, c.WeightingBeta
		if h == 0 {
			h = DefaultWeightingHidden
		}
		if beta == 0 {
			beta = DefaultWeightingBeta
		}
		if p.Weighting, err = NewWeighting(m.Config().Hidden, h, beta, c.Seed+1); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// Clone returns a deep copy.
func (p *Params) Clone() (*Params, error) {
	ad, err := p.Init.Clone()
	if err != nil {
		return nil, err
	}
	c := &Params{Init: ad, LRs: p.LRs.Clone()}
	if p.Weighting != nil {
		c.Weighting = p.Weighting.Clone()
	}
	return c, nil
}
