package nn

import (
	"github.com/perkgo/perk/runtime"
)

// IgnoreIndex is the label value that cross-entropy skips (as in PyTorch).
const IgnoreIndex = -100

// Backend runs the model's ops on one device. nn/cpu is the pure-Go reference;
// nn/gpu runs the same ops as CUDA kernels. Every op checks its arguments'
// shapes, dtypes and devices once, up front, and returns an error that names
// the op and the argument; an op never panics on bad input and never writes
// anything when it returns an argument error.
//
// Conventions shared by all ops:
//
//   - Tensors are dense row-major. All floating-point tensors of one call have
//     the same dtype (the CPU backend supports F32 and F64).
//   - Outputs are caller-provided. Forward outputs and gradients with respect
//     to activations (dx, dq, dh, …) are overwritten (=). Gradients with
//     respect to parameters (dW, dA, dB, dBias, dGamma, dBeta, dTable, dEmb)
//     are accumulated (+=), so tied or shared weights just work; zero them
//     before a fresh backward pass.
//   - An optional tensor argument is nil to skip it (no bias, no dW, …).
//   - Integer side inputs (labels, token ids, positions, segment boundaries)
//     are host []int32 slices.
//   - Results are deterministic: no float atomics, fixed reduction orders, so
//     two runs on the same inputs give identical bits.
type Backend interface {
	// Name describes the backend, e.g. "cpu (8 goroutines)".
	Name() string

	// Alloc returns a zero-filled tensor on the backend's device.
	Alloc(dt runtime.DType, shape ...int) (*Tensor, error)
	// FromHost copies a host tensor (F32 or F64) to the backend's device,
	// converting it to storage dtype dt.
	FromHost(src *Tensor, dt runtime.DType) (*Tensor, error)
	// ToHost copies t to a new host tensor: F64 if t is F64, F32 otherwise.
	ToHost(t *Tensor) (*Tensor, error)
	// Release returns t's memory to the backend; t must not be used after.
	Release(t *Tensor) error

	// Zero sets every element of x to 0.
	Zero(x *Tensor) error
	// Copy copies src into dst (same dtype and element count).
	Copy(dst, src *Tensor) error
	// CopyColumns copies columns [srcOff, srcOff+cols) of the 2-D src [N, Ms]
	// into columns [dstOff, dstOff+cols) of the 2-D dst [N, Md], leaving dst's
	// other columns untouched. It splits a fused QKV projection and, in
	// backward, assembles the fused gradient.
	CopyColumns(dst *Tensor, dstOff int, src *Tensor, srcOff int, cols int) error
	// Add sets out = a + b elementwise (the residual add); out may alias a or b.
	Add(a, b, out *Tensor) error
	// Axpy sets y += alpha·x.
	Axpy(alpha float64, x, y *Tensor) error
	// Scale sets x *= alpha.
	Scale(alpha float64, x *Tensor) error
	// MatMul sets c = alpha·op(a)·op(b) + beta·c for 2-D tensors, where op
	// transposes when the flag is set: op(a) is [M,K], op(b) is [K,N], c is
	// [M,N]. With beta = 0, c's previous contents are ignored (NaN-safe).
	MatMul(transA, transB bool, alpha float64, a, b *Tensor, beta float64, c *Tensor) error

	// LoRALinearForward computes, for x [N,in],
	//	y = x·Wᵀ + bias + s·(dropout(x)·Aᵀ)·Bᵀ
	// into y [N,out], and writes xa = dropout(x)·Aᵀ [N,r] when xa is non-nil
	// (saved for backward). With l.A nil it is a plain linear layer.
	LoRALinearForward(l LoRALinear, x, y, xa *Tensor) error
	// LoRALinearBackward computes the gradients in g from dy [N,out]. xa is
	// forward's saved dropout(x)·Aᵀ, or nil to recompute it. The dropout mask
	// is regenerated from l.Dropout, never stored.
	LoRALinearBackward(l LoRALinear, x, xa, dy *Tensor, g LoRAGrads) error

	// AttentionForward computes softmax attention over packed segments:
	// q [T,Hq,D], k and v [T,Hkv,D] with Hq a multiple of Hkv (query head h
	// uses kv head h/(Hq/Hkv)); o [T,Hq,D] gets the output and lse [Hq,T] the
	// natural-log log-sum-exp of each query's scaled scores.
	AttentionForward(a Attention, q, k, v, o, lse *Tensor) error
	// AttentionBackward computes dq [T,Hq,D], dk and dv [T,Hkv,D] from do
	// [T,Hq,D], recomputing the probabilities from q, k and forward's lse.
	AttentionBackward(a Attention, q, k, v, o, lse, do, dq, dk, dv *Tensor) error

	// LayerNormForward normalises each row of x over its last dimension C:
	// y = (x−mean)·rstd·gamma + beta, rstd = 1/√(var+eps) (biased variance).
	// gamma and beta are [C] (beta may be nil); mean and rstd, [rows] in the
	// dtype of x, receive the statistics when non-nil.
	LayerNormForward(x, gamma, beta *Tensor, eps float64, y, mean, rstd *Tensor) error
	// LayerNormBackward computes dx (overwritten), dGamma and dBeta
	// (accumulated, each may be nil) from dy, using forward's mean and rstd.
	LayerNormBackward(x, gamma, mean, rstd, dy, dx, dGamma, dBeta *Tensor) error
	// RMSNormForward computes y = x·rstd·gamma, rstd = 1/√(mean(x²)+eps) over
	// the last dimension C; rstd [rows] is saved when non-nil.
	RMSNormForward(x, gamma *Tensor, eps float64, y, rstd *Tensor) error
	// RMSNormBackward computes dx (overwritten) and dGamma (accumulated, may
	// be nil) from dy, using forward's rstd.
	RMSNormBackward(x, gamma, rstd, dy, dx, dGamma *Tensor) error

	// GELUForward sets y = 0.5·x·(1+tanh(√(2/π)·(x+0.044715·x³))) (the tanh
	// approximation GPT-2 uses); y may alias x.
	GELUForward(x, y *Tensor) error
	// GELUBackward sets dx = dy·GELU'(x); dx may alias dy.
	GELUBackward(x, dy, dx *Tensor) error
	// SwiGLUForward sets y = silu(gate)·up, silu(g) = g·σ(g); y may alias
	// either input.
	SwiGLUForward(gate, up, y *Tensor) error
	// SwiGLUBackward computes dGate and dUp from dy.
	SwiGLUBackward(gate, up, dy, dGate, dUp *Tensor) error

	// RoPEForward rotates x [T,H,D] by each token's position (rotate-half
	// convention, as HF Qwen2/Llama): for i < D/2, with
	// θ_i = pos·theta^(−2i/D), y[i] = x[i]·cos θ_i − x[i+D/2]·sin θ_i and
	// y[i+D/2] = x[i+D/2]·cos θ_i + x[i]·sin θ_i. positions has T entries;
	// D must be even; y may alias x.
	RoPEForward(x *Tensor, positions []int32, theta float64, y *Tensor) error
	// RoPEBackward applies the inverse rotation to dy; dx may alias dy.
	RoPEBackward(dy *Tensor, positions []int32, theta float64, dx *Tensor) error

	// EmbeddingForward gathers y[t] = table[ids[t]] (+ pos[positions[t]] when
	// pos, a learned position table [P,d], is non-nil) into y [T,d].
	EmbeddingForward(ids []int32, table *Tensor, positions []int32, pos *Tensor, y *Tensor) error
	// EmbeddingBackward scatter-adds dy [T,d] into dTable [V,d] (and dPos
	// [P,d] when non-nil), deterministically (tokens summed in order).
	EmbeddingBackward(ids []int32, positions []int32, dy, dTable, dPos *Tensor) error

	// CrossEntropyForward computes the weighted token cross-entropy of the
	// tied LM head, logits = h·Eᵀ for h [N,d] and emb E [V,d], one vocabulary
	// chunk at a time with an online log-sum-exp (never all N×V logits):
	//	loss = Σ_i w_i·CE_i / c.Norm over tokens with a label ≠ IgnoreIndex.
	// ce [N] receives CE_i (0 for ignored tokens); lse [N] receives each
	// row's log-sum-exp (needed by backward) when non-nil.
	CrossEntropyForward(c CrossEntropy, h, emb, ce, lse *Tensor) (loss float64, err error)
	// CrossEntropyBackward computes, for loss cotangent dLoss, dh [N,d]
	// (overwritten, may be nil), dEmb [V,d] (accumulated, may be nil) and
	// dw [N] = dLoss·CE_i/Norm (overwritten, may be nil; needs ce).
	CrossEntropyBackward(c CrossEntropy, h, emb, ce, lse *Tensor, dLoss float64, dh, dEmb, dw *Tensor) error

	// AdamWStep applies one AdamW step in place, with torch semantics, to
	// each params[i] with gradient grads[i], moments m[i], v[i] and learning
	// rate lrs[i]; t ≥ 1 is the step count for bias correction:
	//	m ← β1·m + (1−β1)·g,  v ← β2·v + (1−β2)·g²
	//	m̂ = m/(1−β1ᵗ),  v̂ = v/(1−β2ᵗ)
	//	p ← p·(1−η·λ) − η·m̂/(√v̂+ε)
	// Elements with v̂ = 0 get no Adam term (only the decay).
	AdamWStep(o AdamW, t int, lrs []float64, params, grads, m, v []*Tensor) error
	// AdamWStepVJP is the vector-Jacobian product of one AdamWStep. Inputs
	// are the step's p_t (params before the step), g_t, and m_t, v_t (the
	// moments after it). On entry dParams, dM, dV hold the adjoints of
	// p_{t+1}, m_t, v_t; on return they hold the adjoints of p_t, m_{t−1},
	// v_{t−1}. dGrads receives the adjoint of g_t (overwritten) and dLRs[i]
	// the adjoint of lrs[i]. Elements with v̂ = 0 contribute no Adam-term VJP.
	AdamWStepVJP(o AdamW, t int, lrs []float64, params, grads, m, v, dParams, dM, dV, dGrads []*Tensor, dLRs []float64) error
	// SGDStep sets p ← p·(1−η·λ) − η·g for each tensor (no momentum).
	SGDStep(weightDecay float64, lrs []float64, params, grads []*Tensor) error
	// SGDStepVJP is the VJP of SGDStep at p_t (params before the step): on
	// entry dParams holds the adjoint of p_{t+1}, on return that of p_t;
	// dGrads receives the adjoint of g_t, dLRs the adjoints of the lrs.
	SGDStepVJP(weightDecay float64, lrs []float64, params, grads, dParams, dGrads []*Tensor, dLRs []float64) error

	// Sum returns Σ x.
	Sum(x *Tensor) (float64, error)
	// Dot returns Σ a·b over two tensors of equal element count.
	Dot(a, b *Tensor) (float64, error)
	// SumSquares returns Σ x² over all tensors of the list.
	SumSquares(xs []*Tensor) (float64, error)
	// GlobalNorm returns √SumSquares(xs).
	GlobalNorm(xs []*Tensor) (float64, error)
	// ClipGlobalNorm scales every tensor by min(1, maxNorm/(norm+1e-6)) (as
	// torch.nn.utils.clip_grad_norm_) and returns the norm before clipping.
	ClipGlobalNorm(xs []*Tensor, maxNorm float64) (norm float64, err error)
}

