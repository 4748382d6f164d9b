package safetensors

import (
	"encoding/binary"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/perkgo/perk/runtime"
)

// FuzzParseHeader feeds arbitrary bytes to Parse. It must never panic, and
// whatever it accepts must read back consistently and survive a rewrite.
func FuzzParseHeader(f *testing.F) {
	seed, _ := Marshal([]Tensor{
		{Name: "a", DType: runtime.F32, Shape: []int{2}, F32: []float32{1, 2}},
		{Name: "b", DType: runtime.BF16, Shape: []int{1, 1}, F32: []float32{3}},
		{Name: "c", RawDType: "I64", Shape: []int{1}, Raw: make([]byte, 8)},
	}, map[string]string{"format": "pt"})
	f.Add(seed)
	f.Add(rawFile(`{}`, nil))
	f.Add(rawFile(`{"x":{"dtype":"F4","shape":[2],"data_offsets":[0,1]}}`, []byte{0x12}))
	f.Add(rawFile(`{"x":{"dtype":"F16","shape":[2],"data_offsets":[0,4]},"y":{"dtype":"F16","shape":[1],"data_offsets":[2,4]}}`, make([]byte, 4)))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, data []byte) {
		file, err := Parse("fuzz", data)
		if err != nil {
			return
		}
		hl := binary.LittleEndian.Uint64(data)
		dataLen := int64(len(data)) - 8 - int64(hl)
		var total int64
		var tensors []Tensor
		for _, name := range file.Names() {
			info, err := file.Info(name)
			require.NoError(t, err, "Info(%q)", name)
			b, err := file.Bytes(name)
			require.NoError(t, err, "Bytes(%q)", name)
			require.Equal(t, info.Size(), int64(len(b)), "Bytes(%q): byte count vs info size", name)
			total += info.Size()
			if _, ok := info.Float(); ok {
				v, err := file.Float32s(name)
				require.NoError(t, err, "Float32s(%q)", name)
				require.Equal(t, info.NumElements(), int64(len(v)), "Float32s(%q): value count", name)
			} else {
				_, err := file.Float64s(name)
				require.Error(t, err, "Float64s(%q) of %s succeeded", name, info.DType)
			}
			tensors = append(tensors, Tensor{Name: name, Shape: info.Shape, RawDType: info.DType, Raw: b})
		}
		require.Equal(t, dataLen, total, "bytes covered by tensors")
		again, err := Marshal(tensors, file.Metadata())
		require.NoError(t, err, "rewrite")
		file2, err := Parse("rewrite", again)
		require.NoError(t, err, "reparse")
		require.Equal(t, file.Len(), file2.Len(), "tensor count after rewrite")
		for _, name := range file.Names() {
			b1, _ := file.Bytes(name)
			b2, err := file2.Bytes(name)
			require.NoError(t, err, "tensor %q after rewrite", name)
			// Compared as strings: a nil and an empty slice are the same bytes.
			require.Equal(t, string(b1), string(b2), "tensor %q changed on rewrite", name)
		}
	})
}
