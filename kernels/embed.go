package kernels

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"math"
	"slices"

	"github.com/perkgo/perk/runtime"
)

var embedFamily = newFamily("embed",
	"embed_fwd_f32", "embed_fwd_bf16", "embed_fwd_f16",
	"embed_bwd_f32", "embed_bwd_bf16", "embed_bwd_f16")

const (
	embedThreads = 256
	embedWarps   = embedThreads / 32
)

// EmbedIDs is a list of row ids — token ids, or the per-token positions of
// GPT-2's learned position table (restarting at 0 in each packed segment) —
// checked and grouped once on the host and uploaded to a device. It holds the
// ids in token order (for the gather) and, for the deterministic backward,
// the token indices stably sorted by id together with each distinct id's
// range in that order. Free releases it.
type EmbedIDs struct {
	dev         runtime.Device
	n, nuniq    int
	max, argmax int
	buf         runtime.DevicePtr // I32: ids [n] | order [n] | uniq [nuniq] | start [nuniq+1]
}

// NewEmbedIDs checks that every id is ≥ 0, groups the tokens by id (a stable
// sort, so tokens keep their order within a group) and uploads the result to
// dev. Whether the ids fit a table is checked by each launch.
func NewEmbedIDs(dev runtime.Device, ids []int32) (*EmbedIDs, error) {
	if dev == nil {
		return nil, fmt.Errorf("embed ids: nil device")
	}
	n := len(ids)
	if 2*n+1 >= math.MaxInt32 {
		return nil, fmt.Errorf("embed ids: %d ids exceed the kernels' index range", n)
	}
	x := &EmbedIDs{dev: dev, n: n, max: -1, argmax: -1}
	for i, id := range ids {
		if id < 0 {
			return nil, fmt.Errorf("embed ids: ids[%d] = %d is negative", i, id)
		}
		if int(id) > x.max {
			x.max, x.argmax = int(id), i
		}
	}
	order := make([]int32, n)
	for i := range order {
		order[i] = int32(i)
	}
	slices.SortStableFunc(order, func(a, b int32) int { return cmp.Compare(ids[a], ids[b]) })
	var uniq, start []int32
	for s, t := range order {
		if s == 0 || ids[t] != ids[order[s-1]] {
			uniq = append(uniq, ids[t])
			start = append(start, int32(s))
		}
	}
	start = append(start, int32(n))
	x.nuniq = len(uniq)
	words := make([]int32, 0, 2*n+2*len(uniq)+1)
	words = append(append(append(append(words, ids...), order...), uniq...), start...)
	b := make([]byte, 4*len(words))
	for i, w := range words {
		binary.LittleEndian.PutUint32(b[4*i:], uint32(w))
	}
	p, err := dev.Alloc(len(b))
	if err != nil {
		return nil, fmt.Errorf("embed ids: %w", err)
	}
	if err := dev.MemcpyHtoD(p, b, 0); err != nil {
		_ = dev.Free(p)
		return nil, fmt.Errorf("embed ids: %w", err)
	}
	x.buf = p
	return x, nil
}

// Free releases the device copy.
func (x *EmbedIDs) Free() error { return x.dev.Free(x.buf) }

// Len is the number of ids (tokens).
func (x *EmbedIDs) Len() int { return x.n }

// Max is the largest id, or −1 when there are none.
func (x *EmbedIDs) Max() int { return x.max }

// IDs returns the ids in token order as an I32 [Len] device array (a view;
// it lives as long as x).
func (x *EmbedIDs) IDs() Array {
	return Array{Dev: x.dev, Ptr: x.buf, DType: runtime.I32, Shape: []int{x.n}}
}

func (x *EmbedIDs) word(i int) uint64 { return runtime.PtrParam(x.buf.Add(4 * i)) }

// check checks that the ids (argument name) are on dev, number n (when n ≥ 0)
// and index a table of rows rows.
func (x *EmbedIDs) check(k, name string, dev runtime.Device, n, rows int) error {
	if x == nil {
		return fmt.Errorf("%s: argument %s is nil", k, name)
	}
	if x.dev != dev {
		return fmt.Errorf("%s: argument %s is on %s, want %s", k, name, x.dev.Name(), dev.Name())
	}
	if n >= 0 && x.n != n {
		return fmt.Errorf("%s: argument %s has %d ids, want %d", k, name, x.n, n)
	}
	if x.max >= rows {
		return fmt.Errorf("%s: argument %s has %s[%d] = %d outside [0,%d)", k, name, name, x.argmax, x.max, rows)
	}
	return nil
}

func embedHas(a Array) bool { return a.Dev != nil || a.Ptr != 0 }

