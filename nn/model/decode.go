package model

import (
	"fmt"
	"math"

	"github.com/perkgo/perk/nn"
	"github.com/perkgo/perk/runtime"
)

// CacheBackend is an optional extension of nn.Backend for incremental
// decoding with the key/value cache in the backend's own memory. A Decoder
// on a backend that implements it keeps every layer's keys and values in
// backend tensors and runs attention over them with AttentionDecode; on any
// other backend the cache lives in host memory and attention over it runs
// on the host (each appended token's q, k and v are copied to the host and
// the attention output back), which is exact and, for a host backend such
// as nn/cpu, free of copies that matter.
type CacheBackend interface {
	nn.Backend
	// WriteRows copies src [n, C] into rows [row, row+n) of dst [R, C]
	// (same dtype), leaving dst's other rows untouched.
	WriteRows(dst *nn.Tensor, row int, src *nn.Tensor) error
	// AttentionDecode computes causal softmax attention for n new tokens
	// at positions past … past+n−1: q [n,Hq,D] holds their queries; k and
	// v [R,Hkv,D] hold the keys and values of positions 0 … past+n−1 in
	// their first past+n rows (R ≥ past+n), with Hq a multiple of Hkv as
	// in AttentionForward. Query i attends to keys 0 … past+i; o [n,Hq,D]
	// receives the output. scale 0 means 1/√D.
	AttentionDecode(q, k, v *nn.Tensor, past int, scale float64, o *nn.Tensor) error
}

// Decoder runs a model incrementally over one sequence with a key/value
// cache: Prefill feeds a prompt, Step (or Append) feeds further tokens, and
// each returns the logits of the last position fed. It runs in evaluation
// mode (no LoRA dropout) and gives the logits of Model.Forward on the whole
// sequence up to rounding. The model's and the adapter's tensors must not
// change while a Decoder uses them. Use a Decoder from one goroutine and
// Release it when done.
type Decoder struct {
	m     *Model
	ad    *Adapter
	lins  [][]nn.LoRALinear
	e     *exec
	kv    kvStore
	n     int  // tokens in the cache
	fault bool // a failed call left the cache inconsistent
}

// NewDecoder returns a decoder for m with the LoRA adapter ad applied (nil
// for the base model).
func (m *Model) NewDecoder(ad *Adapter) (*Decoder, error) {
	if ad != nil {
		if err := ad.checkFor(m); err != nil {
			return nil, fmt.Errorf("decoder: %w", err)
		}
	}
	d := &Decoder{m: m, ad: ad, e: &exec{b: m.b, dt: m.dt}}
	d.lins = make([][]nn.LoRALinear, len(m.blocks))
	for i, blk := range m.blocks {
		for _, l := range blk.lin {
			ll := nn.LoRALinear{W: l.w, WInOut: l.inOut, Bias: l.bias}
			if ad != nil {
				if j, ok := ad.index[l.path]; ok {
					ll.A, ll.B, ll.Scale = ad.mods[j].a, ad.mods[j].b, ad.cfg.Scale()
				}
			}
			d.lins[i] = append(d.lins[i], ll)
		}
	}
	d.kv = d.newStore()
	return d, nil
}

func (d *Decoder) newStore() kvStore {
	c := d.m.cfg
	if cb, ok := d.m.b.(CacheBackend); ok {
		return &deviceKV{b: cb, dt: d.m.dt, layers: c.Layers, hkv: c.KVHeads, dh: c.HeadDim()}
	}
	if d.m.dt == runtime.F64 {
		return &hostKV[float64]{b: d.m.b, layers: c.Layers, hkv: c.KVHeads, hq: c.Heads, dh: c.HeadDim()}
	}
	return &hostKV[float32]{b: d.m.b, layers: c.Layers, hkv: c.KVHeads, hq: c.Heads, dh: c.HeadDim()}
}

// Len is the number of tokens in the cache.
func (d *Decoder) Len() int { return d.n }

