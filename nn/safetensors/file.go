// Package safetensors reads and writes the safetensors tensor file format and
// the sharded checkpoints built from it.
//
// A file is an 8-byte little-endian header length N, N bytes of UTF-8 JSON
// mapping each tensor name to {"dtype", "shape", "data_offsets": [begin, end]}
// (plus an optional "__metadata__" object of string values), then the data
// buffer. Offsets are relative to the start of the buffer, and the tensors
// must tile it exactly: no holes, no overlaps, nothing left over.
//
// Open maps a file read-only where the platform allows and otherwise reads it
// into memory. Every header is validated before any tensor is handed out, and
// malformed input of any kind gives an error, never a panic.
package safetensors

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/bits"
	"os"
	"slices"
	"sort"
	"strings"
	"unicode/utf8"

	"github.com/perkgo/perk/runtime"
)

// MaxHeaderSize is the largest JSON header accepted, in bytes. It matches the
// reference implementation's limit.
const MaxHeaderSize = 100_000_000

// metadataKey is the reserved header key holding free-form string metadata.
const metadataKey = "__metadata__"

// Errors wrapped by the errors this package returns; test with errors.Is.
var (
	// ErrHeader reports a malformed header: too short a file, a header length
	// past the end of the file, invalid UTF-8 or JSON, or a malformed entry.
	ErrHeader = errors.New("invalid header")
	// ErrDType reports a dtype name the format does not define.
	ErrDType = errors.New("unknown dtype")
	// ErrSize reports a byte range whose length does not match shape·itemsize.
	ErrSize = errors.New("byte length does not match shape and dtype")
	// ErrOffsets reports data offsets out of range or reversed.
	ErrOffsets = errors.New("data offsets out of range")
	// ErrOverlap reports two tensors whose byte ranges overlap.
	ErrOverlap = errors.New("overlapping tensors")
	// ErrGap reports bytes of the data buffer that no tensor covers.
	ErrGap = errors.New("tensors do not cover the data buffer contiguously")
	// ErrDuplicate reports a name given twice.
	ErrDuplicate = errors.New("duplicate name")
	// ErrNotFound reports a tensor name that is not present.
	ErrNotFound = errors.New("tensor not found")
	// ErrNotFloat reports a typed float read of a tensor whose dtype is not
	// F32, F16, BF16 or F64.
	ErrNotFloat = errors.New("dtype is not F32, F16, BF16 or F64")
	// ErrClosed reports use of a closed File or Set.
	ErrClosed = errors.New("file already closed")
)

// Info describes one tensor of a file.
type Info struct {
	// Name is the tensor's key in the header.
	Name string
	// DType is the element type as the header spells it ("F32", "BF16",
	// "I64", "BOOL", ...).
	DType string
	// Shape lists the dimensions, outermost first (row-major). A scalar has
	// an empty shape.
	Shape []int
	// Begin and End delimit the tensor's bytes within the data buffer
	// (End is one past the last byte).
	Begin, End int64
}

// NumElements is the product of the shape (1 for a scalar).
func (i Info) NumElements() int64 {
	n := int64(1)
	for _, d := range i.Shape {
		n *= int64(d)
	}
	return n
}

// Size is the tensor's length in bytes.
func (i Info) Size() int64 { return i.End - i.Begin }

// Float returns the runtime storage type for F32, F16, BF16 and F64 tensors;
// ok is false for every other dtype.
func (i Info) Float() (t runtime.DType, ok bool) { return FloatDType(i.DType) }

// File is an open safetensors file. Its methods are safe for concurrent use,
// except Close, which must not overlap any other call.
type File struct {
	name    string // path, or a label for in-memory data, used in errors
	buf     []byte // the whole file
	data    []byte // the data buffer (a suffix of buf)
	unmap   func() error
	infos   map[string]*Info
	names   []string // sorted
	meta    map[string]string
	closed  bool
	dataOff int64
}

