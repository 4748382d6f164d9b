package safetensors

import (
	"bytes"
	"encoding/binary"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/perkgo/perk/runtime"
)

// specials are float values every conversion test includes.
var specials = []float64{
	0, math.Copysign(0, -1), 1, -1, 0.1, -2.5, 1e-3, 65504, 65520, -65520, 70000,
	6.1e-5, 5.96e-8, 2.98e-8, 1e-10, 1e30, 3.4e38, -3.4e38, 1e39, 1e-40, 1e-45,
	math.Inf(1), math.Inf(-1), math.NaN(), math.Pi, math.E, 1.00390625, 1.0078125,
	1.01171875, 1 + 1.0/512, 1 + 3.0/512,
}

func randomValues(r *rand.Rand, n int) []float64 {
	out := slices.Clone(specials)
	for len(out) < n {
		switch r.IntN(3) {
		case 0:
			out = append(out, r.NormFloat64())
		case 1:
			out = append(out, r.NormFloat64()*math.Pow(2, float64(r.IntN(80)-40)))
		default:
			out = append(out, float64(math.Float32frombits(r.Uint32())))
		}
	}
	return out[:n]
}

func toF32(v []float64) []float32 {
	out := make([]float32, len(v))
	for i, x := range v {
		out[i] = float32(x)
	}
	return out
}

// sameFloat compares values bit-for-bit, treating all NaNs as equal.
func sameFloat64(a, b float64) bool {
	if math.IsNaN(a) || math.IsNaN(b) {
		return math.IsNaN(a) && math.IsNaN(b)
	}
	return math.Float64bits(a) == math.Float64bits(b)
}

// expected64 is what a value should read back as after storing it as t.
func expected64(x float64, t runtime.DType) float64 {
	switch t {
	case runtime.F32:
		return float64(float32(x))
	case runtime.F16:
		return float64(F16ToF32(F64ToF16(x)))
	case runtime.BF16:
		return float64(BF16ToF32(F64ToBF16(x)))
	}
	return x
}

func TestRoundTripFloatDTypes(t *testing.T) {
	dir := t.TempDir()
	r := rand.New(rand.NewPCG(1, 2))
	vals := randomValues(r, 600)
	for _, dt := range []runtime.DType{runtime.F32, runtime.F16, runtime.BF16, runtime.F64} {
		for _, src := range []string{"f32", "f64"} {
			t.Run(dt.String()+"_from_"+src, func(t *testing.T) {
				tensor := Tensor{Name: "w", DType: dt, Shape: []int{20, 30}}
				want := make([]float64, len(vals))
				if src == "f32" {
					tensor.F32 = toF32(vals)
					for i, v := range tensor.F32 {
						want[i] = expected64(float64(v), dt)
					}
				} else {
					tensor.F64 = vals
					for i, v := range vals {
						want[i] = expected64(v, dt)
					}
				}
				path := filepath.Join(dir, dt.String()+src+".safetensors")
				require.NoError(t, Write(path, []Tensor{tensor, {Name: "scalar", DType: dt, F32: []float32{3}}}, nil))
				f, err := Open(path)
				require.NoError(t, err)
				defer f.Close()
				info, err := f.Info("w")
				require.NoError(t, err)
				require.Equal(t, dt.String(), info.DType)
				require.Equal(t, []int{20, 30}, info.Shape)
				require.Equal(t, int64(600*dt.Size()), info.Size())
				got64, err := f.Float64s("w")
				require.NoError(t, err)
				got32, err := f.Float32s("w")
				require.NoError(t, err)
				for i := range want {
					require.True(t, sameFloat64(got64[i], want[i]),
						"element %d (%g): read %g as float64, want %g", i, vals[i], got64[i], want[i])
					require.True(t, sameFloat64(float64(got32[i]), float64(float32(want[i]))),
						"element %d (%g): read %g as float32, want %g", i, vals[i], got32[i], float32(want[i]))
				}
				s, err := f.Float32s("scalar")
				require.NoError(t, err)
				require.Equal(t, []float32{3}, s)
				si, _ := f.Info("scalar")
				require.Empty(t, si.Shape)
				require.Equal(t, int64(1), si.NumElements())
				ft, ok := si.Float()
				require.True(t, ok)
				require.Equal(t, dt, ft)
			})
		}
	}
}

