package cpu

import (
	"github.com/perkgo/perk/nn"
	"github.com/perkgo/perk/runtime"
)

// EmbeddingForward gathers y[t] = table[ids[t]] (+ pos[positions[t]]).
func (*Backend) EmbeddingForward(ids []int32, table *nn.Tensor, positions []int32, pos *nn.Tensor, y *nn.Tensor) error {
	ck := newChecker("embedding fwd")
	_, d := nn.CheckEmbeddingForward(ck, ids, table, positions, pos, y)
	if ck.Err() != nil {
		return ck.Err()
	}
	if table.DType() == runtime.F32 {
		embeddingForward(ids, data[float32](table), positions, data[float32](pos), data[float32](y), d)
	} else {
		embeddingForward(ids, data[float64](table), positions, data[float64](pos), data[float64](y), d)
	}
	return nil
}

func embeddingForward[T Float](ids []int32, table []T, positions []int32, pos, y []T, d int) {
	parallelFor(len(ids), rowGrain(d), func(lo, hi int) {
		for t := lo; t < hi; t++ {
			yr := y[t*d : (t+1)*d]
			copy(yr, table[int(ids[t])*d:])
			if pos != nil {
				pr := pos[int(positions[t])*d:]
				for i := range yr {
					yr[i] += pr[i]
				}
			}
		}
	})
}

// EmbeddingBackward adds dy's rows into dTable (and dPos) at their ids. The
// tokens of each id are summed in token order in float64 before one add into
// the table row, so the result is deterministic.
func (*Backend) EmbeddingBackward(ids []int32, positions []int32, dy, dTable, dPos *nn.Tensor) error {
	ck := newChecker("embedding bwd")
	d := nn.CheckEmbeddingBackward(ck, ids, positions, dy, dTable, dPos)
	if ck.Err() != nil {
		return ck.Err()
	}
	if dy.DType() == runtime.F32 {
		if dTable != nil {
			scatterAdd(ids, data[float32](dy), data[float32](dTable), dTable.Dim(0), d)
		}
		if dPos != nil {
			scatterAdd(positions, data[float32](dy), data[float32](dPos), dPos.Dim(0), d)
		}
	} else {
		if dTable != nil {
			scatterAdd(ids, data[float64](dy), data[float64](dTable), dTable.Dim(0), d)
		}
		if dPos != nil {
			scatterAdd(positions, data[float64](dy), data[float64](dPos), dPos.Dim(0), d)
		}
	}
	return nil
}

// scatterAdd adds dy[t] into dst[ids[t]] for every t. Tokens are grouped by
// id with a stable counting sort; each distinct id is one task.
func scatterAdd[T Float](ids []int32, dy, dst []T, rows, d int) {
	start := make([]int, rows+1)
	for _, id := range ids {
		start[id+1]++
	}
	for i := 0; i < rows; i++ {
		start[i+1] += start[i]
	}
	order := make([]int, len(ids))
	fill := append([]int(nil), start[:rows]...)
	for t, id := range ids {
		order[fill[id]] = t
		fill[id]++
	}
	var used []int32
	for id := 0; id < rows; id++ {
		if start[id+1] > start[id] {
			used = append(used, int32(id))
		}
	}
	parallelFor(len(used), max(1, rowGrain(d)/4), func(lo, hi int) {
		acc := make([]float64, d)
		for _, id := range used[lo:hi] {
			clear(acc)
			for _, t := range order[start[id]:start[id+1]] {
				for i, v := range dy[t*d : (t+1)*d] {
					acc[i] += float64(v)
				}
			}
			row := dst[int(id)*d : (int(id)+1)*d]
			for i, v := range acc {
				row[i] = T(float64(row[i]) + v)
			}
		}
	})
}