// Open opens and validates the safetensors file at path. The file is mapped
// read-only into memory where the platform supports it, else read whole.
// Close releases it.
func Open(path string) (*File, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("safetensors %s: %w", path, err)
	}
	defer fh.Close()
	st, err := fh.Stat()
	if err != nil {
		return nil, fmt.Errorf("safetensors %s: %w", path, err)
	}
	size := st.Size()
	if size < 8 {
		return nil, fmt.Errorf("safetensors %s: file is %d bytes, shorter than the 8-byte header length: %w", path, size, ErrHeader)
	}
	if int64(int(size)) != size || size > math.MaxInt-1 {
		return nil, fmt.Errorf("safetensors %s: file of %d bytes is too large for this platform", path, size)
	}
	// Check the header length before mapping, so that a file that is
	// obviously broken costs nothing.
	var lenBuf [8]byte
	if _, err := fh.ReadAt(lenBuf[:], 0); err != nil {
		return nil, fmt.Errorf("safetensors %s: read header length: %w", path, err)
	}
	if err := checkHeaderLen(path, binary.LittleEndian.Uint64(lenBuf[:]), size); err != nil {
		return nil, err
	}
	buf, unmap, err := mapFile(fh, size)
	if err != nil {
		buf = make([]byte, size)
		if _, err := io.ReadFull(io.NewSectionReader(fh, 0, size), buf); err != nil {
			return nil, fmt.Errorf("safetensors %s: read: %w", path, err)
		}
		unmap = nil
	}
	f, err := parse(path, buf)
	if err != nil {
		if unmap != nil {
			_ = unmap()
		}
		return nil, err
	}
	f.unmap = unmap
	return f, nil
}

// Parse validates data, the complete contents of a safetensors file, and
// returns a File that reads from it (data is not copied and must not change).
// name labels errors.
func Parse(name string, data []byte) (*File, error) {
	if len(data) < 8 {
		return nil, fmt.Errorf("safetensors %s: data is %d bytes, shorter than the 8-byte header length: %w", name, len(data), ErrHeader)
	}
	if err := checkHeaderLen(name, binary.LittleEndian.Uint64(data), int64(len(data))); err != nil {
		return nil, err
	}
	return parse(name, data)
}

// checkHeaderLen validates the header length n against a file of size bytes.
func checkHeaderLen(name string, n uint64, size int64) error {
	if n > MaxHeaderSize {
		return fmt.Errorf("safetensors %s: header length %d exceeds the %d-byte limit: %w", name, n, MaxHeaderSize, ErrHeader)
	}
	if int64(n) > size-8 {
		return fmt.Errorf("safetensors %s: header length %d runs past the end of the %d-byte file: %w", name, n, size, ErrHeader)
	}
	return nil
}

// parse validates buf (whose header length was already checked) and builds
// the File.
func parse(name string, buf []byte) (*File, error) {
	n := int64(binary.LittleEndian.Uint64(buf))
	header := buf[8 : 8+n]
	data := buf[8+n:]
	infos, meta, err := parseHeader(name, header, int64(len(data)))
	if err != nil {
		return nil, err
	}
	f := &File{
		name:    name,
		buf:     buf,
		data:    data,
		infos:   make(map[string]*Info, len(infos)),
		names:   make([]string, 0, len(infos)),
		meta:    meta,
		dataOff: 8 + n,
	}
	for i := range infos {
		f.infos[infos[i].Name] = &infos[i]
		f.names = append(f.names, infos[i].Name)
	}
	sort.Strings(f.names)
	return f, nil
}

