package nn

// Per-op argument checks shared by the backends: each Check<Op> validates
// the arguments of Backend.<Op> in a fixed order, recording the first
// problem in ck, and returns the sizes the op needs. Backend-specific limits
// are added by the caller after it returns.

// CheckLayerNormForward validates LayerNormForward's arguments and returns the row count and row length of x.
func CheckLayerNormForward(ck *Checker, x, gamma, beta *Tensor, eps float64, y, mean, rstd *Tensor) (rows, c int) {
	rows, c = NormRows(ck, x)
	ck.Tensor("gamma", gamma)
	ck.Numel("gamma", gamma, c)
	ck.Optional("beta", beta)
	ck.Numel("beta", beta, c)
	ck.Tensor("y", y)
	if x != nil {
		ck.Numel("y", y, x.Numel())
	}
	ck.Optional("mean", mean)
	ck.Numel("mean", mean, rows)
	ck.Optional("rstd", rstd)
	ck.Numel("rstd", rstd, rows)
	CheckEps(ck, eps)
	return rows, c
}

// CheckLayerNormBackward validates LayerNormBackward's arguments and returns the row count and row length of x.
func CheckLayerNormBackward(ck *Checker, x, gamma, mean, rstd, dy, dx, dGamma, dBeta *Tensor) (rows, c int) {
	rows, c = NormRows(ck, x)
	ck.Tensor("gamma", gamma)
	ck.Numel("gamma", gamma, c)
	ck.Tensor("mean", mean)
	ck.Numel("mean", mean, rows)
	ck.Tensor("rstd", rstd)
	ck.Numel("rstd", rstd, rows)
	ck.Tensor("dy", dy)
	ck.Optional("dx", dx)
	ck.Optional("dGamma", dGamma)
	ck.Numel("dGamma", dGamma, c)
	ck.Optional("dBeta", dBeta)
	ck.Numel("dBeta", dBeta, c)
	if x != nil {
		ck.Numel("dy", dy, x.Numel())
		ck.Numel("dx", dx, x.Numel())
	}
	return rows, c
}

// CheckRMSNormForward validates RMSNormForward's arguments and returns the row count and row length of x.
func CheckRMSNormForward(ck *Checker, x, gamma *Tensor, eps float64, y, rstd *Tensor) (rows, c int) {
	rows, c = NormRows(ck, x)
	ck.Tensor("gamma", gamma)
	ck.Numel("gamma", gamma, c)
	ck.Tensor("y", y)
	if x != nil {
		ck.Numel("y", y, x.Numel())
	}
	ck.Optional("rstd", rstd)
	ck.Numel("rstd", rstd, rows)
	CheckEps(ck, eps)
	return rows, c
}

// CheckRMSNormBackward validates RMSNormBackward's arguments and returns the row count and row length of x.
func CheckRMSNormBackward(ck *Checker, x, gamma, rstd, dy, dx, dGamma *Tensor) (rows, c int) {
	rows, c = NormRows(ck, x)
	ck.Tensor("gamma", gamma)
	ck.Numel("gamma", gamma, c)
	ck.Tensor("rstd", rstd)
	ck.Numel("rstd", rstd, rows)
	ck.Tensor("dy", dy)
	ck.Optional("dx", dx)
	ck.Optional("dGamma", dGamma)
	ck.Numel("dGamma", dGamma, c)
	if x != nil {
		ck.Numel("dy", dy, x.Numel())
		ck.Numel("dx", dx, x.Numel())
	}
	return rows, c
}

// CheckGELUForward validates GELUForward's arguments.
func CheckGELUForward(ck *Checker, x, y *Tensor) {
	CheckSame(ck, []string{"x", "y"}, []*Tensor{x, y}, nil)
}

// CheckGELUBackward validates GELUBackward's arguments.
func CheckGELUBackward(ck *Checker, x, dy, dx *Tensor) {
	CheckSame(ck, []string{"x", "dy", "dx"}, []*Tensor{x, dy, dx}, nil)
}

