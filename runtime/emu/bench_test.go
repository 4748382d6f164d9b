package emu

import (
	"testing"

	"github.com/perkgo/perk/runtime"
)

// BenchmarkLaunchOverhead measures launching the empty kernel.
func BenchmarkLaunchOverhead(b *testing.B) {
	d, err := New()
	if err != nil {
		b.Fatal(err)
	}
	defer d.Close()
	m, err := d.LoadModule("selftest", nil, []string{"emutest_empty"})
	if err != nil {
		b.Fatal(err)
	}
	fn, err := m.Function("emutest_empty")
	if err != nil {
		b.Fatal(err)
	}
	shapes := []struct {
		name        string
		grid, block int
	}{
		{"1x32", 1, 32},
		{"64x256", 64, 256},
	}
	for _, s := range shapes {
		b.Run(s.name, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				if err := d.Launch(fn, runtime.D1(s.grid), runtime.D1(s.block), 0, 0, nil); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
