package gpu

import (
	"github.com/perkgo/perk/kernels"
	"github.com/perkgo/perk/nn"
	"github.com/perkgo/perk/runtime"
)

// optimRows lays out the tensor lists as multi-tensor table rows: row i
// holds entry i of every list.
func (b *Backend) optimRows(lists ...[]*nn.Tensor) [][]kernels.Array {
	rows := make([][]kernels.Array, len(lists[0]))
	for i := range rows {
		rows[i] = make([]kernels.Array, len(lists))
		for j, l := range lists {
			rows[i][j] = b.flat(l[i])
		}
	}
	return rows
}

// optimRun uploads the learning rates, fetches the table of lists and runs
// f; with dLRs non-nil it also reads the per-tensor η̄ back into dLRs.
func (b *Backend) optimRun(op string, lrs []float64, dLRs []float64, lists [][]*nn.Tensor,
	f func(tab *kernels.TensorTable, lrs, partials, dlr kernels.Array) error) error {
	if len(lrs) == 0 {
		return nil
	}
	s := b.scratch(op)
	defer s.free()
	tab, done, err := b.table(len(lists), b.optimRows(lists...))
	if err != nil {
		return wrap(op, err)
	}
	defer done()
	lrA, err := s.uploadF32(lrs)
	if err != nil {
		return err
	}
	var partials, dlr kernels.Array
	if dLRs != nil {
		if partials, err = s.alloc(runtime.F32, tab.Partials()); err != nil {
			return err
		}
		if dlr, err = s.alloc(runtime.F32, len(lrs)); err != nil {
			return err
		}
	}
	if err := f(tab, lrA, partials, dlr); err != nil {
		return wrap(op, err)
	}
	if dLRs == nil {
		return nil
	}
	v, err := b.downloadF32(dlr, len(lrs))
	if err != nil {
		return wrap(op, err)
	}
	copy(dLRs, v)
	return nil
}

func adamConfig(o nn.AdamW, t int) kernels.AdamWConfig {
	return kernels.AdamWConfig{Beta1: o.Beta1, Beta2: o.Beta2, Eps: o.Eps, WeightDecay: o.WeightDecay, Step: t}
}

// AdamWStep applies one torch-style AdamW step to every tensor in one
// multi-tensor launch (kernel adamw_step_f32; F32 tensors only).
func (b *Backend) AdamWStep(o nn.AdamW, t int, lrs []float64, params, grads, m, v []*nn.Tensor) error {
	const op = "adamw step"
	if err := b.lock(op); err != nil {
		return err
	}
	defer b.unlock()
	ck := b.newChecker(op)
	nn.CheckAdamWStep(ck, o, t, lrs, params, grads, m, v)
	f32Only(ck)
	if ck.Err() != nil {
		return ck.Err()
	}
	return b.optimRun(op, lrs, nil, [][]*nn.Tensor{params, grads, m, v}, func(tab *kernels.TensorTable, lr, _, _ kernels.Array) error {
		return kernels.AdamWStep(b.stream, tab, lr, adamConfig(o, t), kernels.Array{}, kernels.Array{})
	})
}

// AdamWStepVJP is the VJP of one AdamW step (kernel adamw_vjp_f32, η̄ summed
// per tensor in a fixed order; F32 tensors only).
func (b *Backend) AdamWStepVJP(o nn.AdamW, t int, lrs []float64, params, grads, m, v, dParams, dM, dV, dGrads []*nn.Tensor, dLRs []float64) error {
	const op = "adamw vjp"
	if err := b.lock(op); err != nil {
		return err
	}
	defer b.unlock()
	ck := b.newChecker(op)
	nn.CheckAdamWStepVJP(ck, o, t, lrs, params, grads, m, v, dParams, dM, dV, dGrads, dLRs)
	f32Only(ck)
	if ck.Err() != nil {
		return ck.Err()
	}
	lists := [][]*nn.Tensor{params, grads, m, v, dParams, dM, dV, dGrads}
	return b.optimRun(op, lrs, dLRs, lists, func(tab *kernels.TensorTable, lr, partials, dlr kernels.Array) error {
		return kernels.AdamWVJP(b.stream, tab, lr, adamConfig(o, t), partials, dlr)
	})
}

// SGDStep sets p ← p·(1−ηλ) − η·g for every tensor in one launch (kernel
// sgd_step_f32; F32 tensors only).
func (b *Backend) SGDStep(weightDecay float64, lrs []float64, params, grads []*nn.Tensor) error {
	const op = "sgd step"
	if err := b.lock(op); err != nil {
		return err
	}
	defer b.unlock()
	ck := b.newChecker(op)
	nn.CheckSGDStep(ck, weightDecay, lrs, params, grads)
	f32Only(ck)
	if ck.Err() != nil {
		return ck.Err()
	}
	return b.optimRun(op, lrs, nil, [][]*nn.Tensor{params, grads}, func(tab *kernels.TensorTable, lr, _, _ kernels.Array) error {
		return kernels.SGDStep(b.stream, tab, lr, weightDecay, kernels.Array{}, kernels.Array{})
	})
}

// SGDStepVJP is the VJP of SGDStep (kernel sgd_vjp_f32; F32 tensors only).
func (b *Backend) SGDStepVJP(weightDecay float64, lrs []float64, params, grads, dParams, dGrads []*nn.Tensor, dLRs []float64) error {
	const op = "sgd vjp"
	if err := b.lock(op); err != nil {
		return err
	}
	defer b.unlock()
	ck := b.newChecker(op)
	nn.CheckSGDStepVJP(ck, weightDecay, lrs, params, grads, dParams, dGrads, dLRs)
	f32Only(ck)
	if ck.Err() != nil {
		return ck.Err()
	}
	return b.optimRun(op, lrs, dLRs, [][]*nn.Tensor{params, grads, dParams, dGrads}, func(tab *kernels.TensorTable, lr, partials, dlr kernels.Array) error {
		return kernels.SGDVJP(b.stream, tab, lr, weightDecay, partials, dlr)
	})
}
