package perk

import (
	"fmt"
	"math"
	"math/rand/v2"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas64"
)

// Checkpoint names of the weighting network's tensors.
const (
	// WeightingFC1Weight is fc1's weight [H,d].
	WeightingFC1Weight = "perk.weighting.fc1.weight"
	// WeightingFC1Bias is fc1's bias [H].
	WeightingFC1Bias = "perk.weighting.fc1.bias"
	// WeightingFC2Weight is fc2's weight [1,H].
	WeightingFC2Weight = "perk.weighting.fc2.weight"
	// WeightingFC2Bias is fc2's bias [1].
	WeightingFC2Bias = "perk.weighting.fc2.bias"
)

// DefaultWeightingHidden and DefaultWeightingBeta are the paper's weighting
// network width and softplus sharpness.
const (
	// DefaultWeightingHidden is the default hidden width H.
	DefaultWeightingHidden = 128
	// DefaultWeightingBeta is the default softplus β.
	DefaultWeightingBeta = 3.0
)

// Weighting is the token-weighting network ω,
//
//	w(h) = softplus_β(fc2(GELU(fc1(h)))),  softplus_β(x) = log(1+exp(β·x))/β,
//
// with fc1: d→H, fc2: H→1 (torch Linear: y = x·Wᵀ + b) and the exact (erf)
// GELU. It runs on the host in float64: it is tiny next to the model and is
// evaluated once per example. A Weighting of the same shape also holds
// gradients (ZerosLike).
type Weighting struct {
	// In is the input width d (the model's hidden size) and Hidden is H.
	In, Hidden int
	// Beta is softplus's β.
	Beta float64
	// FC1W [H,d], FC1B [H], FC2W [1,H] and FC2B [1], row-major.
	FC1W, FC1B, FC2W, FC2B []float64
}

// NewWeighting initialises a weighting network as torch initialises its
// Linear layers — fc1's weight and bias U(−1/√d, 1/√d), drawn from a PCG
// generator keyed by seed — except that fc2 is zero, so every initial
// weight is softplus_β(0) = log 2/β.
func NewWeighting(in, hidden int, beta float64, seed uint64) (*Weighting, error) {
	w, err := zeroWeighting(in, hidden, beta)
	if err != nil {
		return nil, err
	}
	rng := rand.New(rand.NewPCG(seed, 0x3e1_9417))
	bound := 1 / math.Sqrt(float64(in))
	for i := range w.FC1W {
		w.FC1W[i] = (2*rng.Float64() - 1) * bound
	}
	for i := range w.FC1B {
		w.FC1B[i] = (2*rng.Float64() - 1) * bound
	}
	return w, nil
}

func zeroWeighting(in, hidden int, beta float64) (*Weighting, error) {
	if in <= 0 || hidden <= 0 {
		return nil, fmt.Errorf("weighting network: widths d = %d, H = %d must be positive", in, hidden)
	}
	if !(beta > 0) || math.IsInf(beta, 0) {
		return nil, fmt.Errorf("weighting network: softplus beta %v must be positive and finite", beta)
	}
	return &Weighting{In: in, Hidden: hidden, Beta: beta,
		FC1W: make([]float64, hidden*in), FC1B: make([]float64, hidden),
		FC2W: make([]float64, hidden), FC2B: make([]float64, 1)}, nil
}

// ZerosLike returns a zero network of the same shape (a gradient).
func (w *Weighting) ZerosLike() *Weighting {
	z, _ := zeroWeighting(w.In, w.Hidden, w.Beta)
	return z
}

// Clone returns a deep copy.
func (w *Weighting) Clone() *Weighting {
	c := w.ZerosLike()
	copy(c.FC1W, w.FC1W)
	copy(c.FC1B, w.FC1B)
	copy(c.FC2W, w.FC2W)
	copy(c.FC2B, w.FC2B)
	return c
}

// NamedSlice is a named host float64 tensor (values shared, not copied).
type NamedSlice struct {
	// Name is the checkpoint name.
	Name string
	// Shape is the tensor's shape.
	Shape []int
	// Data holds the values, row-major.
	Data []float64
	// NoDecay marks tensors the outer optimiser does not weight-decay
	// (biases, learning rates).
	NoDecay bool
}

// Tensors lists the network's tensors under their checkpoint names.
func (w *Weighting) Tensors() []NamedSlice {
	return []NamedSlice{
		{WeightingFC1Weight, []int{w.Hidden, w.In}, w.FC1W, false},
		{WeightingFC1Bias, []int{w.Hidden}, w.FC1B, true},
		{WeightingFC2Weight, []int{1, w.Hidden}, w.FC2W, false},
		{WeightingFC2Bias, []int{1}, w.FC2B, true},
	}
}