// CacheBytes is the memory the key/value cache holds (host or backend).
func (d *Decoder) CacheBytes() int64 {
	if d.kv == nil {
		return 0
	}
	return d.kv.bytes()
}

// Stats reports the bytes the decoder has held: activations of the tokens
// being fed plus the key/value cache. PeakBytes covers every call since
// the decoder was made.
func (d *Decoder) Stats() MemStats { return MemStats{PeakBytes: d.e.peak, LiveBytes: d.e.live} }

// Reset empties the cache (freeing it), so the next Append starts a new
// sequence at position 0.
func (d *Decoder) Reset() {
	if d.kv != nil {
		d.e.live -= d.kv.bytes()
		d.kv.release()
	}
	d.kv = d.newStore()
	d.n, d.fault = 0, false
}

// Release frees the cache; the decoder must not be used after.
func (d *Decoder) Release() {
	if d.kv != nil {
		d.e.live -= d.kv.bytes()
		d.kv.release()
		d.kv = nil
	}
	d.n = 0
}

// Prefill starts a new sequence with the prompt ids and returns the
// logits [Vocab] of its last token.
func (d *Decoder) Prefill(ids []int32) ([]float64, error) {
	if d.kv == nil {
		return nil, fmt.Errorf("decoder: used after Release")
	}
	d.Reset()
	return d.Append(ids)
}

// Step feeds one token and returns the logits [Vocab] of its position.
func (d *Decoder) Step(id int32) ([]float64, error) { return d.Append([]int32{id}) }

// Append feeds tokens at positions Len() … Len()+len(ids)−1 (attending to
// the cached ones and causally among themselves) and returns the logits
// [Vocab] of the last. After an error the cache is inconsistent and every
// call fails until Prefill or Reset.
func (d *Decoder) Append(ids []int32) ([]float64, error) {
	m := d.m
	switch {
	case d.kv == nil:
		return nil, fmt.Errorf("decoder: used after Release")
	case d.fault:
		return nil, fmt.Errorf("decoder: a previous call failed; start again with Prefill")
	case len(ids) == 0:
		return nil, fmt.Errorf("decoder: no tokens to append")
	}
	for i, id := range ids {
		if id < 0 || int(id) >= m.cfg.Vocab {
			return nil, fmt.Errorf("decoder: token %d has id %d outside the vocabulary [0,%d)", i, id, m.cfg.Vocab)
		}
	}
	past, n := d.n, len(ids)
	if m.cfg.ModelType == GPT2 && past+n > m.cfg.MaxPositions {
		return nil, fmt.Errorf("decoder: %d tokens exceed GPT-2's %d positions", past+n, m.cfg.MaxPositions)
	}
	pos := make([]int32, n)
	for i := range pos {
		pos[i] = int32(past + i)
	}
	e, b, dm := d.e, m.b, m.cfg.Hidden
	e.err = nil
	x := e.alloc(n, dm)
	e.do("embedding forward", func() error {
		if m.cfg.ModelType == GPT2 {
			return b.EmbeddingForward(ids, m.wte, pos, m.wpe, x)
		}
		return b.EmbeddingForward(ids, m.wte, nil, nil, x)
	})
	for i := range m.blocks {
		out := e.alloc(n, dm)
		if m.cfg.ModelType == GPT2 {
			d.gpt2Block(i, x, out, pos, past)
		} else {
			d.qwenBlock(i, x, out, pos, past)
		}
		e.free(x)
		x = out
	}
	last, h := e.alloc(1, dm), e.alloc(1, dm)
	e.do("last position", func() error { return b.EmbeddingForward([]int32{int32(n - 1)}, x, nil, nil, last) })
	e.free(x)
	e.do("final norm", func() error {
		if m.cfg.ModelType == GPT2 {
			return b.LayerNormForward(last, m.normF, m.normFb, m.cfg.NormEps, h, nil, nil)
		}
		return b.RMSNormForward(last, m.normF, m.cfg.NormEps, h, nil)
	})
	logits := e.alloc(1, m.cfg.Vocab)
	e.do("lm head", func() error { return b.MatMul(false, true, 1, h, m.head, 0, logits) })
	var out []float64
	e.do("logits to host", func() error {
		host, err := b.ToHost(logits)
		if err != nil {
			return err
		}
		out, err = hostFloat64(host)
		return err
	})
	e.free(last, h, logits)
	if err := e.err; err != nil {
		e.err = nil
		d.fault = true
		return nil, fmt.Errorf("%s decode at position %d: %w", m.cfg.ModelType, past, err)
	}
	d.n += n
	return out, nil
}