// CheckSwiGLUForward validates SwiGLUForward's arguments.
func CheckSwiGLUForward(ck *Checker, gate, up, y *Tensor) {
	CheckSame(ck, []string{"gate", "up", "y"}, []*Tensor{gate, up, y}, nil)
}

// CheckSwiGLUBackward validates SwiGLUBackward's arguments.
func CheckSwiGLUBackward(ck *Checker, gate, up, dy, dGate, dUp *Tensor) {
	CheckSame(ck, []string{"gate", "up", "dy", "dGate", "dUp"}, []*Tensor{gate, up, dy, dGate, dUp},
		[]bool{false, false, false, true, true})
}

// CheckEmbeddingForward validates EmbeddingForward's arguments and returns the token count t and width d.
func CheckEmbeddingForward(ck *Checker, ids []int32, table *Tensor, positions []int32, pos, y *Tensor) (t, d int) {
	ck.Tensor("table", table, -1, -1)
	if ck.err != nil {
		return 0, 0
	}
	v := table.Dim(0)
	d, t = table.Dim(1), len(ids)
	ck.Tensor("y", y, t, d)
	ck.Optional("pos", pos, -1, d)
	CheckIDs(ck, "ids", ids, v)
	if pos != nil && ck.err == nil {
		if len(positions) != t {
			ck.Failf("%d positions for %d ids", len(positions), t)
		}
		CheckIDs(ck, "positions", positions, pos.Dim(0))
	}
	return t, d
}

// CheckEmbeddingBackward validates EmbeddingBackward's arguments and returns the width d of dy.
func CheckEmbeddingBackward(ck *Checker, ids, positions []int32, dy, dTable, dPos *Tensor) (d int) {
	ck.Tensor("dy", dy, len(ids), -1)
	if ck.err != nil {
		return 0
	}
	d = dy.Dim(1)
	ck.Optional("dTable", dTable, -1, d)
	ck.Optional("dPos", dPos, -1, d)
	if dTable != nil && ck.err == nil {
		CheckIDs(ck, "ids", ids, dTable.Dim(0))
	}
	if dPos != nil && ck.err == nil {
		if len(positions) != len(ids) {
			ck.Failf("%d positions for %d ids", len(positions), len(ids))
		}
		CheckIDs(ck, "positions", positions, dPos.Dim(0))
	}
	return d
}

// CheckZero validates Zero's argument.
func CheckZero(ck *Checker, x *Tensor) { ck.Tensor("x", x) }

// CheckCopy validates Copy's arguments.
func CheckCopy(ck *Checker, dst, src *Tensor) {
	ck.Tensor("dst", dst)
	ck.Tensor("src", src)
	if src != nil {
		ck.Numel("dst", dst, src.Numel())
	}
}

// CheckCopyColumns validates CopyColumns's arguments.
func CheckCopyColumns(ck *Checker, dst *Tensor, dstOff int, src *Tensor, srcOff int, cols int) {
	ck.Tensor("dst", dst, -1, -1)
	ck.Tensor("src", src, -1, -1)
	switch {
	case ck.err != nil:
	case dst.Dim(0) != src.Dim(0):
		ck.Failf("dst has %d rows, src has %d", dst.Dim(0), src.Dim(0))
	case cols < 0 || srcOff < 0 || srcOff+cols > src.Dim(1):
		ck.Failf("source columns [%d,%d) outside src with %d columns", srcOff, srcOff+cols, src.Dim(1))
	case dstOff < 0 || dstOff+cols > dst.Dim(1):
		ck.Failf("destination columns [%d,%d) outside dst with %d columns", dstOff, dstOff+cols, dst.Dim(1))
	}
}

// CheckAdd validates Add's arguments (b is the second addend).
func CheckAdd(ck *Checker, a, b, out *Tensor) {
	ck.Tensor("a", a)
	ck.Tensor("b", b)
	ck.Tensor("out", out)
	if a != nil {
		ck.Numel("b", b, a.Numel())
		ck.Numel("out", out, a.Numel())
	}
}