// parseHeader decodes and validates a JSON header describing a data buffer of
// dataLen bytes. It returns the tensors in data-offset order.
func parseHeader(name string, header []byte, dataLen int64) ([]Info, map[string]string, error) {
	if !utf8.Valid(header) {
		return nil, nil, fmt.Errorf("safetensors %s: header is not valid UTF-8: %w", name, ErrHeader)
	}
	var (
		infos []Info
		meta  map[string]string
	)
	err := decodeObject(header, func(key string, val []byte) error {
		if key == metadataKey {
			m, err := decodeMetadata(val)
			if err != nil {
				return fmt.Errorf("safetensors %s: %s: %v: %w", name, metadataKey, err, ErrHeader)
			}
			meta = m
			return nil
		}
		info, err := decodeInfo(name, key, val)
		if err != nil {
			return err
		}
		infos = append(infos, info)
		return nil
	})
	if err != nil {
		var de *dupKeyError
		switch {
		case errors.As(err, &de):
			return nil, nil, fmt.Errorf("safetensors %s: tensor %q: listed twice in the header: %w", name, de.key, ErrDuplicate)
		case errors.Is(err, ErrHeader) || errors.Is(err, ErrDType) || errors.Is(err, ErrSize) || errors.Is(err, ErrOffsets):
			return nil, nil, err
		default:
			return nil, nil, fmt.Errorf("safetensors %s: header JSON: %v: %w", name, err, ErrHeader)
		}
	}
	if err := checkLayout(name, infos, dataLen); err != nil {
		return nil, nil, err
	}
	return infos, meta, nil
}

// checkLayout verifies that the tensors tile [0, dataLen) exactly, and sorts
// infos by offset.
func checkLayout(name string, infos []Info, dataLen int64) error {
	for _, in := range infos {
		if in.End > dataLen {
			return fmt.Errorf("safetensors %s: tensor %q: data_offsets [%d, %d] run past the %d-byte data buffer: %w",
				name, in.Name, in.Begin, in.End, dataLen, ErrOffsets)
		}
	}
	slices.SortFunc(infos, func(a, b Info) int {
		if a.Begin != b.Begin {
			return cmpInt64(a.Begin, b.Begin)
		}
		if a.End != b.End {
			return cmpInt64(a.End, b.End)
		}
		return strings.Compare(a.Name, b.Name)
	})
	var pos int64
	prev := ""
	for _, in := range infos {
		switch {
		case in.Begin < pos:
			return fmt.Errorf("safetensors %s: tensor %q: bytes [%d, %d) overlap tensor %q, which ends at %d: %w",
				name, in.Name, in.Begin, in.End, prev, pos, ErrOverlap)
		case in.Begin > pos:
			return fmt.Errorf("safetensors %s: tensor %q: starts at %d but the previous tensor ends at %d (bytes [%d, %d) belong to no tensor): %w",
				name, in.Name, in.Begin, pos, pos, in.Begin, ErrGap)
		}
		pos = in.End
		prev = in.Name
	}
	if pos != dataLen {
		return fmt.Errorf("safetensors %s: tensors cover %d bytes of the %d-byte data buffer (bytes [%d, %d) belong to no tensor): %w",
			name, pos, dataLen, pos, dataLen, ErrGap)
	}
	return nil
}

