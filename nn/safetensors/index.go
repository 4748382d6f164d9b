package safetensors

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"
)

// IndexFile is the conventional name of a sharded checkpoint's index.
const IndexFile = "model.safetensors.index.json"

// SingleFile is the conventional name of an unsharded checkpoint.
const SingleFile = "model.safetensors"

// Index is a parsed sharded-checkpoint index
// ("model.safetensors.index.json").
type Index struct {
	// Path is the index file's path; shard names are relative to its
	// directory.
	Path string
	// WeightMap maps each tensor name to the shard file holding it.
	WeightMap map[string]string
	// Metadata holds the index's "metadata" object, undecoded values
	// included (nil if absent).
	Metadata map[string]json.RawMessage
	// TotalSize is metadata.total_size when present as an integer, else 0.
	TotalSize int64
}

// LoadIndex reads and validates a sharded-checkpoint index. Shard names must
// be plain relative paths that stay inside the index's directory.
func LoadIndex(path string) (*Index, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("safetensors index %s: %w", path, err)
	}
	return parseIndex(path, raw)
}

// parseIndex decodes an index file's contents.
func parseIndex(path string, raw []byte) (*Index, error) {
	ix := &Index{Path: path}
	var haveMap bool
	err := decodeObject(raw, func(key string, val []byte) error {
		switch key {
		case "weight_map":
			haveMap = true
			m := map[string]string{}
			err := decodeObject(val, func(name string, v []byte) error {
				if !isJSONKind(v, '"') {
					return fmt.Errorf("weight_map: tensor %q: shard is not a string", name)
				}
				var s string
				if err := json.Unmarshal(v, &s); err != nil {
					return fmt.Errorf("weight_map: tensor %q: %v", name, err)
				}
				if s == "" || !filepath.IsLocal(s) {
					return fmt.Errorf("weight_map: tensor %q: shard %q is not a local relative path", name, s)
				}
				m[name] = s
				return nil
			})
			if err != nil {
				var de *dupKeyError
				if errors.As(err, &de) {
					return fmt.Errorf("weight_map: tensor %q: %w", de.key, ErrDuplicate)
				}
				return err
			}
			ix.WeightMap = m
		case "metadata":
			if isJSONKind(val, 'n') { // null
				return nil
			}
			m := map[string]json.RawMessage{}
			if err := json.Unmarshal(val, &m); err != nil {
				return fmt.Errorf("metadata: %v", err)
			}
			ix.Metadata = m
			if ts, ok := m["total_size"]; ok {
				var n int64
				if json.Unmarshal(ts, &n) == nil {
					ix.TotalSize = n
				}
			}
		}
		return nil
	})
	if err != nil {
		if errors.Is(err, ErrDuplicate) {
			return nil, fmt.Errorf("safetensors index %s: %w", path, err)
		}
		return nil, fmt.Errorf("safetensors index %s: %v: %w", path, err, ErrHeader)
	}
	if !haveMap {
		return nil, fmt.Errorf("safetensors index %s: no weight_map: %w", path, ErrHeader)
	}
	return ix, nil
}

// Shards returns the distinct shard file names, sorted.
func (ix *Index) Shards() []string {
	set := map[string]bool{}
	for _, s := range ix.WeightMap {
		set[s] = true
	}
	out := make([]string, 0, len(set))
	for s := range set {
		out = append(out, s)
	}
	sort.Strings(out)
	return out
}

// Tensors is the read interface shared by *File and *Set.
type Tensors interface {
	// Names returns the tensor names, sorted.
	Names() []string
	// Has reports whether a tensor is present.
	Has(name string) bool
	// Info describes a tensor.
	Info(name string) (Info, error)
	// Bytes returns a tensor's raw bytes (read-only, valid until Close).
	Bytes(name string) ([]byte, error)
	// Float32s returns a float tensor converted to float32.
	Float32s(name string) ([]float32, error)
	// Float64s returns a float tensor converted to float64.
	Float64s(name string) ([]float64, error)
	// Close releases the underlying files.
	Close() error
}

var (
	_ Tensors = (*File)(nil)
	_ Tensors = (*Set)(nil)
)

// Set is a read view over a checkpoint that may be split across several
// files. Shards are opened lazily, the first time a tensor in them is asked
// for. Its methods are safe for concurrent use, except Close.
type Set struct {
	label  string            // index path or file path, for errors
	dir    string            // directory shard names are relative to
	where  map[string]string // tensor name -> shard name
	names  []string          // sorted
	mu     sync.Mutex
	shards map[string]*File
	closed bool
}

