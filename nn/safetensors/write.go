package safetensors

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math/bits"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/perkgo/perk/runtime"
)

// Tensor is one tensor to write. Give its values either as floats (F32 or
// F64, converted to DType when written) or as raw little-endian bytes (Raw,
// with RawDType naming any safetensors dtype, such as "I64" or "U8").
type Tensor struct {
	// Name is the tensor's key; it must be valid UTF-8, unique, and not
	// "__metadata__".
	Name string
	// Shape lists the dimensions, outermost first; empty for a scalar.
	Shape []int
	// DType is the storage type float values are converted to (rounding to
	// nearest, ties to even). Ignored when RawDType is set.
	DType runtime.DType
	// F32 and F64 hold the values in row-major order; set at most one. Both
	// may be nil for a tensor with no elements.
	F32 []float32
	F64 []float64
	// RawDType, when not empty, selects raw mode: Raw is written verbatim
	// and must hold exactly shape·itemsize bytes.
	RawDType string
	Raw      []byte
}

// entry is a validated tensor ready to be laid out.
type entry struct {
	t     *Tensor
	dtype string
	rank  int
	size  int64
	begin int64
}

// prepare validates tensors, orders them as the reference writer does
// (descending dtype alignment, then name) and builds the padded header.
func prepare(tensors []Tensor, metadata map[string]string) ([]entry, []byte, error) {
	entries := make([]entry, 0, len(tensors))
	seen := make(map[string]bool, len(tensors))
	for i := range tensors {
		t := &tensors[i]
		e, err := checkTensor(t)
		if err != nil {
			return nil, nil, err
		}
		if seen[t.Name] {
			return nil, nil, fmt.Errorf("safetensors: write: tensor %q: %w", t.Name, ErrDuplicate)
		}
		seen[t.Name] = true
		entries = append(entries, e)
	}
	slices.SortFunc(entries, func(a, b entry) int {
		if a.rank != b.rank {
			return b.rank - a.rank
		}
		return strings.Compare(a.t.Name, b.t.Name)
	})
	var off int64
	for i := range entries {
		entries[i].begin = off
		off += entries[i].size
	}

	var h bytes.Buffer
	h.WriteByte('{')
	first := true
	if len(metadata) > 0 {
		keys := make([]string, 0, len(metadata))
		for k, v := range metadata {
			if !utf8.ValidString(k) || !utf8.ValidString(v) {
				return nil, nil, fmt.Errorf("safetensors: write: metadata %q: not valid UTF-8", k)
			}
			keys = append(keys, k)
		}
		slices.Sort(keys)
		h.WriteString(jsonString(metadataKey))
		h.WriteString(":{")
		for i, k := range keys {
			if i > 0 {
				h.WriteByte(',')
			}
			h.WriteString(jsonString(k))
			h.WriteByte(':')
			h.WriteString(jsonString(metadata[k]))
		}
		h.WriteByte('}')
		first = false
	}
	for _, e := range entries {
		if !first {
			h.WriteByte(',')
		}
		first = false
		h.WriteString(jsonString(e.t.Name))
		h.WriteString(`:{"dtype":`)
		h.WriteString(jsonString(e.dtype))
		h.WriteString(`,"shape":[`)
		for i, d := range e.t.Shape {
			if i > 0 {
				h.WriteByte(',')
			}
			h.WriteString(strconv.Itoa(d))
		}
		h.WriteString(`],"data_offsets":[`)
		h.WriteString(strconv.FormatInt(e.begin, 10))
		h.WriteByte(',')
		h.WriteString(strconv.FormatInt(e.begin+e.size, 10))
		h.WriteString("]}")
	}
	h.WriteByte('}')
	// Pad with spaces so the data buffer starts 8-byte aligned.
	for h.Len()%8 != 0 {
		h.WriteByte(' ')
	}
	if h.Len() > MaxHeaderSize {
		return nil, nil, fmt.Errorf("safetensors: write: header of %d bytes exceeds the %d-byte limit", h.Len(), MaxHeaderSize)
	}
	return entries, h.Bytes(), nil
}