func TestRoundTripRawDTypes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "raw.safetensors")
	r := rand.New(rand.NewPCG(3, 4))
	random := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		return b
	}
	tensors := []Tensor{
		{Name: "ids", RawDType: "I64", Shape: []int{3}, Raw: random(24)},
		{Name: "pos", RawDType: "I32", Shape: []int{2, 2}, Raw: random(16)},
		{Name: "bytes", RawDType: "U8", Shape: []int{5}, Raw: random(5)},
		{Name: "mask", RawDType: "BOOL", Shape: []int{2, 3}, Raw: []byte{0, 1, 1, 0, 1, 0}},
		{Name: "fp8", RawDType: "F8_E4M3", Shape: []int{4}, Raw: random(4)},
		{Name: "fp4", RawDType: "F4", Shape: []int{2, 2}, Raw: random(2)},
		{Name: "bf16raw", RawDType: "BF16", Shape: []int{2}, Raw: []byte{0x80, 0x3f, 0x00, 0xc0}},
		{Name: "empty", RawDType: "U64", Shape: []int{0, 7}},
		{Name: "f", DType: runtime.F32, Shape: []int{2}, F32: []float32{1, 2}},
	}
	require.NoError(t, Write(path, tensors, map[string]string{"format": "pt"}))
	f, err := Open(path)
	require.NoError(t, err)
	defer f.Close()
	require.Equal(t, []string{"bf16raw", "bytes", "empty", "f", "fp4", "fp8", "ids", "mask", "pos"}, f.Names())
	for _, tn := range tensors {
		info, err := f.Info(tn.Name)
		require.NoError(t, err)
		if tn.RawDType == "" {
			continue
		}
		require.Equal(t, tn.RawDType, info.DType, tn.Name)
		b, err := f.Bytes(tn.Name)
		require.NoError(t, err)
		require.Len(t, b, len(tn.Raw))
		if len(b) > 0 {
			require.Equal(t, tn.Raw, b, tn.Name)
		}
	}
	_, err = f.Float32s("ids")
	require.ErrorIs(t, err, ErrNotFloat)
	require.ErrorContains(t, err, `"ids"`)
	require.ErrorContains(t, err, "I64")
	_, err = f.Float64s("mask")
	require.ErrorIs(t, err, ErrNotFloat)
	v, err := f.Float32s("bf16raw")
	require.NoError(t, err)
	require.Equal(t, []float32{1, -2}, v)
	e, _ := f.Info("empty")
	require.Equal(t, int64(0), e.NumElements())
	_, err = f.Bytes("nope")
	require.ErrorIs(t, err, ErrNotFound)
	_, err = f.Info("nope")
	require.ErrorIs(t, err, ErrNotFound)
	require.Equal(t, map[string]string{"format": "pt"}, f.Metadata())
}

// TestReferenceLayout checks byte-exact output against the reference
// implementation's own serialization test vectors.
func TestReferenceLayout(t *testing.T) {
	six := []float32{0, 1, 2, 3, 4, 5}
	out, err := Marshal([]Tensor{{Name: "attn.0", DType: runtime.F32, Shape: []int{1, 2, 3}, F32: six}}, nil)
	require.NoError(t, err)
	header := `{"attn.0":{"dtype":"F32","shape":[1,2,3],"data_offsets":[0,24]}}`
	require.Len(t, header, 64)
	want := append([]byte{64, 0, 0, 0, 0, 0, 0, 0}, header...)
	want = append(want, 0, 0, 0, 0, 0, 0, 128, 63, 0, 0, 0, 64, 0, 0, 64, 64, 0, 0, 128, 64, 0, 0, 160, 64)
	require.Equal(t, want, out)

	out, err = Marshal([]Tensor{{Name: "attn0", DType: runtime.F32, Shape: []int{1, 1, 2, 3}, F32: six}}, nil)
	require.NoError(t, err)
	require.Equal(t, byte(72), out[0])
	require.Equal(t, `{"attn0":{"dtype":"F32","shape":[1,1,2,3],"data_offsets":[0,24]}}       `, string(out[8:80]))

	out, err = Marshal(nil, nil)
	require.NoError(t, err)
	require.Equal(t, []byte{8, 0, 0, 0, 0, 0, 0, 0, '{', '}', ' ', ' ', ' ', ' ', ' ', ' '}, out)

	out, err = Marshal(nil, map[string]string{"framework": "pt"})
	require.NoError(t, err)
	require.Equal(t, append([]byte{40, 0, 0, 0, 0, 0, 0, 0}, `{"__metadata__":{"framework":"pt"}}     `...), out)
	for _, b := range [][]byte{out} {
		f, err := Parse("mem", b)
		require.NoError(t, err)
		require.Equal(t, 0, f.Len())
	}
}