// CheckAxpy validates Axpy's arguments.
func CheckAxpy(ck *Checker, x, y *Tensor) {
	ck.Tensor("x", x)
	ck.Tensor("y", y)
	if x != nil {
		ck.Numel("y", y, x.Numel())
	}
}

// CheckScale validates Scale's argument.
func CheckScale(ck *Checker, x *Tensor) { ck.Tensor("x", x) }

// CheckMatMul validates MatMul's arguments and returns op(a) [m,k] and op(b) [k,n]'s sizes.
func CheckMatMul(ck *Checker, transA, transB bool, a, b, c *Tensor) (m, n, k int) {
	ck.Tensor("a", a, -1, -1)
	ck.Tensor("b", b, -1, -1)
	ck.Tensor("c", c, -1, -1)
	if ck.err != nil {
		return 0, 0, 0
	}
	m, ka := a.Dim(0), a.Dim(1)
	if transA {
		m, ka = ka, m
	}
	kb, n := b.Dim(0), b.Dim(1)
	if transB {
		kb, n = n, kb
	}
	if ka != kb {
		ck.Failf("inner dimensions differ: op(a) is [%d %d], op(b) is [%d %d]", m, ka, kb, n)
	} else if c.Dim(0) != m || c.Dim(1) != n {
		ck.Failf("c has shape %v, want [%d %d]", c.Shape(), m, n)
	}
	return m, n, ka
}

// CheckSum validates Sum's argument.
func CheckSum(ck *Checker, x *Tensor) { ck.Tensor("x", x) }

// CheckDot validates Dot's arguments.
func CheckDot(ck *Checker, a, b *Tensor) {
	ck.Tensor("a", a)
	ck.Tensor("b", b)
	if a != nil {
		ck.Numel("b", b, a.Numel())
	}
}

// CheckClipGlobalNorm validates ClipGlobalNorm's arguments.
func CheckClipGlobalNorm(ck *Checker, xs []*Tensor, maxNorm float64) {
	CheckList(ck, xs)
	if !(maxNorm > 0) {
		ck.Failf("maxNorm %v must be positive", maxNorm)
	}
}

// CheckLoRALinearForward validates LoRALinearForward's arguments and returns the layer's sizes.
func CheckLoRALinearForward(ck *Checker, l LoRALinear, x, y, xa *Tensor) LoRADims {
	d := CheckLoRA(ck, l, x)
	ck.Tensor("y", y, d.N, d.Out)
	if l.A == nil && xa != nil {
		ck.Failf("xa is set but the layer has no adapter (A is nil)")
	}
	ck.Optional("xa", xa, d.N, d.R)
	return d
}

// CheckLoRALinearBackward validates LoRALinearBackward's arguments and returns the layer's sizes.
func CheckLoRALinearBackward(ck *Checker, l LoRALinear, x, xa, dy *Tensor, g LoRAGrads) LoRADims {
	d := CheckLoRA(ck, l, x)
	ck.Tensor("dy", dy, d.N, d.Out)
	ck.Optional("dx", g.DX, d.N, d.In)
	if l.A == nil && (xa != nil || g.DA != nil || g.DB != nil) {
		ck.Failf("xa, dA or dB is set but the layer has no adapter (A is nil)")
	}
	ck.Optional("xa", xa, d.N, d.R)
	ck.Optional("dA", g.DA, d.R, d.In)
	ck.Optional("dB", g.DB, d.Out, d.R)
	if l.WInOut {
		ck.Optional("dW", g.DW, d.In, d.Out)
	} else {
		ck.Optional("dW", g.DW, d.Out, d.In)
	}
	ck.Optional("dBias", g.DBias, d.Out)
	return d
}

// CheckAttentionForward validates AttentionForward's arguments and returns the attention sizes.
func CheckAttentionForward(ck *Checker, a Attention, q, k, v, o, lse *Tensor) AttentionDims {
	d := CheckAttention(ck, a, q, k, v)
	ck.Tensor("o", o, d.T, d.HQ, d.D)
	ck.Tensor("lse", lse, d.HQ, d.T)
	return d
}