// Dropout describes inverted dropout whose mask is drawn, never stored, from
// a counter-based RNG (Philox-4x32-10), so forward and backward — and the CPU
// and GPU backends — draw the same mask. For element index e (the flat,
// row-major index into the dropped tensor) the draw is
//
//	key     = (uint32(Seed), uint32(Seed>>32))
//	counter = (uint32(e), uint32(e>>32), TensorID, Step)
//	w       = word 0 of Philox4x32-10(counter, key)
//	keep    ⇔ w>>8 ≥ ⌈P·2²⁴⌉   (i.e. u = (w>>8)·2⁻²⁴ ≥ P)
//
// and a kept element is multiplied by 1/(1−P) (computed in float64, rounded
// to the element type; dropped elements become 0). The threshold ⌈P·2²⁴⌉ is
// computed once, in float64, on the host, so every device compares integers.
type Dropout struct {
	// P is the drop probability in [0, 1); 0 disables dropout.
	P float64
	// Seed keys the generator (one per run).
	Seed uint64
	// Step distinguishes training steps (or inner-loop steps).
	Step uint32
	// TensorID distinguishes the dropped tensors within a step (one per
	// LoRA module).
	TensorID uint32
}

// LoRALinear is a frozen linear layer with a LoRA adapter:
// y = x·Wᵀ + bias + Scale·(dropout(x)·Aᵀ)·Bᵀ.
type LoRALinear struct {
	// W is the base weight, [out,in]; with WInOut it is [in,out] (GPT-2's
	// Conv1D layout, used as is, without a transposed copy).
	W *Tensor
	// WInOut marks W as [in,out].
	WInOut bool
	// Bias is [out], or nil.
	Bias *Tensor
	// A is the adapter's down projection [r,in], or nil for no adapter.
	A *Tensor
	// B is the adapter's up projection [out,r] (nil when A is nil).
	B *Tensor
	// Scale multiplies the adapter path (α/r, or α/√r with rsLoRA).
	Scale float64
	// Dropout applies to the adapter's input only.
	Dropout Dropout
}

