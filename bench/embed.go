package bench

import (
	"fmt"
	"math"

	"github.com/perkgo/perk/kernels"
	"github.com/perkgo/perk/runtime"
)

// Embed times the embedding gather y[t] = table[id_t] (+ pos[position_t]
// with GPT-2's learned position table when the shapes have one;
// kernels.EmbedForward) and its deterministic backward, dTable (and dPos)
// += the rows of dy grouped by id (kernels.EmbedBackward), over uniformly
// random token ids, for each storage type (f32, bf16).
//
// Bytes: forward (1 + tables)·N·d·e + 4·N per id list (e = element size);
// backward, per table, N·d·e (dy) + 2·U·d·e (read and write each of the U
// distinct rows) + 4·(2N + 2U) (the grouped id lists). Peer: D2D copy
// bandwidth over the same bytes in the same run (Ratio = GB/s ÷ copy GB/s;
// perf-anchors.md §6 targets ≥ 0.8 on large working sets).
//
// Checked: y on CheckRows rows (relative to |table|+|pos|), dTable and dPos
// on the rows of the sampled tokens' ids plus one id no token has (relative
// to Σ|dy|).
func Embed(dev runtime.Device, o Options) ([]Result, error) {
	return suiteRun(dev, o, 13, func(r *run) {
		for _, t := range r.sh.dtypes(runtime.F32, runtime.BF16) {
			r.embed(t)
		}
	})
}

func (r *run) embed(t runtime.DType) {
	m := r.mark()
	defer r.release(m)
	n, d, v, P := r.sh.Tokens, r.sh.Hidden, r.sh.Vocab, r.sh.MaxPos
	ids := make([]int32, n)
	seen := map[int32]bool{}
	for i := range ids {
		ids[i] = int32(r.rng.IntN(v))
		seen[ids[i]] = true
	}
	idsDev, err := kernels.NewEmbedIDs(r.dev, ids)
	r.must(err)
	r.onRelease(idsDev.Free)
	table, ht := r.random(t, signed, v, d)
	var posIDs *kernels.EmbedIDs
	var pos, dPos kernels.Array
	var hp host
	positions := r.sh.positions()
	if P > 0 {
		posIDs, err = kernels.NewEmbedIDs(r.dev, positions)
		r.must(err)
		r.onRelease(posIDs.Free)
		pos, hp = r.random(t, signed, P, d)
		dPos = r.zeros(t, P, d)
	}
	y := r.alloc(t, n, d)
	dy, hdy := r.random(t, signed, n, d)
	dTable := r.zeros(t, v, d)
	fwd := func() error { return kernels.EmbedForward(0, idsDev, table, posIDs, pos, y) }
	bwd := func() error { return kernels.EmbedBackward(0, idsDev, posIDs, dy, dTable, dPos) }

	r.must(fwd())
	rows := r.sample(n)
	got := r.rows(y, d, rows)
	var ef, eb errMax
	for k, i := range rows {
		for j := range d {
			a := ht.at(int(ids[i])*d + j)
			want, sc := a, math.Abs(a)
			if P > 0 {
				b := hp.at(int(positions[i])*d + j)
				want, sc = a+b, sc+math.Abs(b)
			}
			ef.add(got[k][j], want, sc)
		}
	}

	r.must(bwd())
	// The rows of the sampled tokens' ids, and one id that no token has.
	checkIDs := map[int]bool{}
	for _, i := range rows {
		checkIDs[int(ids[i])] = true
	}
	for u := range v {
		if !seen[int32(u)] {
			checkIDs[u] = true
			break
		}
	}
	check := func(dst kernels.Array, key []int32, want map[int]bool) {
		var idx []int
		at := map[int]int{}
		for u := range want {
			at[u] = len(idx)
			idx = append(idx, u)
		}
		sum, abs := make([][]float64, len(idx)), make([][]float64, len(idx))
		for k := range idx {
			sum[k], abs[k] = make([]float64, d), make([]float64, d)
		}
		for tk, id := range key {
			k, ok := at[int(id)]
			if !ok {
				continue
			}
			for j := range d {
				x := hdy.at(tk*d + j)
				sum[k][j] += x
				abs[k][j] += math.Abs(x)
			}
		}
		gotRows := r.rows(dst, d, idx)
		for k := range idx {
			for j := range d {
				eb.add(gotRows[k][j], sum[k][j], abs[k][j])
			}
		}
	}
	check(dTable, ids, checkIDs)
	if P > 0 {
		checkPos := map[int]bool{}
		for _, i := range rows {
			checkPos[int(positions[i])] = true
		}
		check(dPos, positions, checkPos)
	}

	e := float64(t.Size())
	tables := 1.0
	if P > 0 {
		tables = 2
	}
	fwdBytes := (1+tables)*float64(n*d)*e + 4*tables*float64(n)
	bwdBytes := 0.0
	for _, u := range []int{len(seen), min(P, r.sh.SeqLen, n)} {
		if u == 0 {
			continue
		}
		bwdBytes += float64(n*d)*e + 2*float64(u*d)*e + 4*float64(2*n+2*u)
	}
	name := func(k string) string {
		s := fmt.Sprintf("embed_%s_%s N%d V%d d%d", k, dtName(t), n, v, d)
		if P > 0 {
			s += fmt.Sprintf(" +pos%d", P)
		}
		return s
	}
	tol := Tolerance(t)
	r.add(r.withCopyPeer(r.bytesResult(name("fwd"), r.time(name("fwd"), fwd), fwdBytes, ef, tol)))
	r.add(r.withCopyPeer(r.bytesResult(name("bwd"), r.time(name("bwd"), bwd), bwdBytes, eb, tol)))
}