func TestWriterOrder(t *testing.T) {
	one := []float32{1}
	out, err := Marshal([]Tensor{
		{Name: "z16", DType: runtime.F16, Shape: []int{1}, F32: one},
		{Name: "a16", DType: runtime.F16, Shape: []int{1}, F32: one},
		{Name: "b32", DType: runtime.F32, Shape: []int{1}, F32: one},
		{Name: "c64", DType: runtime.F64, Shape: []int{1}, F32: one},
		{Name: "a32", DType: runtime.F32, Shape: []int{1}, F32: one},
		{Name: "bf", DType: runtime.BF16, Shape: []int{1}, F32: one},
		{Name: "i8", RawDType: "I8", Shape: []int{1}, Raw: []byte{7}},
		{Name: "i64", RawDType: "I64", Shape: []int{1}, Raw: make([]byte, 8)},
	}, nil)
	require.NoError(t, err)
	f, err := Parse("mem", out)
	require.NoError(t, err)
	var order []string
	infos := make([]Info, 0)
	for _, n := range f.Names() {
		in, _ := f.Info(n)
		infos = append(infos, in)
	}
	slices.SortFunc(infos, func(a, b Info) int { return int(a.Begin - b.Begin) })
	for _, in := range infos {
		order = append(order, in.Name)
	}
	require.Equal(t, []string{"i64", "c64", "a32", "b32", "bf", "a16", "z16", "i8"}, order)
	require.Zero(t, binary.LittleEndian.Uint64(out)%8)
	// Each tensor starts aligned to its own element size in the file.
	for _, in := range infos {
		bits, _ := ElemBits(in.DType)
		require.Zero(t, (f.DataOffset()+in.Begin)%int64(bits/8), in.Name)
	}
}

func TestWriteErrors(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "bad.safetensors")
	cases := map[string][]Tensor{
		"duplicate":     {{Name: "a", DType: runtime.F32, F32: []float32{1}}, {Name: "a", DType: runtime.F32, F32: []float32{1}}},
		"count":         {{Name: "a", DType: runtime.F32, Shape: []int{2}, F32: []float32{1}}},
		"both":          {{Name: "a", DType: runtime.F32, F32: []float32{1}, F64: []float64{1}}},
		"reserved":      {{Name: "__metadata__", DType: runtime.F32, F32: []float32{1}}},
		"negative":      {{Name: "a", DType: runtime.F32, Shape: []int{-1}}},
		"dtype":         {{Name: "a", DType: runtime.DType(9), F32: []float32{1}}},
		"raw dtype":     {{Name: "a", RawDType: "Q4", Raw: []byte{1}}},
		"raw size":      {{Name: "a", RawDType: "I32", Shape: []int{2}, Raw: []byte{1}}},
		"sub-byte":      {{Name: "a", RawDType: "F4", Shape: []int{3}, Raw: []byte{1}}},
		"invalid utf-8": {{Name: "a\xff", DType: runtime.F32, F32: []float32{1}}},
	}
	for name, ts := range cases {
		err := Write(path, ts, nil)
		require.ErrorContains(t, err, path, name)
	}
	_, err := os.Stat(path)
	require.True(t, os.IsNotExist(err), "a failed write must leave nothing behind")
	entries, _ := os.ReadDir(dir)
	require.Empty(t, entries, "no temporary files left behind")

	// A successful write replaces the file atomically and leaves no temp file.
	require.NoError(t, os.WriteFile(path, []byte("old"), 0o644))
	require.NoError(t, Write(path, []Tensor{{Name: "a", DType: runtime.F32, F32: []float32{1}}}, nil))
	entries, _ = os.ReadDir(dir)
	require.Len(t, entries, 1)
	f, err := Open(path)
	require.NoError(t, err)
	require.NoError(t, f.Close())
	require.NoError(t, f.Close())
	_, err = f.Bytes("a")
	require.ErrorIs(t, err, ErrClosed)
}