// lin runs module j of block i (no dropout, nothing saved).
func (d *Decoder) lin(i, j int, x, y *nn.Tensor) {
	d.e.do(d.m.blocks[i].lin[j].path, func() error { return d.m.b.LoRALinearForward(d.lins[i][j], x, y, nil) })
}

// attention writes the new tokens' keys and values to the cache and sets o
// to their attention output. A fresh sequence runs the backend's packed
// attention over the new tokens themselves; a continuation attends to the
// cache.
func (d *Decoder) attention(i int, q, k, v, o *nn.Tensor, past int) {
	e := d.e
	pre := blockPrefix(d.m.cfg, i)
	if past == 0 {
		n, hq := q.Dim(0), q.Dim(1)
		lse := e.alloc(hq, n)
		e.do(pre+"attn", func() error {
			return d.m.b.AttentionForward(nn.Attention{CuSeqlens: []int32{0, int32(n)}, Causal: true}, q, k, v, o, lse)
		})
		e.free(lse)
	}
	e.do(pre+"kv cache write", func() error {
		added, err := d.kv.write(i, past, k, v)
		e.live += added
		e.peak = max(e.peak, e.live)
		return err
	})
	if past > 0 {
		e.do(pre+"cached attn", func() error { return d.kv.attend(i, q, past, o) })
	}
}

// gpt2Block runs GPT-2 block i over the new tokens x [n,d] into out.
func (d *Decoder) gpt2Block(i int, x, out *nn.Tensor, pos []int32, past int) {
	m, e, b, blk := d.m, d.e, d.m.b, &d.m.blocks[i]
	n, dm, H, D, I := x.Dim(0), m.cfg.Hidden, m.cfg.Heads, m.cfg.HeadDim(), m.cfg.Intermediate
	eps, pre := m.cfg.NormEps, blockPrefix(m.cfg, i)

	a1 := e.alloc(n, dm)
	e.do(pre+"ln_1", func() error { return b.LayerNormForward(x, blk.norm1, blk.norm1b, eps, a1, nil, nil) })
	qkv := e.alloc(n, 3*dm)
	d.lin(i, gpt2Attn, a1, qkv)
	e.free(a1)
	q, k, v := e.alloc(n, H, D), e.alloc(n, H, D), e.alloc(n, H, D)
	q2, k2, v2 := e.view(q, n, dm), e.view(k, n, dm), e.view(v, n, dm)
	e.do(pre+"attn split", func() error {
		if err := b.CopyColumns(q2, 0, qkv, 0, dm); err != nil {
			return err
		}
		if err := b.CopyColumns(k2, 0, qkv, dm, dm); err != nil {
			return err
		}
		return b.CopyColumns(v2, 0, qkv, 2*dm, dm)
	})
	e.free(qkv)
	o := e.alloc(n, H, D)
	d.attention(i, q, k, v, o, past)
	e.free(q, k, v)
	proj := e.alloc(n, dm)
	d.lin(i, gpt2AttnProj, e.view(o, n, dm), proj)
	e.free(o)
	x2 := e.alloc(n, dm)
	e.do(pre+"attn residual", func() error { return b.Add(x, proj, x2) })
	e.free(proj)

	a2 := e.alloc(n, dm)
	e.do(pre+"ln_2", func() error { return b.LayerNormForward(x2, blk.norm2, blk.norm2b, eps, a2, nil, nil) })
	f := e.alloc(n, I)
	d.lin(i, gpt2FC, a2, f)
	e.free(a2)
	e.do(pre+"mlp gelu", func() error { return b.GELUForward(f, f) })
	mo := e.alloc(n, dm)
	d.lin(i, gpt2MLPProj, f, mo)
	e.free(f)
	e.do(pre+"mlp residual", func() error { return b.Add(x2, mo, out) })
	e.free(x2, mo)
}

