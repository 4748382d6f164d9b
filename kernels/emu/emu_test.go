package emu

import (
	"math"
	"math/rand"
	"os"
	"os/exec"
	"sort"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestLookupAndKernels(t *testing.T) {
	n, ok := Lookup("emutest_params")
	require.True(t, ok)
	assert.Equal(t, 8, n)
	n, ok = Lookup("emutest_empty")
	require.True(t, ok)
	assert.Equal(t, 0, n)
	_, ok = Lookup("no_such_kernel")
	assert.False(t, ok)
	assert.Contains(t, Kernels(), "emutest_shfl")
}

func TestLaunchErrors(t *testing.T) {
	err := Launch("no_such_kernel", d1(1), d1(1), 0, nil)
	require.ErrorIs(t, err, ErrUnknownKernel)
	assert.Contains(t, err.Error(), "no_such_kernel")

	err = Launch("emutest_params", d1(1), d1(1), 0, []uint64{1, 2})
	require.ErrorIs(t, err, ErrInvalidLaunch)
	assert.Contains(t, err.Error(), "takes 8 parameters, got 2")

	bad := []struct {
		name         string
		grid, block  [3]int
		shmem        int
		wantContains string
	}{
		{"block too big", d1(1), [3]int{32, 33, 1}, 0, "exceeds 1024"},
		{"zero grid", [3]int{0, 1, 1}, d1(1), 0, "invalid launch shape"},
		{"zero block", d1(1), [3]int{1, 0, 1}, 0, "invalid launch shape"},
		{"negative grid", [3]int{-1, 1, 1}, d1(1), 0, "invalid launch shape"},
		{"grid y too big", [3]int{1, 65536, 1}, d1(1), 0, "invalid launch shape"},
		{"block z too big", d1(1), [3]int{1, 1, 65}, 0, "invalid launch shape"},
		{"negative shmem", d1(1), d1(1), -1, "dynamic shared memory"},
		{"too much shmem", d1(1), d1(1), 1 << 20, "dynamic shared memory"},
	}
	for _, c := range bad {
		t.Run(c.name, func(t *testing.T) {
			err := Launch("emutest_empty", c.grid, c.block, c.shmem, nil)
			require.ErrorIs(t, err, ErrInvalidLaunch)
			assert.Contains(t, err.Error(), c.wantContains)
		})
	}
	// The largest legal block runs.
	launch(t, "emutest_empty", d1(2), [3]int{32, 32, 1}, 0)
}

func TestParams(t *testing.T) {
	fo := alloc(t, 4)
	lo := alloc(t, 5*8)
	d := -1234.5678
	b, c := int64(-7), int64(-1)<<40
	launch(t, "emutest_params", d1(1), d1(1), 0,
		fo, lo, f32p(3.25), uint64(b), uint64(c), math.Float64bits(d), 0xfe, 0x3c00)
	assert.Equal(t, []float32{3.25}, download[float32](fo, 1))
	assert.Equal(t, []int64{-7, -1 << 40, int64(math.Float64bits(d)), 0xfe, 0x3c00}, download[int64](lo, 5))
}

func TestIndexVariables(t *testing.T) {
	grid, block := [3]int{3, 2, 2}, [3]int{4, 3, 2}
	nb, nt := 12, 24
	out := alloc(t, nb*nt*12*4)
	launch(t, "emutest_index", grid, block, 0, out)
	got := download[int32](out, nb*nt*12)
	for bz := 0; bz < 2; bz++ {
		for by := 0; by < 2; by++ {
			for bx := 0; bx < 3; bx++ {
				for tz := 0; tz < 2; tz++ {
					for ty := 0; ty < 3; ty++ {
						for tx := 0; tx < 4; tx++ {
							bl := bx + 3*(by+2*bz)
							tl := tx + 4*(ty+3*tz)
							o := 12 * (bl*nt + tl)
							want := []int32{int32(tx), int32(ty), int32(tz), int32(bx), int32(by), int32(bz), 4, 3, 2, 3, 2, 2}
							require.Equal(t, want, got[o:o+12], "block (%d,%d,%d) thread (%d,%d,%d)", bx, by, bz, tx, ty, tz)
						}
					}
				}
			}
		}
	}
}

// TestMissingSyncthreads: the kernels with all barriers are right, the same
// kernels with one __syncthreads left out are wrong, every time (block_sum:
// in the blocks where the schedule runs warp 0, which reads what warps 4..7
// store, ahead of them).
func TestMissingSyncthreads(t *testing.T) {
	mode := scheduleMode()
	rng := rand.New(rand.NewSource(1))
	t.Run("block_sum", func(t *testing.T) {
		const blocks = 8
		in := make([]float32, blocks*256)
		want := make([]float32, blocks)
		for i := range in {
			in[i] = float32(rng.Intn(100) + 1)
			want[i/256] += in[i]
		}
		pin := upload(t, in)
		for _, name := range []string{"emutest_block_sum", "emutest_block_sum_nosync"} {
			out := alloc(t, blocks*4)
			launch(t, name, d1(blocks), d1(256), 0, pin, out)
			got := download[float32](out, blocks)
			if name == "emutest_block_sum" {
				assert.Equal(t, want, got, name)
			} else {
				for b := range want {
					if mode == "roundrobin" || aheadOf(mode, b, 0, 4) {
						assert.NotEqual(t, want[b], got[b], "%s block %d must be wrong under schedule %s", name, b, mode)
					} else {
						assert.Equal(t, want[b], got[b], "%s block %d: schedule %s runs the writers first", name, b, mode)
					}
				}
			}
		}
	})
	t.Run("transpose", func(t *testing.T) {
		const n = 64
		in := make([]float32, n*n)
		for i := range in {
			in[i] = rng.Float32() + 1
		}
		pin := upload(t, in)
		for _, name := range []string{"emutest_transpose", "emutest_transpose_nosync"} {
			out := alloc(t, n*n*4)
			launch(t, name, [3]int{n / 32, n / 32, 1}, [3]int{32, 32, 1}, 0, pin, out, uint64(n))
			got := download[float32](out, n*n)
			wrong := 0
			for r := 0; r < n; r++ {
				for c := 0; c < n; c++ {
					if got[r*n+c] != in[c*n+r] {
						wrong++
					}
				}
			}
			if name == "emutest_transpose" {
				assert.Zero(t, wrong, name)
			} else {
				assert.Greater(t, wrong, n*n/4, "%s must be wrong", name)
			}
		}
	})
}

const childEnv = "PERK_EMU_TEST_DIVERGE"

// TestDivergence runs each divergent kernel in a child process (this test
// binary) and checks that it aborts with a barrier divergence message.
func TestDivergence(t *testing.T) {
	if k := os.Getenv(childEnv); k != "" {
		out := Alloc(1 << 12)
		err := Launch(k, d1(1), d1(64), 0, []uint64{out})
		t.Fatalf("launch of %s returned (err %v); it should have aborted", k, err)
		return
	}
	cases := []struct{ kernel, detail string }{
		{"emutest_diverge_exit", "32 of 64 threads wait at __syncthreads (selftest.cu:"},
		{"emutest_diverge_sites", "threads wait at different barrier call sites"},
		{"emutest_diverge_warp", "wait at __shfl_xor_sync (selftest.cu:"},
		{"emutest_diverge_mma", "mma.m16n8k16.bf16"},
	}
	for _, c := range cases {
		t.Run(c.kernel, func(t *testing.T) {
			t.Parallel()
			cmd := exec.Command(os.Args[0], "-test.run=^TestDivergence$")
			cmd.Env = append(os.Environ(), childEnv+"="+c.kernel)
			var stderr strings.Builder
			cmd.Stderr = &stderr
			err := cmd.Run()
			var exitErr *exec.ExitError
			require.ErrorAs(t, err, &exitErr, "child must exit with an error; stderr:\n%s", stderr.String())
			assert.NotZero(t, exitErr.ExitCode())
			msg := stderr.String()
			assert.Contains(t, msg, "barrier divergence")
			assert.Contains(t, msg, "kernel "+c.kernel+", block (0,0,0)")
			assert.Contains(t, msg, c.detail)
			if c.kernel == "emutest_diverge_warp" {
				assert.Contains(t, msg, "lanes 0xffff0000 have exited")
			}
		})
	}
}

func TestShufflesAndVotes(t *testing.T) {
	const blocks, threads = 2, 64
	const n = blocks * threads
	rng := rand.New(rand.NewSource(2))
	in := make([]int32, n)
	for i := range in {
		in[i] = int32(rng.Intn(999))
	}
	in[5] = 1000 // __any_sync true in warp 0 only
	in[40] = -3  // __all_sync(v >= 0) false in warp 1 only
	pin := upload(t, in)
	io := alloc(t, n*16*4)
	fo := alloc(t, n*2*4)
	do := alloc(t, n*8)
	lo := alloc(t, n*8)
	launch(t, "emutest_shfl", d1(blocks), d1(threads), 0, pin, io, fo, do, lo)
	gi := download[int32](io, n*16)
	gf := download[float32](fo, n*2)
	gd := download[float64](do, n)
	gl := download[int64](lo, n)
	for w := 0; w < n/32; w++ {
		v := in[32*w : 32*w+32]
		var ballot1, ballot2 uint32
		any1000, allPos := int32(0), int32(1)
		for l := 0; l < 32; l++ {
			if v[l]&1 != 0 {
				ballot1 |= 1 << l
			}
			if v[l]&2 != 0 && (l>>2)&1 == 0 {
				ballot2 |= 1 << l
			}
			if v[l] == 1000 {
				any1000 = 1
			}
			if v[l] < 0 {
				allPos = 0
			}
		}
		for l := 0; l < 32; l++ {
			own := v[l]
			pick := func(ok bool, src int) int32 {
				if ok {
					return v[src]
				}
				return own
			}
			want := make([]int32, 16)
			want[0] = v[(l*7+3)&31]
			want[1] = v[(l&^7)+((l+1)&7)]
			want[2] = v[l^5]
			want[3] = pick(l >= 16, l^17)
			want[4] = pick(l >= 3, l-3)
			want[5] = pick(l&7 >= 2, l-2)
			want[6] = pick(l+2 < 32, l+2)
			want[7] = pick(l&15+3 < 16, l+3)
			want[8] = int32(ballot1)
			want[9] = any1000
			want[10] = allPos
			if l < 16 {
				want[11] = pick(l+1 < 16, l+1)
			} else {
				want[11] = pick(l&15 >= 1, l-1)
			}
			if (l>>2)&1 == 0 {
				want[12] = int32(ballot2)
			} else {
				want[12] = -1
			}
			if l < 10 {
				want[13] = 0x3ff
			} else {
				want[13] = ^int32(0x3ff)
			}
			want[14] = v[(l+1)&31]
			want[15] = pick(l >= 1, l-1)
			g := 32*w + l
			require.Equal(t, want, gi[16*g:16*g+16], "warp %d lane %d", w, l)
			down4 := pick(l+4 < 32, l+4)
			assert.Equal(t, float32(down4)*0.25, gf[2*g], "float down, lane %d", l)
			assert.Equal(t, float32(v[l^1])*0.5, gf[2*g+1], "float xor, lane %d", l)
			assert.Equal(t, float64(v[31-l])*0.125, gd[g], "double idx, lane %d", l)
			assert.Equal(t, int64(v[l^3])<<32|int64(l^3), gl[g], "int64 xor, lane %d", l)
		}
	}
}

func TestSyncthreadsCountAndOr(t *testing.T) {
	const blocks, threads = 3, 96
	in := make([]int32, blocks*threads)
	for i := range in {
		in[i] = 1
	}
	in[threads+7] = 0 // block 1: one zero
	for i := 2 * threads; i < 3*threads; i++ {
		in[i] = 0 // block 2: all zero
	}
	out := alloc(t, blocks*3*4)
	launch(t, "emutest_syncthreads_ops", d1(blocks), d1(threads), 0, upload(t, in), out)
	assert.Equal(t, []int32{96, 1, 1, 95, 0, 1, 0, 0, 0}, download[int32](out, blocks*3))
}

func TestAtomicsAcrossBlocks(t *testing.T) {
	const blocks, threads = 64, 256
	const total = blocks * threads
	ctr := make([]int32, 9)
	ctr[3] = -1 // unsigned min starts at the largest value
	pc := upload(t, ctr)
	px := upload(t, []uint64{0, 0})
	pe := alloc(t, total*4)
	launch(t, "emutest_atomics", d1(blocks), d1(threads), 0, pc, px, pe)
	got := download[int32](pc, 9)
	assert.Equal(t, int32(total), got[0], "atomicAdd int")
	assert.Equal(t, int32(-2*total), got[1], "atomicSub")
	assert.Equal(t, int32(total-1), got[2], "atomicMax")
	assert.Equal(t, uint32(5), uint32(got[3]), "atomicMin unsigned")
	assert.Equal(t, int32(total), got[4], "atomicCAS loop")
	assert.Equal(t, int32(total), got[5], "atomicAdd unsigned")
	assert.Equal(t, int32(-1), got[6], "atomicOr")
	assert.Equal(t, float32(total), math.Float32frombits(uint32(got[8])), "atomicAdd float")
	xs := download[uint64](px, 2)
	assert.Equal(t, uint64(total), xs[0], "atomicAdd unsigned long long")
	assert.Equal(t, float64(total)*0.5, math.Float64frombits(xs[1]), "atomicAdd double")
	// atomicExch: the values handed back plus the final one are {0, 0..total-1}.
	ex := append(download[int32](pe, total), got[7])
	sort.Slice(ex, func(i, j int) bool { return ex[i] < ex[j] })
	want := make([]int32, 0, total+1)
	want = append(want, 0)
	for g := 0; g < total; g++ {
		want = append(want, int32(g))
	}
	assert.Equal(t, want, ex, "atomicExch")
}

func TestDynamicSharedMemory(t *testing.T) {
	const blocks, threads = 5, 96
	const n = 2 * threads
	in := make([]float32, blocks*n)
	for i := range in {
		in[i] = float32(i) + 0.5
	}
	out := alloc(t, blocks*n*4)
	aligned := alloc(t, blocks*4)
	launch(t, "emutest_dyn_smem", d1(blocks), d1(threads), n*4, upload(t, in), out, aligned)
	got := download[float32](out, blocks*n)
	for b := 0; b < blocks; b++ {
		for i := 0; i < n; i++ {
			require.Equal(t, in[b*n+n-1-i], got[b*n+i], "block %d element %d", b, i)
		}
	}
	assert.Equal(t, []int32{1, 1, 1, 1, 1}, download[int32](aligned, blocks))
}

func TestCpAsync(t *testing.T) {
	in := make([]float32, 64)
	for i := range in {
		in[i] = float32(i + 1)
	}
	pin := upload(t, in)
	for _, valid := range []int{256, 100, 0} {
		out := alloc(t, 64*4)
		launch(t, "emutest_cp_async", d1(1), d1(16), 0, pin, out, uint64(valid))
		got := download[float32](out, 64)
		for i := 0; i < 64; i++ {
			want := float32(0)
			if 4*i < valid {
				want = in[i]
			}
			require.Equal(t, want, got[i], "valid %d element %d", valid, i)
		}
	}
}

func TestSetWorkers(t *testing.T) {
	orig := Workers()
	defer SetWorkers(orig)
	for _, n := range []int{1, 3} {
		SetWorkers(n)
		assert.Equal(t, n, Workers())
		const blocks = 16
		in := make([]float32, blocks*256)
		for i := range in {
			in[i] = 1
		}
		out := alloc(t, blocks*4)
		launch(t, "emutest_block_sum", d1(blocks), d1(256), 0, upload(t, in), out)
		for _, s := range download[float32](out, blocks) {
			assert.Equal(t, float32(256), s)
		}
	}
	SetWorkers(0)
	assert.GreaterOrEqual(t, Workers(), 1)
}
