package emu

import (
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// scheduleEnv chooses the emulator's fiber order (see "Scheduling" in
// emu_runtime.cc); the runtime reads it at the first launch of the process.
const scheduleEnv = "PERK_EMU_SCHEDULE"

// schedules are the values of scheduleEnv; the first is the default.
var schedules = []string{"ahead", "reverse", "alternate", "roundrobin"}

// scheduleMode returns the schedule this process runs under.
func scheduleMode() string {
	if m := os.Getenv(scheduleEnv); m != "" {
		return m
	}
	return schedules[0]
}

// aheadOf reports whether, under schedule mode, warp x of block b runs before
// warp y in a barrier phase: the ahead schedule (and roundrobin's thread-order
// sweeps) start with the lowest warp, reverse with the highest, alternate
// as ahead in even blocks and as reverse in odd ones.
func aheadOf(mode string, b, x, y int) bool {
	switch {
	case mode == "reverse", mode == "alternate" && b%2 == 1:
		return x > y
	default:
		return x < y
	}
}

// launchSeq makes the data of each launch of the race kernels unique, so that
// shared memory left over from an earlier block or launch (static __shared__
// arrays keep their contents on a worker thread) never holds the right answer.
var launchSeq atomic.Int32

// TestRaceAcrossWarpCollective: one warp writes shared memory and another
// reads it after a warp collective (a shuffle) or through one (ldmatrix). With
// __syncthreads in between the answer is right; without it the answer is
// wrong whenever the schedule runs the reader ahead of the writer, which for
// the shuffle the old lockstep order (roundrobin) never did.
func TestRaceAcrossWarpCollective(t *testing.T) {
	mode := scheduleMode()
	const blocks, threads = 2, 128
	pairs := [][2]int{{1, 0}, {0, 1}, {3, 0}, {0, 3}, {2, 1}, {1, 2}}
	for _, kernel := range []string{"emutest_race_shfl", "emutest_race_ldmatrix"} {
		for _, p := range pairs {
			writer, reader := p[0], p[1]
			for _, sync := range []int{1, 0} {
				name := fmt.Sprintf("%s/writer%d/reader%d/sync%d", strings.TrimPrefix(kernel, "emutest_race_"), writer, reader, sync)
				t.Run(name, func(t *testing.T) {
					seq := int(launchSeq.Add(1))
					out := alloc(t, blocks*32*4)
					want := make([]uint32, blocks*32)
					if kernel == "emutest_race_shfl" {
						in := make([]int32, blocks*32)
						for i := range in {
							in[i] = int32(seq<<16 | i)
						}
						for i := range want {
							want[i] = uint32(in[i^1])
						}
						launch(t, kernel, d1(blocks), d1(threads), 0, upload(t, in), out, uint64(writer), uint64(reader), uint64(sync))
					} else {
						in := make([]uint16, blocks*64)
						for i := range in {
							in[i] = uint16(seq<<7 | i)
						}
						for b := 0; b < blocks; b++ {
							for l := 0; l < 32; l++ {
								want[32*b+l] = uint32(in[64*b+2*l]) | uint32(in[64*b+2*l+1])<<16
							}
						}
						launch(t, kernel, d1(blocks), d1(threads), 0, upload(t, in), out, uint64(writer), uint64(reader), uint64(sync))
					}
					got := download[uint32](out, blocks*32)
					for b := 0; b < blocks; b++ {
						g, w := got[32*b:32*b+32], want[32*b:32*b+32]
						exposed := sync == 0 && aheadOf(mode, b, reader, writer) &&
							(mode != "roundrobin" || kernel == "emutest_race_ldmatrix")
						if !exposed {
							assert.Equal(t, w, g, "block %d must be right under schedule %s", b, mode)
							continue
						}
						for l := range w {
							assert.NotEqual(t, w[l], g[l], "block %d lane %d must be wrong under schedule %s", b, l, mode)
						}
					}
				})
			}
		}
	}
}

// TestRaceEndOfLoop: without the __syncthreads at the end of a k-loop
// iteration, one warp stores the next iteration's values while the other
// still has to read this iteration's, which every schedule but roundrobin
// exposes.
func TestRaceEndOfLoop(t *testing.T) {
	mode := scheduleMode()
	const blocks, n = 3, 64
	rng := rand.New(rand.NewSource(7))
	for _, iters := range []int{1, 2, 5} {
		for _, syncEnd := range []int{1, 0} {
			t.Run(fmt.Sprintf("iters%d/sync_end%d", iters, syncEnd), func(t *testing.T) {
				in := make([]int32, blocks*iters*n)
				for i := range in {
					in[i] = int32(rng.Intn(1 << 20))
				}
				want := make([]int32, blocks*n)
				for b := 0; b < blocks; b++ {
					for i := 0; i < iters; i++ {
						for th := 0; th < n; th++ {
							want[b*n+th] += in[(b*iters+i)*n+th^33]
						}
					}
				}
				out := alloc(t, blocks*n*4)
				launch(t, "emutest_race_loop", d1(blocks), d1(n), 0, upload(t, in), out, uint64(iters), uint64(syncEnd))
				got := download[int32](out, blocks*n)
				if syncEnd == 1 || iters == 1 || mode == "roundrobin" {
					assert.Equal(t, want, got, "schedule %s", mode)
					return
				}
				// The warp that runs second reads the first warp's next
				// iteration: every one of its threads is wrong.
				for b := 0; b < blocks; b++ {
					second := 1
					if !aheadOf(mode, b, 0, 1) {
						second = 0
					}
					for th := 32 * second; th < 32*second+32; th++ {
						assert.NotEqual(t, want[b*n+th], got[b*n+th], "block %d thread %d must be wrong under schedule %s", b, th, mode)
					}
				}
			})
		}
	}
}

// scheduleTests are the tests that TestSchedules runs under every schedule.
const scheduleTests = "^(TestRaceAcrossWarpCollective|TestRaceEndOfLoop|TestMissingSyncthreads|TestDivergence|" +
	"TestShufflesAndVotes|TestSyncthreadsCountAndOr|TestDynamicSharedMemory|TestCpAsync|TestMMAFragments|" +
	"TestLdmatrixMMA)$"

// TestSchedules runs the scheduling-sensitive tests in child processes (this
// test binary) under each value of PERK_EMU_SCHEDULE.
func TestSchedules(t *testing.T) {
	for _, mode := range schedules {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			cmd := exec.Command(os.Args[0], "-test.run="+scheduleTests, "-test.count=1")
			cmd.Env = append(os.Environ(), scheduleEnv+"="+mode)
			out, err := cmd.CombinedOutput()
			require.NoError(t, err, "tests under %s=%s:\n%s", scheduleEnv, mode, out)
		})
	}
}

// TestUnknownSchedule: with an unknown PERK_EMU_SCHEDULE every launch fails
// with an invalid-launch error that names the variable.
func TestUnknownSchedule(t *testing.T) {
	if scheduleMode() != "bogus" {
		cmd := exec.Command(os.Args[0], "-test.run=^TestUnknownSchedule$", "-test.count=1", "-test.v")
		cmd.Env = append(os.Environ(), scheduleEnv+"=bogus")
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "child:\n%s", out)
		assert.Contains(t, string(out), "--- PASS: TestUnknownSchedule")
		return
	}
	err := Launch("emutest_empty", d1(1), d1(32), 0, nil)
	require.ErrorIs(t, err, ErrInvalidLaunch)
	assert.Contains(t, err.Error(), `kernel emutest_empty: PERK_EMU_SCHEDULE="bogus" is not one of ahead, reverse, alternate, roundrobin`)
}