// qwenBlock runs Qwen2 block i over the new tokens x [n,d] into out.
func (d *Decoder) qwenBlock(i int, x, out *nn.Tensor, pos []int32, past int) {
	m, e, b, blk := d.m, d.e, d.m.b, &d.m.blocks[i]
	n, dm, Hq, Hkv, D, I := x.Dim(0), m.cfg.Hidden, m.cfg.Heads, m.cfg.KVHeads, m.cfg.HeadDim(), m.cfg.Intermediate
	eps, theta, pre := m.cfg.NormEps, m.cfg.RopeTheta, blockPrefix(m.cfg, i)

	a1 := e.alloc(n, dm)
	e.do(pre+"input_layernorm", func() error { return b.RMSNormForward(x, blk.norm1, eps, a1, nil) })
	q, k, v := e.alloc(n, Hq, D), e.alloc(n, Hkv, D), e.alloc(n, Hkv, D)
	d.lin(i, qwenQ, a1, e.view(q, n, Hq*D))
	d.lin(i, qwenK, a1, e.view(k, n, Hkv*D))
	d.lin(i, qwenV, a1, e.view(v, n, Hkv*D))
	e.free(a1)
	e.do(pre+"rope", func() error {
		if err := b.RoPEForward(q, pos, theta, q); err != nil {
			return err
		}
		return b.RoPEForward(k, pos, theta, k)
	})
	o := e.alloc(n, Hq, D)
	d.attention(i, q, k, v, o, past)
	e.free(q, k, v)
	ao := e.alloc(n, dm)
	d.lin(i, qwenO, e.view(o, n, Hq*D), ao)
	e.free(o)
	x2 := e.alloc(n, dm)
	e.do(pre+"attn residual", func() error { return b.Add(x, ao, x2) })
	e.free(ao)

	a2 := e.alloc(n, dm)
	e.do(pre+"post_attention_layernorm", func() error { return b.RMSNormForward(x2, blk.norm2, eps, a2, nil) })
	gate, up := e.alloc(n, I), e.alloc(n, I)
	d.lin(i, qwenGate, a2, gate)
	d.lin(i, qwenUp, a2, up)
	e.free(a2)
	e.do(pre+"mlp swiglu", func() error { return b.SwiGLUForward(gate, up, gate) })
	e.free(up)
	mo := e.alloc(n, dm)
	d.lin(i, qwenDown, gate, mo)
	e.free(gate)
	e.do(pre+"mlp residual", func() error { return b.Add(x2, mo, out) })
	e.free(x2, mo)
}

// kvStore is a decoder's key/value cache.
type kvStore interface {
	// write stores the keys and values k, v [n,Hkv,D] (backend tensors)
	// of the tokens at positions past … past+n−1 of layer i and returns
	// the bytes the cache grew by.
	write(i, past int, k, v *nn.Tensor) (int64, error)
	// attend sets o [n,Hq,D] to the causal attention of the queries q
	// [n,Hq,D] of positions past … past+n−1 over the cache of layer i.
	attend(i int, q *nn.Tensor, past int, o *nn.Tensor) error
	// bytes is the memory the cache holds.
	bytes() int64
	// release frees the cache.
	release()
}