// rawFile assembles a file from a header string and a data buffer.
func rawFile(header string, data []byte) []byte {
	b := binary.LittleEndian.AppendUint64(nil, uint64(len(header)))
	b = append(b, header...)
	return append(b, data...)
}

func TestCorruptFiles(t *testing.T) {
	dir := t.TempDir()
	good := `{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F16","shape":[2],"data_offsets":[8,12]}}`
	d12 := make([]byte, 12)
	cases := []struct {
		name   string
		file   []byte
		err    error
		tensor string // must appear quoted in the message, if set
	}{
		{"short file", []byte{1, 2, 3}, ErrHeader, ""},
		{"header past end", append(binary.LittleEndian.AppendUint64(nil, 1000), "{}"...), ErrHeader, ""},
		{"huge header length", append(binary.LittleEndian.AppendUint64(nil, math.MaxUint64), "{}"...), ErrHeader, ""},
		{"header over limit", append(binary.LittleEndian.AppendUint64(nil, MaxHeaderSize+1), "{}"...), ErrHeader, ""},
		{"invalid json", rawFile(`{"a":{"dtype":"F32",`, nil), ErrHeader, ""},
		{"not an object", rawFile(`[1,2]`, nil), ErrHeader, ""},
		{"empty header", rawFile(``, nil), ErrHeader, ""},
		{"trailing garbage", rawFile(`{} x`, nil), ErrHeader, ""},
		{"nul padding", rawFile("{}\x00\x00", nil), ErrHeader, ""},
		{"invalid utf-8", rawFile("{\"\xff\":1}", nil), ErrHeader, ""},
		{"unknown dtype", rawFile(`{"a":{"dtype":"F33","shape":[2],"data_offsets":[0,8]}}`, make([]byte, 8)), ErrDType, "a"},
		{"size mismatch", rawFile(`{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}`, make([]byte, 8)), ErrSize, "a"},
		{"shape overflow", rawFile(`{"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}}`, make([]byte, 8)), ErrSize, "a"},
		{"sub-byte", rawFile(`{"a":{"dtype":"F4","shape":[3],"data_offsets":[0,1]}}`, make([]byte, 1)), ErrSize, "a"},
		{"offsets past end", rawFile(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}`, make([]byte, 8)), ErrOffsets, "a"},
		{"offsets reversed", rawFile(`{"a":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}}`, make([]byte, 8)), ErrOffsets, "a"},
		{"offsets huge", rawFile(`{"a":{"dtype":"U8","shape":[0],"data_offsets":[18446744073709551615,18446744073709551615]}}`, nil), ErrOffsets, "a"},
		{"overlap", rawFile(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F16","shape":[2],"data_offsets":[4,8]}}`, make([]byte, 8)), ErrOverlap, "b"},
		{"gap", rawFile(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F16","shape":[2],"data_offsets":[8,12]}}`, d12), ErrGap, "b"},
		{"leading gap", rawFile(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, make([]byte, 8)), ErrGap, "a"},
		{"trailing bytes", rawFile(good, make([]byte, 16)), ErrGap, ""},
		{"duplicate name", rawFile(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, make([]byte, 8)), ErrDuplicate, "a"},
		{"duplicate field", rawFile(`{"a":{"dtype":"F32","dtype":"F16","shape":[1],"data_offsets":[0,4]}}`, make([]byte, 4)), ErrHeader, "a"},
		{"missing dtype", rawFile(`{"a":{"shape":[1],"data_offsets":[0,4]}}`, make([]byte, 4)), ErrHeader, "a"},
		{"missing shape", rawFile(`{"a":{"dtype":"F32","data_offsets":[0,4]}}`, make([]byte, 4)), ErrHeader, "a"},
		{"missing offsets", rawFile(`{"a":{"dtype":"F32","shape":[1]}}`, make([]byte, 4)), ErrHeader, "a"},
		{"three offsets", rawFile(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4,4]}}`, make([]byte, 4)), ErrHeader, "a"},
		{"negative dim", rawFile(`{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}`, make([]byte, 4)), ErrHeader, "a"},
		{"fractional dim", rawFile(`{"a":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}}`, make([]byte, 4)), ErrHeader, "a"},
		{"null shape", rawFile(`{"a":{"dtype":"F32","shape":null,"data_offsets":[0,4]}}`, make([]byte, 4)), ErrHeader, "a"},
		{"numeric dtype", rawFile(`{"a":{"dtype":32,"shape":[1],"data_offsets":[0,4]}}`, make([]byte, 4)), ErrHeader, "a"},
		{"entry not object", rawFile(`{"a":[1]}`, nil), ErrHeader, "a"},
		{"metadata not strings", rawFile(`{"__metadata__":{"n":1}}`, nil), ErrHeader, ""},
		{"metadata duplicate", rawFile(`{"__metadata__":{"n":"1","n":"2"}}`, nil), ErrHeader, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse("mem.safetensors", c.file)
			require.ErrorIs(t, err, c.err)
			require.ErrorContains(t, err, "mem.safetensors")
			if c.tensor != "" {
				require.ErrorContains(t, err, `tensor "`+c.tensor+`"`)
			}
			path := filepath.Join(dir, strings.ReplaceAll(c.name, " ", "_")+".safetensors")
			require.NoError(t, os.WriteFile(path, c.file, 0o644))
			_, err = Open(path)
			require.ErrorIs(t, err, c.err)
			require.ErrorContains(t, err, path)
		})
	}
	f, err := Parse("ok", rawFile(good, d12))
	require.NoError(t, err)
	require.Equal(t, []string{"a", "b"}, f.Names())
	// Null metadata and unknown fields are tolerated, as the reference does.
	_, err = Parse("ok", rawFile(`{"__metadata__":null,"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1],"extra":true}}`, []byte{9}))
	require.NoError(t, err)
	_, err = Open(filepath.Join(dir, "missing"))
	require.Error(t, err)
}