// LoRAGrads are the outputs of LoRALinearBackward; nil entries are skipped.
type LoRAGrads struct {
	// DX [N,in] is overwritten.
	DX *Tensor
	// DA [r,in] is accumulated.
	DA *Tensor
	// DB [out,r] is accumulated.
	DB *Tensor
	// DW, in W's layout, is accumulated (full fine-tuning only).
	DW *Tensor
	// DBias [out] is accumulated.
	DBias *Tensor
}

// Attention describes attention over variable-length segments packed along
// the token axis.
type Attention struct {
	// CuSeqlens holds the S+1 segment boundaries 0 = c[0] ≤ c[1] ≤ … ≤ c[S] = T;
	// tokens attend only within their own segment.
	CuSeqlens []int32
	// Causal restricts query t to keys ≤ t.
	Causal bool
	// Scale multiplies q·k; 0 means 1/√D.
	Scale float64
}

// CrossEntropy describes the weighted LM-head cross-entropy.
type CrossEntropy struct {
	// Labels holds N target ids; IgnoreIndex skips a token.
	Labels []int32
	// Weights [N] weighs each token's CE; nil means all ones.
	Weights *Tensor
	// Norm divides the weighted sum (e.g. the number of target tokens); > 0.
	Norm float64
	// Chunk is the number of vocabulary rows per chunk; 0 lets the backend
	// choose. Results agree across chunk sizes up to rounding.
	Chunk int
}

// AdamW holds AdamW's hyper-parameters other than the learning rate.
type AdamW struct {
	// Beta1 and Beta2 are the moment decay rates (0.9, 0.999 in torch).
	Beta1, Beta2 float64
	// Eps is added to √v̂ (1e-8 in torch).
	Eps float64
	// WeightDecay is λ of the decoupled decay p·(1−η·λ) (0.01 in torch).
	WeightDecay float64
}