// hostKV keeps the cache in host memory, rows [pos, Hkv·D] per layer in
// the model's precision (T is float32 or float64), and computes attention
// over it on the host in float64 (as nn/cpu does), rounding the output once
// to the model's precision.
type hostKV[T float32 | float64] struct {
	b           nn.Backend
	layers      int
	hkv, hq, dh int
	k, v        [][]T
	nbytes      int64
}

// hostValues returns the elements of a host tensor of element type T.
func hostValues[T float32 | float64](t *nn.Tensor) ([]T, error) {
	if v, ok := any(t.Storage()).(nn.HostF64); ok {
		if out, ok := any([]float64(v)).([]T); ok {
			return out, nil
		}
	}
	if v, ok := any(t.Storage()).(nn.HostF32); ok {
		if out, ok := any([]float32(v)).([]T); ok {
			return out, nil
		}
	}
	return nil, fmt.Errorf("kv cache: %v is not a host tensor of the cache's precision", t)
}

func (c *hostKV[T]) write(i, past int, k, v *nn.Tensor) (int64, error) {
	if c.k == nil {
		c.k, c.v = make([][]T, c.layers), make([][]T, c.layers)
	}
	row := c.hkv * c.dh
	if len(c.k[i]) != past*row {
		return 0, fmt.Errorf("kv cache of layer %d holds %d positions, the append starts at %d", i, len(c.k[i])/row, past)
	}
	var grown int64
	var zero T
	for _, p := range []struct {
		dst *[]T
		src *nn.Tensor
	}{{&c.k[i], k}, {&c.v[i], v}} {
		h, err := c.b.ToHost(p.src)
		if err != nil {
			return grown, err
		}
		vals, err := hostValues[T](h)
		if err != nil {
			return grown, err
		}
		*p.dst = append(*p.dst, vals...)
		grown += int64(len(vals)) * int64(elemSize(zero))
	}
	c.nbytes += grown
	return grown, nil
}

// elemSize is the byte size of a float32 or float64.
func elemSize[T float32 | float64](x T) int {
	if _, ok := any(x).(float32); ok {
		return 4
	}
	return 8
}

func (c *hostKV[T]) attend(i int, q *nn.Tensor, past int, o *nn.Tensor) error {
	hq, err := c.b.ToHost(q)
	if err != nil {
		return err
	}
	qv, err := hostFloat64(hq)
	if err != nil {
		return err
	}
	n, D, Hq, Hkv := q.Dim(0), c.dh, c.hq, c.hkv
	if len(c.k[i]) < (past+n)*Hkv*D {
		return fmt.Errorf("kv cache of layer %d holds %d positions, attention needs %d", i, len(c.k[i])/(Hkv*D), past+n)
	}
	out := make([]float64, n*Hq*D)
	attendHost(qv, c.k[i], c.v[i], out, n, past, Hq, Hkv, D, 1/math.Sqrt(float64(D)))
	ht, err := nn.FromF64(out, n, Hq, D)
	if err != nil {
		return err
	}
	dev, err := c.b.FromHost(ht, o.DType())
	if err != nil {
		return err
	}
	defer c.b.Release(dev)
	return c.b.Copy(o, dev)
}

func (c *hostKV[T]) bytes() int64 { return c.nbytes }

func (c *hostKV[T]) release() { c.k, c.v, c.nbytes = nil, nil, 0 }