func TestSharded(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, Write(filepath.Join(dir, "model-00001-of-00002.safetensors"), []Tensor{
		{Name: "embed", DType: runtime.BF16, Shape: []int{2, 2}, F32: []float32{1, 2, 3, 4}},
		{Name: "layer.0", DType: runtime.F32, Shape: []int{2}, F32: []float32{5, 6}},
	}, map[string]string{"format": "pt"}))
	require.NoError(t, Write(filepath.Join(dir, "model-00002-of-00002.safetensors"), []Tensor{
		{Name: "layer.1", DType: runtime.F16, Shape: []int{1}, F32: []float32{7}},
	}, nil))
	index := `{
  "metadata": {"total_size": 18},
  "weight_map": {
    "embed": "model-00001-of-00002.safetensors",
    "layer.0": "model-00001-of-00002.safetensors",
    "layer.1": "model-00002-of-00002.safetensors",
    "ghost": "model-00002-of-00002.safetensors"
  }
}`
	require.NoError(t, os.WriteFile(filepath.Join(dir, IndexFile), []byte(index), 0o644))
	ix, err := LoadIndex(filepath.Join(dir, IndexFile))
	require.NoError(t, err)
	require.Equal(t, int64(18), ix.TotalSize)
	require.Equal(t, []string{"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"}, ix.Shards())

	s, err := OpenSet(dir)
	require.NoError(t, err)
	defer s.Close()
	require.Equal(t, []string{"embed", "ghost", "layer.0", "layer.1"}, s.Names())
	require.Empty(t, s.shards, "shards open lazily")
	v, err := s.Float32s("layer.1")
	require.NoError(t, err)
	require.Equal(t, []float32{7}, v)
	require.Len(t, s.shards, 1)
	v, err = s.Float32s("embed")
	require.NoError(t, err)
	require.Equal(t, []float32{1, 2, 3, 4}, v)
	info, err := s.Info("layer.0")
	require.NoError(t, err)
	require.Equal(t, "F32", info.DType)
	sh, _ := s.Shard("layer.0")
	require.Equal(t, "model-00001-of-00002.safetensors", sh)
	_, err = s.Bytes("ghost")
	require.ErrorIs(t, err, ErrNotFound)
	require.ErrorContains(t, err, `"ghost"`)
	require.ErrorContains(t, err, "model-00002-of-00002.safetensors")
	_, err = s.Float64s("nothing")
	require.ErrorIs(t, err, ErrNotFound)
	require.NoError(t, s.Close())
	_, err = s.Bytes("embed")
	require.ErrorIs(t, err, ErrClosed)

	// A single file works as a set too.
	single := filepath.Join(dir, "model-00002-of-00002.safetensors")
	s2, err := OpenSet(single)
	require.NoError(t, err)
	require.Equal(t, []string{"layer.1"}, s2.Names())
	require.NoError(t, s2.Close())

	// Index validation.
	bad := map[string]string{
		"escape":    `{"weight_map":{"a":"../x.safetensors"}}`,
		"absolute":  `{"weight_map":{"a":"/etc/x.safetensors"}}`,
		"duplicate": `{"weight_map":{"a":"x","a":"y"}}`,
		"no map":    `{"metadata":{}}`,
		"not json":  `{"weight_map":`,
		"number":    `{"weight_map":{"a":1}}`,
	}
	for name, body := range bad {
		p := filepath.Join(dir, "bad.json")
		require.NoError(t, os.WriteFile(p, []byte(body), 0o644))
		_, err := LoadIndex(p)
		require.ErrorContains(t, err, p, name)
	}
	// A shard that fails to open reports both the index and the shard.
	p := filepath.Join(dir, "broken.json")
	require.NoError(t, os.WriteFile(p, []byte(`{"weight_map":{"a":"absent.safetensors"}}`), 0o644))
	s3, err := OpenSet(p)
	require.NoError(t, err)
	_, err = s3.Info("a")
	require.ErrorContains(t, err, "absent.safetensors")
	require.ErrorContains(t, err, p)
}