// OpenSet opens a checkpoint given as a directory (using IndexFile if present,
// else SingleFile), an index file (any path ending in ".json"), or a single
// safetensors file.
func OpenSet(path string) (*Set, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("safetensors %s: %w", path, err)
	}
	if st.IsDir() {
		ixPath := filepath.Join(path, IndexFile)
		if _, err := os.Stat(ixPath); err == nil {
			path = ixPath
		} else {
			path = filepath.Join(path, SingleFile)
		}
	}
	if filepath.Ext(path) == ".json" {
		ix, err := LoadIndex(path)
		if err != nil {
			return nil, err
		}
		return NewSet(ix), nil
	}
	f, err := Open(path)
	if err != nil {
		return nil, err
	}
	s := &Set{
		label:  path,
		dir:    filepath.Dir(path),
		where:  make(map[string]string, f.Len()),
		names:  f.Names(),
		shards: map[string]*File{filepath.Base(path): f},
	}
	for _, n := range s.names {
		s.where[n] = filepath.Base(path)
	}
	return s, nil
}

// NewSet returns a lazily opened view of the shards listed by ix.
func NewSet(ix *Index) *Set {
	s := &Set{
		label:  ix.Path,
		dir:    filepath.Dir(ix.Path),
		where:  make(map[string]string, len(ix.WeightMap)),
		names:  make([]string, 0, len(ix.WeightMap)),
		shards: map[string]*File{},
	}
	for n, f := range ix.WeightMap {
		s.where[n] = f
		s.names = append(s.names, n)
	}
	sort.Strings(s.names)
	return s
}

// Names returns every tensor name the set lists, sorted.
func (s *Set) Names() []string { return slices.Clone(s.names) }

// Has reports whether the set lists a tensor called name.
func (s *Set) Has(name string) bool {
	_, ok := s.where[name]
	return ok
}

// Shard returns the name of the file holding a tensor, relative to the
// set's directory.
func (s *Set) Shard(name string) (string, bool) {
	sh, ok := s.where[name]
	return sh, ok
}

// File returns the opened shard holding the named tensor, opening it if
// needed. The error wraps ErrNotFound if the set does not list the tensor or
// its shard lacks it.
func (s *Set) File(name string) (*File, error) {
	shard, ok := s.where[name]
	if !ok {
		return nil, fmt.Errorf("safetensors %s: tensor %q: %w", s.label, name, ErrNotFound)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, fmt.Errorf("safetensors %s: tensor %q: %w", s.label, name, ErrClosed)
	}
	f := s.shards[shard]
	if f == nil {
		var err error
		f, err = Open(filepath.Join(s.dir, shard))
		if err != nil {
			return nil, fmt.Errorf("safetensors %s: tensor %q: %w", s.label, name, err)
		}
		s.shards[shard] = f
	}
	if !f.Has(name) {
		return nil, fmt.Errorf("safetensors %s: tensor %q: listed in shard %s, which does not hold it: %w", s.label, name, shard, ErrNotFound)
	}
	return f, nil
}

// Info describes the named tensor, opening its shard if needed.
func (s *Set) Info(name string) (Info, error) {
	f, err := s.File(name)
	if err != nil {
		return Info{}, err
	}
	return f.Info(name)
}

// Bytes returns the named tensor's raw bytes (see File.Bytes).
func (s *Set) Bytes(name string) ([]byte, error) {
	f, err := s.File(name)
	if err != nil {
		return nil, err
	}
	return f.Bytes(name)
}

// Float32s returns the named tensor converted to float32 (see File.Float32s).
func (s *Set) Float32s(name string) ([]float32, error) {
	f, err := s.File(name)
	if err != nil {
		return nil, err
	}
	return f.Float32s(name)
}

// Float64s returns the named tensor converted to float64 (see File.Float64s).
func (s *Set) Float64s(name string) ([]float64, error) {
	f, err := s.File(name)
	if err != nil {
		return nil, err
	}
	return f.Float64s(name)
}

// Close closes every shard opened so far. Slices from Bytes must not be used
// afterwards.
func (s *Set) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	var errs []error
	for _, f := range s.shards {
		if err := f.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	s.shards = map[string]*File{}
	return errors.Join(errs...)
}