// attendHost computes causal attention of n queries q [n,Hq,D] at
// positions past … past+n−1 over keys and values [past+n, Hkv, D] into out
// [n,Hq,D] (zero on entry), with a max-subtracted softmax in float64.
func attendHost[T float32 | float64](q []float64, k, v []T, out []float64, n, past, Hq, Hkv, D int, scale float64) {
	group := Hq / Hkv
	p := make([]float64, past+n)
	for t := 0; t < n; t++ {
		end := past + t + 1
		for h := 0; h < Hq; h++ {
			g := h / group
			qr := q[(t*Hq+h)*D:][:D]
			mx := math.Inf(-1)
			for j := 0; j < end; j++ {
				kr := k[(j*Hkv+g)*D:][:D]
				s := 0.0
				for c := range qr {
					s += qr[c] * float64(kr[c])
				}
				p[j] = s * scale
				mx = max(mx, p[j])
			}
			sum := 0.0
			for j := 0; j < end; j++ {
				p[j] = math.Exp(p[j] - mx)
				sum += p[j]
			}
			or := out[(t*Hq+h)*D:][:D]
			for j := 0; j < end; j++ {
				w := p[j] / sum
				vr := v[(j*Hkv+g)*D:][:D]
				for c := range or {
					or[c] += w * float64(vr[c])
				}
			}
		}
	}
}

// deviceKV keeps the cache in backend tensors [capacity, Hkv, D] per layer
// on a CacheBackend, doubling the capacity when full.
type deviceKV struct {
	b       CacheBackend
	dt      runtime.DType
	layers  int
	hkv, dh int
	cap     int
	k, v    []*nn.Tensor
}

func (c *deviceKV) write(i, past int, k, v *nn.Tensor) (int64, error) {
	n := k.Dim(0)
	var grown int64
	if past+n > c.cap {
		// Grow every layer at once (at layer 0, the first write of an
		// append), keeping the rows written so far.
		newCap := max(2*c.cap, past+n, 16)
		dt := k.DType()
		for l := 0; l < c.layers; l++ {
			for _, pp := range []*[]*nn.Tensor{&c.k, &c.v} {
				if *pp == nil {
					*pp = make([]*nn.Tensor, c.layers)
				}
				t, err := c.b.Alloc(dt, newCap, c.hkv, c.dh)
				if err != nil {
					return grown, fmt.Errorf("growing the kv cache to %d positions: %w", newCap, err)
				}
				if old := (*pp)[l]; old != nil {
					if err := c.copyRows(t, 0, old); err != nil {
						return grown, err
					}
					_ = c.b.Release(old)
				}
				(*pp)[l] = t
			}
		}
		grown = int64(2*c.layers*(newCap-c.cap)*c.hkv*c.dh) * int64(c.dt.Size())
		c.cap = newCap
	}
	if err := c.copyRows(c.k[i], past, k); err != nil {
		return grown, err
	}
	return grown, c.copyRows(c.v[i], past, v)
}

// copyRows writes src [n,Hkv,D] into rows [row, row+n) of dst.
func (c *deviceKV) copyRows(dst *nn.Tensor, row int, src *nn.Tensor) error {
	C := c.hkv * c.dh
	d2, err := dst.Reshape(dst.Dim(0), C)
	if err != nil {
		return err
	}
	s2, err := src.Reshape(src.Dim(0), C)
	if err != nil {
		return err
	}
	return c.b.WriteRows(d2, row, s2)
}

func (c *deviceKV) attend(i int, q *nn.Tensor, past int, o *nn.Tensor) error {
	return c.b.AttentionDecode(q, c.k[i], c.v[i], past, 0, o)
}

func (c *deviceKV) bytes() int64 {
	return int64(2*c.layers*c.cap*c.hkv*c.dh) * int64(c.dt.Size())
}

func (c *deviceKV) release() {
	for _, ts := range [][]*nn.Tensor{c.k, c.v} {
		for _, t := range ts {
			if t != nil {
				_ = c.b.Release(t)
			}
		}
	}
	c.k, c.v, c.cap = nil, nil, 0
}

// hostFloat64 returns a host tensor's values as float64 (a copy for F32).
func hostFloat64(t *nn.Tensor) ([]float64, error) {
	if v, err := t.F64(); err == nil {
		return append([]float64(nil), v...), nil
	}
	v, err := t.F32()
	if err != nil {
		return nil, err
	}
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = float64(x)
	}
	return out, nil
}