// CheckAttentionBackward validates AttentionBackward's arguments and returns the attention sizes.
func CheckAttentionBackward(ck *Checker, a Attention, q, k, v, o, lse, do, dq, dk, dv *Tensor) AttentionDims {
	d := CheckAttention(ck, a, q, k, v)
	ck.Tensor("o", o, d.T, d.HQ, d.D)
	ck.Tensor("lse", lse, d.HQ, d.T)
	ck.Tensor("do", do, d.T, d.HQ, d.D)
	ck.Optional("dq", dq, d.T, d.HQ, d.D)
	ck.Optional("dk", dk, d.T, d.HKV, d.D)
	ck.Optional("dv", dv, d.T, d.HKV, d.D)
	return d
}

// CheckCrossEntropyForward validates CrossEntropyForward's arguments and returns the cross-entropy sizes.
func CheckCrossEntropyForward(ck *Checker, c CrossEntropy, h, emb, ce, lse *Tensor) XentDims {
	x := CheckXent(ck, c, h, emb)
	ck.Tensor("ce", ce, x.N)
	ck.Optional("lse", lse, x.N)
	return x
}

// CheckCrossEntropyBackward validates CrossEntropyBackward's tensor arguments and returns the cross-entropy sizes.
func CheckCrossEntropyBackward(ck *Checker, c CrossEntropy, h, emb, ce, lse, dh, dEmb, dw *Tensor) XentDims {
	x := CheckXent(ck, c, h, emb)
	ck.Optional("ce", ce, x.N)
	ck.Tensor("lse", lse, x.N)
	ck.Optional("dh", dh, x.N, x.D)
	ck.Optional("dEmb", dEmb, x.V, x.D)
	ck.Optional("dw", dw, x.N)
	if dw != nil && ce == nil {
		ck.Failf("dw needs ce")
	}
	return x
}

// CheckAdamWStep validates AdamWStep's arguments.
func CheckAdamWStep(ck *Checker, o AdamW, t int, lrs []float64, params, grads, m, v []*Tensor) {
	CheckAdamW(ck, o, t)
	CheckLists(ck, lrs, []string{"params", "grads", "m", "v"}, params, grads, m, v)
}

// CheckAdamWStepVJP validates AdamWStepVJP's arguments.
func CheckAdamWStepVJP(ck *Checker, o AdamW, t int, lrs []float64, params, grads, m, v, dParams, dM, dV, dGrads []*Tensor, dLRs []float64) {
	CheckAdamW(ck, o, t)
	CheckLists(ck, lrs, []string{"params", "grads", "m", "v", "dParams", "dM", "dV", "dGrads"},
		params, grads, m, v, dParams, dM, dV, dGrads)
	checkDLRs(ck, lrs, dLRs)
}

// CheckSGDStep validates SGDStep's arguments.
func CheckSGDStep(ck *Checker, weightDecay float64, lrs []float64, params, grads []*Tensor) {
	CheckWeightDecay(ck, weightDecay)
	CheckLists(ck, lrs, []string{"params", "grads"}, params, grads)
}

// CheckSGDStepVJP validates SGDStepVJP's arguments.
func CheckSGDStepVJP(ck *Checker, weightDecay float64, lrs []float64, params, grads, dParams, dGrads []*Tensor, dLRs []float64) {
	CheckWeightDecay(ck, weightDecay)
	CheckLists(ck, lrs, []string{"params", "grads", "dParams", "dGrads"}, params, grads, dParams, dGrads)
	checkDLRs(ck, lrs, dLRs)
}

// checkDLRs checks that there is one learning-rate cotangent per rate.
func checkDLRs(ck *Checker, lrs, dLRs []float64) {
	if len(dLRs) != len(lrs) {
		ck.Failf("dLRs has %d entries, want %d", len(dLRs), len(lrs))
	}
}
