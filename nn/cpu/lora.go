package cpu

import (
	"github.com/perkgo/perk/nn"
	"github.com/perkgo/perk/runtime"
)

// loraDims are the sizes of one LoRALinear call.
type loraDims struct{ n, in, out, r int }

// loraDimsOf converts the shared checker's sizes.
func loraDimsOf(d nn.LoRADims) loraDims {
	return loraDims{n: d.N, in: d.In, out: d.Out, r: d.R}
}

// LoRALinearForward computes y = x·Wᵀ + bias + s·(dropout(x)·Aᵀ)·Bᵀ and, when
// xa is non-nil, saves xa = dropout(x)·Aᵀ.
func (*Backend) LoRALinearForward(l nn.LoRALinear, x, y, xa *nn.Tensor) error {
	ck := newChecker("lora_linear fwd")
	d := loraDimsOf(nn.CheckLoRALinearForward(ck, l, x, y, xa))
	if ck.Err() != nil {
		return ck.Err()
	}
	if x.DType() == runtime.F32 {
		loraForward[float32](l, d, x, y, xa)
	} else {
		loraForward[float64](l, d, x, y, xa)
	}
	return nil
}

func loraForward[T Float](l nn.LoRALinear, d loraDims, xt, yt, xat *nn.Tensor) {
	x, y, w := data[T](xt), data[T](yt), data[T](l.W)
	if l.WInOut {
		gemm(false, false, d.n, d.out, d.in, 1, x, max(1, d.in), w, max(1, d.out), 0, y, max(1, d.out))
	} else {
		gemm(false, true, d.n, d.out, d.in, 1, x, max(1, d.in), w, max(1, d.in), 0, y, max(1, d.out))
	}
	if l.Bias != nil {
		addBias(y, data[T](l.Bias), d.n, d.out)
	}
	if l.A == nil || d.r == 0 {
		return
	}
	u := x
	if l.Dropout.P > 0 {
		u = make([]T, len(x))
		applyDropout(l.Dropout, x, u)
	}
	xa := data[T](xat)
	if xa == nil {
		xa = make([]T, d.n*d.r)
	}
	gemm(false, true, d.n, d.r, d.in, 1, u, max(1, d.in), data[T](l.A), max(1, d.in), 0, xa, d.r)
	gemm(false, true, d.n, d.out, d.r, l.Scale, xa, d.r, data[T](l.B), d.r, 1, y, max(1, d.out))
}

func addBias[T Float](y, b []T, n, out int) {
	parallelFor(n, rowGrain(out), func(lo, hi int) {
		for i := lo; i < hi; i++ {
			row := y[i*out : (i+1)*out]
			for j := range row {
				row[j] += b[j]
			}
		}
	})
}

// LoRALinearBackward computes the gradients of a LoRALinear layer from dy:
// dx = dy·W + dropout'((s·dy·B)·A) (overwritten), dA += (s·dy·B)ᵀ·dropout(x),
// dB += s·dyᵀ·xa, dW += dyᵀ·x (or xᵀ·dy for the [in,out] layout) and
// dBias += Σ_rows dy (all accumulated).
func (*Backend) LoRALinearBackward(l nn.LoRALinear, x, xa, dy *nn.Tensor, g nn.LoRAGrads) error {
	ck := newChecker("lora_linear bwd")
	d := loraDimsOf(nn.CheckLoRALinearBackward(ck, l, x, xa, dy, g))
	if ck.Err() != nil {
		return ck.Err()
	}
	if x.DType() == runtime.F32 {
		loraBackward[float32](l, d, x, xa, dy, g)
	} else {
		loraBackward[float64](l, d, x, xa, dy, g)
	}
	return nil
}

func loraBackward[T Float](l nn.LoRALinear, d loraDims, xt, xat, dyt *nn.Tensor, g nn.LoRAGrads) {
	x, dy, w := data[T](xt), data[T](dyt), data[T](l.W)
	ldIn, ldOut := max(1, d.in), max(1, d.out)
	dx := data[T](g.DX)
	if dx != nil {
		if l.WInOut { // dx = dy·Wᵀ with W [in,out]
			gemm(false, true, d.n, d.in, d.out, 1, dy, ldOut, w, ldOut, 0, dx, ldIn)
		} else { // dx = dy·W with W [out,in]
			gemm(false, false, d.n, d.in, d.out, 1, dy, ldOut, w, ldIn, 0, dx, ldIn)
		}
	}
	if dw := data[T](g.DW); dw != nil {
		if l.WInOut {
			gemm(true, false, d.in, d.out, d.n, 1, x, ldIn, dy, ldOut, 1, dw, ldOut)
		} else {
			gemm(true, false, d.out, d.in, d.n, 1, dy, ldOut, x, ldIn, 1, dw, ldIn)
		}
	}
	if db := data[T](g.DBias); db != nil {
		addColumnSums(dy, d.n, d.out, db)
	}
	if l.A == nil || d.r == 0 || (dx == nil && g.DA == nil && g.DB == nil) {
		return
	}
	a, b := data[T](l.A), data[T](l.B)
	var u []T // dropout(x), built on demand
	dropX := func() []T {
		if u == nil {
			u = x
			if l.Dropout.P > 0 {
				u = make([]T, len(x))
				applyDropout(l.Dropout, x, u)
			}
		}
		return u
	}
	if db := data[T](g.DB); db != nil {
		xa := data[T](xat)
		if xa == nil {
			xa = make([]T, d.n*d.r)
			gemm(false, true, d.n, d.r, d.in, 1, dropX(), ldIn, a, ldIn, 0, xa, d.r)
		}
		gemm(true, false, d.out, d.r, d.n, l.Scale, dy, ldOut, xa, d.r, 1, db, d.r)
	}
	if dx == nil && g.DA == nil {
		return
	}
	dxa := make([]T, d.n*d.r) // s·dy·B
	gemm(false, false, d.n, d.r, d.out, l.Scale, dy, ldOut, b, d.r, 0, dxa, d.r)
	if da := data[T](g.DA); da != nil {
		gemm(true, false, d.r, d.in, d.n, 1, dxa, d.r, dropX(), ldIn, 1, da, ldIn)
	}
	if dx != nil {
		if l.Dropout.P == 0 {
			gemm(false, false, d.n, d.in, d.r, 1, dxa, d.r, a, ldIn, 1, dx, ldIn)
		} else {
			du := make([]T, d.n*d.in)
			gemm(false, false, d.n, d.in, d.r, 1, dxa, d.r, a, ldIn, 0, du, ldIn)
			addDropoutGrad(l.Dropout, du, dx)
		}
	}
}

// addColumnSums adds Σ_rows m[i,j] to dst[j] for the row-major m [n,cols],
// summing each column in row order in float64.
func addColumnSums[T Float](m []T, n, cols int, dst []T) {
	const colBlock = 256
	nb := (cols + colBlock - 1) / colBlock
	parallelFor(nb, 1, func(lo, hi int) {
		acc := make([]float64, colBlock)
		for blk := lo; blk < hi; blk++ {
			c0, c1 := blk*colBlock, min((blk+1)*colBlock, cols)
			acc := acc[:c1-c0]
			clear(acc)
			for i := 0; i < n; i++ {
				row := m[i*cols+c0 : i*cols+c1]
				for j, v := range row {
					acc[j] += float64(v)
				}
			}
			for j, v := range acc {
				dst[c0+j] = T(float64(dst[c0+j]) + v)
			}
		}
	})
}