// embedCheckMatrix checks that a is on dev, of dtype dt and shape [rows,d]
// (rows < 0: any number of rows) and returns its row count.
func embedCheckMatrix(k, name string, dev runtime.Device, a Array, dt runtime.DType, rows, d int) (int, error) {
	if err := checkDev(k, dev, arg(name, a)); err != nil {
		return 0, err
	}
	if err := checkDType(k, name, a, dt); err != nil {
		return 0, err
	}
	if len(a.Shape) != 2 || (rows >= 0 && a.Shape[0] != rows) || a.Shape[1] != d {
		want := fmt.Sprintf("[%d,%d]", rows, d)
		if rows < 0 {
			want = fmt.Sprintf("[rows,%d]", d)
		}
		return 0, fmt.Errorf("%s: argument %s has shape %v, want %s", k, name, a.Shape, want)
	}
	return a.Shape[0], nil
}

func embedLaunch(dev runtime.Device, s runtime.Stream, name string, items int, params ...uint64) error {
	fn, err := function(dev, embedFamily, name)
	if err != nil {
		return err
	}
	if items == 0 {
		return nil
	}
	if err := dev.Launch(fn, runtime.D1((items+embedWarps-1)/embedWarps), runtime.D1(embedThreads), 0, s, params); err != nil {
		return fmt.Errorf("launch %s: %w", name, err)
	}
	return nil
}

// EmbedForward gathers y[t] = table[ids[t]] (+ pos[positions[t]] when pos,
// GPT-2's learned position table [P,d], is not the zero Array) into y [T,d],
// T = ids.Len(). table, pos and y share one storage type (F32, BF16 or F16);
// the position add is done in f32 and rounded once. positions is ignored
// without pos.
func EmbedForward(s runtime.Stream, ids *EmbedIDs, table Array, positions *EmbedIDs, pos Array, y Array) error {
	const k = "embed_fwd"
	dev := table.Dev
	if err := checkDev(k, dev, arg("table", table)); err != nil {
		return err
	}
	if err := checkDType(k, "table", table, runtime.F32, runtime.BF16, runtime.F16); err != nil {
		return err
	}
	if len(table.Shape) != 2 {
		return fmt.Errorf("%s: argument table has shape %v, want [V,d]", k, table.Shape)
	}
	v, d := table.Shape[0], table.Shape[1]
	if err := ids.check(k, "ids", dev, -1, v); err != nil {
		return err
	}
	n := ids.Len()
	if _, err := embedCheckMatrix(k, "y", dev, y, table.DType, n, d); err != nil {
		return err
	}
	var posPtr, positionsPtr uint64
	if embedHas(pos) {
		p, err := embedCheckMatrix(k, "pos", dev, pos, table.DType, -1, d)
		if err != nil {
			return err
		}
		if err := positions.check(k, "positions", dev, n, p); err != nil {
			return err
		}
		posPtr, positionsPtr = runtime.PtrParam(pos.Ptr), positions.word(0)
	}
	if d == 0 {
		return nil
	}
	return embedLaunch(dev, s, "embed_fwd_"+suffix(table.DType), n,
		ids.word(0), runtime.PtrParam(table.Ptr), positionsPtr, posPtr,
		runtime.I64Param(n), runtime.I64Param(d), runtime.PtrParam(y.Ptr))
}

// EmbedBackward adds the rows of dy [T,d] (T = ids.Len()) into dTable [V,d]
// at their ids and, when dPos is not the zero Array, into dPos [P,d] at
// their positions; both are accumulated (+=) and either may be the zero
// Array. The tokens of each id are summed in token order in f32 and added to
// the row once, so the result is deterministic. dy, dTable and dPos share one
// storage type (F32, BF16 or F16).
func EmbedBackward(s runtime.Stream, ids, positions *EmbedIDs, dy, dTable, dPos Array) error {
	const k = "embed_bwd"
	dev := dy.Dev
	if err := checkDev(k, dev, arg("dy", dy)); err != nil {
		return err
	}
	if err := checkDType(k, "dy", dy, runtime.F32, runtime.BF16, runtime.F16); err != nil {
		return err
	}
	if len(dy.Shape) != 2 {
		return fmt.Errorf("%s: argument dy has shape %v, want [T,d]", k, dy.Shape)
	}
	n, d := dy.Shape[0], dy.Shape[1]
	type target struct {
		ids *EmbedIDs
		dst Array
	}
	var work []target
	for _, o := range []struct {
		name, idsName string
		ids           *EmbedIDs
		dst           Array
	}{{"dTable", "ids", ids, dTable}, {"dPos", "positions", positions, dPos}} {
		if !embedHas(o.dst) {
			continue
		}
		rows, err := embedCheckMatrix(k, o.name, dev, o.dst, dy.DType, -1, d)
		if err != nil {
			return err
		}
		if err := o.ids.check(k, o.idsName, dev, n, rows); err != nil {
			return err
		}
		work = append(work, target{o.ids, o.dst})
	}
	if d == 0 {
		return nil
	}
	name := "embed_bwd_" + suffix(dy.DType)
	for _, w := range work {
		x := w.ids
		if err := embedLaunch(dev, s, name, x.nuniq,
			x.word(x.n), x.word(2*x.n), x.word(2*x.n+x.nuniq), runtime.I64Param(x.nuniq),
			runtime.PtrParam(dy.Ptr), runtime.I64Param(d), runtime.PtrParam(w.dst.Ptr)); err != nil {
			return err
		}
	}
	return nil
}