func cmpInt64(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// decodeInfo decodes and checks one tensor entry of the header.
func decodeInfo(file, name string, val []byte) (Info, error) {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("safetensors %s: tensor %q: %s: %w", file, name, fmt.Sprintf(format, args...), ErrHeader)
	}
	if !utf8.ValidString(name) {
		return Info{}, bad("name is not valid UTF-8")
	}
	var (
		dtype        string
		shape        []uint64
		offs         []uint64
		haveD, haveS bool
		haveO        bool
	)
	err := decodeObject(val, func(key string, v []byte) error {
		switch key {
		case "dtype":
			if !isJSONKind(v, '"') {
				return fmt.Errorf("dtype is not a string")
			}
			if err := json.Unmarshal(v, &dtype); err != nil {
				return fmt.Errorf("dtype: %v", err)
			}
			haveD = true
		case "shape":
			if !isJSONKind(v, '[') {
				return fmt.Errorf("shape is not an array")
			}
			if err := json.Unmarshal(v, &shape); err != nil {
				return fmt.Errorf("shape must list non-negative integers: %v", err)
			}
			haveS = true
		case "data_offsets":
			if !isJSONKind(v, '[') {
				return fmt.Errorf("data_offsets is not an array")
			}
			if err := json.Unmarshal(v, &offs); err != nil {
				return fmt.Errorf("data_offsets must list non-negative integers: %v", err)
			}
			haveO = true
		}
		return nil
	})
	if err != nil {
		var de *dupKeyError
		if errors.As(err, &de) {
			return Info{}, bad("field %q given twice", de.key)
		}
		return Info{}, bad("%v", err)
	}
	switch {
	case !haveD:
		return Info{}, bad("missing dtype")
	case !haveS:
		return Info{}, bad("missing shape")
	case !haveO:
		return Info{}, bad("missing data_offsets")
	case len(offs) != 2:
		return Info{}, bad("data_offsets has %d values, want 2", len(offs))
	}
	d, ok := dtypes[dtype]
	if !ok {
		return Info{}, fmt.Errorf("safetensors %s: tensor %q: dtype %q: %w", file, name, dtype, ErrDType)
	}
	if offs[0] > offs[1] || offs[1] > math.MaxInt64 {
		return Info{}, fmt.Errorf("safetensors %s: tensor %q: data_offsets [%d, %d] are reversed or too large: %w",
			file, name, offs[0], offs[1], ErrOffsets)
	}
	info := Info{Name: name, DType: dtype, Begin: int64(offs[0]), End: int64(offs[1]), Shape: make([]int, len(shape))}
	// Compute the byte length in bits with overflow checks.
	nbits := uint64(d.bits)
	overflow := false
	for i, dim := range shape {
		if dim > math.MaxInt64 || int64(int(dim)) != int64(dim) {
			overflow = true
			break
		}
		info.Shape[i] = int(dim)
		hi, lo := bits.Mul64(nbits, dim)
		if hi != 0 {
			overflow = true
			break
		}
		nbits = lo
	}
	if overflow {
		return Info{}, fmt.Errorf("safetensors %s: tensor %q: shape %v overflows: %w", file, name, shape, ErrSize)
	}
	if nbits%8 != 0 {
		return Info{}, fmt.Errorf("safetensors %s: tensor %q: shape %v of %s does not fill whole bytes: %w", file, name, shape, dtype, ErrSize)
	}
	if want := nbits / 8; want != offs[1]-offs[0] {
		return Info{}, fmt.Errorf("safetensors %s: tensor %q: shape %v of %s needs %d bytes but data_offsets [%d, %d] hold %d: %w",
			file, name, shape, dtype, want, offs[0], offs[1], offs[1]-offs[0], ErrSize)
	}
	return info, nil
}

// decodeMetadata decodes the __metadata__ object, whose values must be
// strings. A JSON null counts as no metadata.
func decodeMetadata(val []byte) (map[string]string, error) {
	if bytes.Equal(bytes.TrimSpace(val), []byte("null")) {
		return nil, nil
	}
	meta := map[string]string{}
	err := decodeObject(val, func(key string, v []byte) error {
		if !isJSONKind(v, '"') {
			return fmt.Errorf("value of %q is not a string", key)
		}
		var s string
		if err := json.Unmarshal(v, &s); err != nil {
			return err
		}
		meta[key] = s
		return nil
	})
	if err != nil {
		var de *dupKeyError
		if errors.As(err, &de) {
			return nil, fmt.Errorf("key %q given twice", de.key)
		}
		return nil, err
	}
	return meta, nil
}

// isJSONKind reports whether the JSON value v starts with the byte c.
func isJSONKind(v []byte, c byte) bool {
	v = bytes.TrimLeft(v, " \t\r\n")
	return len(v) > 0 && v[0] == c
}

// dupKeyError reports a key repeated within one JSON object.
type dupKeyError struct{ key string }

func (e *dupKeyError) Error() string { return fmt.Sprintf("key %q given twice", e.key) }

// decodeObject walks the members of the JSON object in data, calling fn with
// each key and raw value in order. It rejects repeated keys and anything but
// whitespace after the object.
func decodeObject(data []byte, fn func(key string, val []byte) error) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return fmt.Errorf("expected a JSON object")
	}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		key, ok := tok.(string)
		if !ok {
			return fmt.Errorf("expected an object key")
		}
		if seen[key] {
			return &dupKeyError{key}
		}
		seen[key] = true
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return err
		}
		if err := fn(key, raw); err != nil {
			return err
		}
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("unexpected data after the JSON object")
	}
	return nil
}