// checkTensor validates one tensor and works out its dtype and byte size.
func checkTensor(t *Tensor) (entry, error) {
	fail := func(format string, args ...any) (entry, error) {
		return entry{}, fmt.Errorf("safetensors: write: tensor %q: %s", t.Name, fmt.Sprintf(format, args...))
	}
	if t.Name == metadataKey {
		return fail("the name is reserved for metadata")
	}
	if !utf8.ValidString(t.Name) {
		return fail("name is not valid UTF-8")
	}
	for _, d := range t.Shape {
		if d < 0 {
			return fail("negative dimension in shape %v", t.Shape)
		}
	}
	// shapeBits computes the tensor's width in bits with the same overflow
	// rule the reader applies.
	shapeBits := func(elemBits int) (uint64, bool) {
		nbits := uint64(elemBits)
		for _, d := range t.Shape {
			hi, lo := bits.Mul64(nbits, uint64(d))
			if hi != 0 {
				return 0, false
			}
			nbits = lo
		}
		return nbits, true
	}
	if t.RawDType != "" {
		d, ok := dtypes[t.RawDType]
		if !ok {
			return entry{}, fmt.Errorf("safetensors: write: tensor %q: dtype %q: %w", t.Name, t.RawDType, ErrDType)
		}
		if t.F32 != nil || t.F64 != nil {
			return fail("both raw bytes and float values given")
		}
		nbits, ok := shapeBits(d.bits)
		if !ok {
			return fail("shape %v is too large", t.Shape)
		}
		if nbits%8 != 0 {
			return fail("shape %v of %s does not fill whole bytes", t.Shape, t.RawDType)
		}
		if uint64(len(t.Raw)) != nbits/8 {
			return fail("%d raw bytes for shape %v of %s, want %d", len(t.Raw), t.Shape, t.RawDType, nbits/8)
		}
		return entry{t: t, dtype: t.RawDType, rank: d.rank, size: int64(nbits / 8)}, nil
	}
	if !validFloat(t.DType) {
		return fail("unsupported dtype %v", t.DType)
	}
	if t.Raw != nil {
		return fail("raw bytes given without RawDType")
	}
	var have int
	switch {
	case t.F32 != nil && t.F64 != nil:
		return fail("both F32 and F64 values given")
	case t.F64 != nil:
		have = len(t.F64)
	default:
		have = len(t.F32)
	}
	nbits, ok := shapeBits(8 * t.DType.Size())
	if !ok {
		return fail("shape %v is too large", t.Shape)
	}
	size := nbits / 8
	if n := size / uint64(t.DType.Size()); uint64(have) != n {
		return fail("%d values for shape %v (%d elements)", have, t.Shape, n)
	}
	name := t.DType.String()
	return entry{t: t, dtype: name, rank: dtypes[name].rank, size: int64(size)}, nil
}

// jsonString encodes s as a JSON string without HTML escaping.
func jsonString(s string) string {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s) // a string always encodes
	return strings.TrimSuffix(b.String(), "\n")
}

// writeData streams the tensors' bytes to w in layout order.
func writeData(w io.Writer, entries []entry) error {
	const chunk = 1 << 14 // elements converted per step
	var buf []byte
	for _, e := range entries {
		t := e.t
		if t.RawDType != "" {
			if _, err := w.Write(t.Raw); err != nil {
				return err
			}
			continue
		}
		size := t.DType.Size()
		if len(buf) < chunk*size {
			buf = make([]byte, chunk*size)
		}
		if t.F64 != nil {
			for i := 0; i < len(t.F64); i += chunk {
				src := t.F64[i:min(i+chunk, len(t.F64))]
				dst := buf[:len(src)*size]
				if err := EncodeFloat64(dst, src, t.DType); err != nil {
					return err
				}
				if _, err := w.Write(dst); err != nil {
					return err
				}
			}
			continue
		}
		for i := 0; i < len(t.F32); i += chunk {
			src := t.F32[i:min(i+chunk, len(t.F32))]
			dst := buf[:len(src)*size]
			if err := EncodeFloat32(dst, src, t.DType); err != nil {
				return err
			}
			if _, err := w.Write(dst); err != nil {
				return err
			}
		}
	}
	return nil
}

// Marshal encodes tensors and metadata as a complete safetensors file, laid
// out exactly as Write lays it out.
func Marshal(tensors []Tensor, metadata map[string]string) ([]byte, error) {
	entries, header, err := prepare(tensors, metadata)
	if err != nil {
		return nil, err
	}
	var total int64
	for _, e := range entries {
		total += e.size
	}
	var b bytes.Buffer
	b.Grow(8 + len(header) + int(total))
	if err := writeTo(&b, entries, header); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// writeTo writes the length prefix, header and data.
func writeTo(w io.Writer, entries []entry, header []byte) error {
	var n [8]byte
	binary.LittleEndian.PutUint64(n[:], uint64(len(header)))
	if _, err := w.Write(n[:]); err != nil {
		return err
	}
	if _, err := w.Write(header); err != nil {
		return err
	}
	return writeData(w, entries)
}

// Write stores tensors and metadata (may be nil) as a safetensors file at
// path. The file is written to a temporary file in the same directory and
// renamed into place, so path never holds a partial file. Tensors are laid
// out as the reference writer lays them out: by descending dtype alignment
// (F64, F32, BF16, F16, ...), then by name; the header is padded with spaces
// to a multiple of 8 bytes.
func Write(path string, tensors []Tensor, metadata map[string]string) (err error) {
	entries, header, err := prepare(tensors, metadata)
	if err != nil {
		return fmt.Errorf("safetensors %s: %w", path, err)
	}
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	tmp, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return fmt.Errorf("safetensors %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			_ = tmp.Close()
			_ = os.Remove(tmp.Name())
		}
	}()
	bw := bufio.NewWriterSize(tmp, 1<<20)
	if err = writeTo(bw, entries, header); err != nil {
		return fmt.Errorf("safetensors %s: write: %w", path, err)
	}
	if err = bw.Flush(); err != nil {
		return fmt.Errorf("safetensors %s: write: %w", path, err)
	}
	if err = tmp.Chmod(0o644); err != nil {
		return fmt.Errorf("safetensors %s: %w", path, err)
	}
	if err = tmp.Sync(); err != nil {
		return fmt.Errorf("safetensors %s: sync: %w", path, err)
	}
	if err = tmp.Close(); err != nil {
		return fmt.Errorf("safetensors %s: close: %w", path, err)
	}
	if err = os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("safetensors %s: %w", path, err)
	}
	return nil
}