func TestParseMatchesOpen(t *testing.T) {
	b, err := Marshal([]Tensor{{Name: "x", DType: runtime.BF16, Shape: []int{3}, F64: []float64{1, 2, 3}}}, map[string]string{"a": "b"})
	require.NoError(t, err)
	path := filepath.Join(t.TempDir(), "x.safetensors")
	require.NoError(t, os.WriteFile(path, b, 0o644))
	f1, err := Open(path)
	require.NoError(t, err)
	defer f1.Close()
	f2, err := Parse("x", b)
	require.NoError(t, err)
	b1, _ := f1.Bytes("x")
	b2, _ := f2.Bytes("x")
	require.Equal(t, b1, b2)
	require.Equal(t, f1.Metadata(), f2.Metadata())
	require.Equal(t, path, f1.Name())
}

func TestDecodeEncodeErrors(t *testing.T) {
	require.Error(t, DecodeFloat32(make([]float32, 2), make([]byte, 7), runtime.F32))
	require.Error(t, DecodeFloat64(make([]float64, 2), make([]byte, 5), runtime.BF16))
	require.Error(t, EncodeFloat32(make([]byte, 3), make([]float32, 1), runtime.F32))
	require.Error(t, EncodeFloat64(make([]byte, 2), make([]float64, 1), runtime.DType(7)))
	_, ok := ElemBits("F6_E2M3")
	require.True(t, ok)
	_, ok = FloatDType("I8")
	require.False(t, ok)
}

func TestHeaderIsPadded(t *testing.T) {
	for n := 1; n < 20; n++ {
		b, err := Marshal([]Tensor{{Name: strings.Repeat("n", n), DType: runtime.F16, Shape: []int{1}, F32: []float32{1}}}, nil)
		require.NoError(t, err)
		hl := binary.LittleEndian.Uint64(b)
		require.Zero(t, hl%8)
		require.True(t, bytes.HasSuffix(bytes.TrimRight(b[8:8+hl], " "), []byte("}")))
	}
}

func TestErrorsWrap(t *testing.T) {
	_, err := Parse("m", rawFile(`{"a":{"dtype":"X","shape":[],"data_offsets":[0,0]}}`, nil))
	require.ErrorIs(t, err, ErrDType)
	require.EqualError(t, err, `safetensors m: tensor "a": dtype "X": unknown dtype`)
}