// weightingCache is what Forward keeps for Backward.
type weightingCache struct {
	n     int
	h     []float64 // [n,d] inputs
	z1    []float64 // [n,H] fc1 outputs
	a     []float64 // [n,H] GELU(z1)
	z2, w []float64 // [n] fc2 outputs and weights
}

// gelu is the exact GELU x·Φ(x) and geluGrad its derivative.
func gelu(x float64) float64 { return 0.5 * x * (1 + math.Erf(x/math.Sqrt2)) }

func geluGrad(x float64) float64 {
	return 0.5*(1+math.Erf(x/math.Sqrt2)) + x*math.Exp(-0.5*x*x)/math.Sqrt(2*math.Pi)
}

// softplus is log(1+exp(β·x))/β, computed without overflow.
func softplus(x, beta float64) float64 {
	bx := beta * x
	return (math.Max(bx, 0) + math.Log1p(math.Exp(-math.Abs(bx)))) / beta
}

// sigmoid is 1/(1+exp(−x)), computed without overflow.
func sigmoid(x float64) float64 {
	if x >= 0 {
		return 1 / (1 + math.Exp(-x))
	}
	e := math.Exp(x)
	return e / (1 + e)
}

func gemm(tA, tB blas.Transpose, m, n, k int, a []float64, lda int, b []float64, ldb int, beta float64, c []float64, ldc int) {
	blas64.Implementation().Dgemm(tA, tB, m, n, k, 1, a, lda, b, ldb, beta, c, ldc)
}

// Forward computes the weights of n inputs h [n,d] (row-major) and keeps
// what Backward needs.
func (w *Weighting) forward(h []float64, n int) (*weightingCache, error) {
	if len(h) != n*w.In {
		return nil, fmt.Errorf("weighting network: %d input values for %d rows of width %d", len(h), n, w.In)
	}
	H := w.Hidden
	c := &weightingCache{n: n, h: h, z1: make([]float64, n*H), a: make([]float64, n*H), z2: make([]float64, n), w: make([]float64, n)}
	if n == 0 {
		return c, nil
	}
	for i := 0; i < n; i++ {
		copy(c.z1[i*H:(i+1)*H], w.FC1B)
	}
	gemm(blas.NoTrans, blas.Trans, n, H, w.In, h, w.In, w.FC1W, w.In, 1, c.z1, H)
	for i, z := range c.z1 {
		c.a[i] = gelu(z)
	}
	for i := 0; i < n; i++ {
		s := w.FC2B[0]
		row := c.a[i*H : (i+1)*H]
		for j, v := range row {
			s += v * w.FC2W[j]
		}
		c.z2[i] = s
		c.w[i] = softplus(s, w.Beta)
	}
	return c, nil
}

// Weights returns w(h) for n inputs h [n,d] (row-major).
func (w *Weighting) Weights(h []float64, n int) ([]float64, error) {
	c, err := w.forward(h, n)
	if err != nil {
		return nil, err
	}
	return c.w, nil
}

// backward accumulates into g the gradient of Σ_i dw_i·w_i with respect to
// the network's parameters.
func (w *Weighting) backward(c *weightingCache, dw []float64, g *Weighting) {
	n, H := c.n, w.Hidden
	if n == 0 {
		return
	}
	dz1 := make([]float64, n*H)
	for i := 0; i < n; i++ {
		dz2 := dw[i] * sigmoid(w.Beta*c.z2[i])
		if dz2 == 0 {
			continue
		}
		g.FC2B[0] += dz2
		row := c.a[i*H : (i+1)*H]
		for j := range row {
			g.FC2W[j] += dz2 * row[j]
			dz1[i*H+j] = dz2 * w.FC2W[j] * geluGrad(c.z1[i*H+j])
		}
	}
	for i := 0; i < n; i++ {
		for j := 0; j < H; j++ {
			g.FC1B[j] += dz1[i*H+j]
		}
	}
	// dW1 [H,d] += dz1ᵀ [H,n] · h [n,d]
	gemm(blas.Trans, blas.NoTrans, H, w.In, n, dz1, H, c.h, w.In, 1, g.FC1W, w.In)
}

// check validates the network's shapes against a model width.
func (w *Weighting) check(d int) error {
	if w.In != d {
		return fmt.Errorf("weighting network: input width %d, the model's hidden size is %d", w.In, d)
	}
	if len(w.FC1W) != w.Hidden*w.In || len(w.FC1B) != w.Hidden || len(w.FC2W) != w.Hidden || len(w.FC2B) != 1 {
		return fmt.Errorf("weighting network: tensor sizes do not match d = %d, H = %d", w.In, w.Hidden)
	}
	if !(w.Beta > 0) || math.IsInf(w.Beta, 0) {
		return fmt.Errorf("weighting network: softplus beta %v must be positive and finite", w.Beta)
	}
	return nil
}