// Name returns the path the file was opened from (or the label given to
// Parse).
func (f *File) Name() string { return f.name }

// Names returns the tensor names, sorted.
func (f *File) Names() []string { return slices.Clone(f.names) }

// Len returns the number of tensors.
func (f *File) Len() int { return len(f.names) }

// Has reports whether the file holds a tensor called name.
func (f *File) Has(name string) bool {
	_, ok := f.infos[name]
	return ok
}

// Info describes the named tensor. The error wraps ErrNotFound if there is
// none.
func (f *File) Info(name string) (Info, error) {
	in, ok := f.infos[name]
	if !ok {
		return Info{}, fmt.Errorf("safetensors %s: tensor %q: %w", f.name, name, ErrNotFound)
	}
	out := *in
	out.Shape = slices.Clone(in.Shape)
	return out, nil
}

// Metadata returns a copy of the header's __metadata__ map (nil if absent).
func (f *File) Metadata() map[string]string {
	if f.meta == nil {
		return nil
	}
	m := make(map[string]string, len(f.meta))
	for k, v := range f.meta {
		m[k] = v
	}
	return m
}

// DataOffset returns the file offset at which the data buffer begins
// (8 plus the header length).
func (f *File) DataOffset() int64 { return f.dataOff }

// Bytes returns the named tensor's raw little-endian bytes. The slice aliases
// the file's memory: it must not be modified (a mapped file is read-only and
// writing to it faults) and is valid only until Close.
func (f *File) Bytes(name string) ([]byte, error) {
	if f.closed {
		return nil, fmt.Errorf("safetensors %s: tensor %q: %w", f.name, name, ErrClosed)
	}
	in, ok := f.infos[name]
	if !ok {
		return nil, fmt.Errorf("safetensors %s: tensor %q: %w", f.name, name, ErrNotFound)
	}
	return f.data[in.Begin:in.End:in.End], nil
}

// floatBytes returns a tensor's bytes and runtime type, or an error if it is
// missing or not a float tensor.
func (f *File) floatBytes(name string) ([]byte, runtime.DType, error) {
	b, err := f.Bytes(name)
	if err != nil {
		return nil, 0, err
	}
	in := f.infos[name]
	t, ok := FloatDType(in.DType)
	if !ok {
		return nil, 0, fmt.Errorf("safetensors %s: tensor %q: cannot read %s as float: %w", f.name, name, in.DType, ErrNotFloat)
	}
	return b, t, nil
}

// Float32s returns the named tensor converted to float32: F32 as stored, F16
// and BF16 widened exactly, F64 rounded to nearest. Other dtypes give an error
// wrapping ErrNotFloat.
func (f *File) Float32s(name string) ([]float32, error) {
	b, t, err := f.floatBytes(name)
	if err != nil {
		return nil, err
	}
	out := make([]float32, len(b)/t.Size())
	if err := DecodeFloat32(out, b, t); err != nil {
		return nil, fmt.Errorf("safetensors %s: tensor %q: %w", f.name, name, err)
	}
	return out, nil
}

// Float64s returns the named tensor converted exactly to float64. Dtypes
// other than F32, F16, BF16 and F64 give an error wrapping ErrNotFloat.
func (f *File) Float64s(name string) ([]float64, error) {
	b, t, err := f.floatBytes(name)
	if err != nil {
		return nil, err
	}
	out := make([]float64, len(b)/t.Size())
	if err := DecodeFloat64(out, b, t); err != nil {
		return nil, fmt.Errorf("safetensors %s: tensor %q: %w", f.name, name, err)
	}
	return out, nil
}

// Close releases the file's memory. Slices returned by Bytes must not be used
// afterwards. Closing twice is harmless.
func (f *File) Close() error {
	if f.closed {
		return nil
	}
	f.closed = true
	f.data, f.buf = nil, nil
	if f.unmap != nil {
		u := f.unmap
		f.unmap = nil
		if err := u(); err != nil {
			return fmt.Errorf("safetensors %s: unmap: %w", f.name, err)
		}
	}
	return nil
}
