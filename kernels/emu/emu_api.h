/* emu_api.h: the C interface of the CUDA-on-CPU emulator (for cgo).
 *
 * Kernels register themselves by name (PERK_EXPORT in emu.h) when the program
 * starts. A launch runs the whole grid before it returns: blocks are spread
 * over a pool of worker threads, each block's CUDA threads run as fibers on
 * one worker. Device memory is host memory. */
#ifndef PERK_EMU_API_H
#define PERK_EMU_API_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Return codes of the launch functions. */
enum {
  PERK_EMU_OK = 0,
  PERK_EMU_UNKNOWN_KERNEL = 1, /* no kernel of that name or id */
  PERK_EMU_INVALID_LAUNCH = 2  /* bad dimensions, shared memory or parameter count */
};

/* perk_emu_find returns the id (>= 0) of the kernel called name and stores
 * its parameter count in *nparams (when nparams is not NULL), or returns -1
 * when no such kernel is registered. */
int perk_emu_find(const char* name, int* nparams);

/* perk_emu_kernel_count and perk_emu_kernel_name list the registered kernels
 * by id (0 .. count-1); the name is NULL for an id out of range. */
int perk_emu_kernel_count(void);
const char* perk_emu_kernel_name(int id);

/* perk_emu_launch_id runs kernel id on grid[0]×grid[1]×grid[2] blocks of
 * block[0]×block[1]×block[2] threads with shmem bytes of dynamic shared
 * memory; params holds one 8-byte slot per kernel parameter. It returns
 * PERK_EMU_OK when the grid has run, or an error code with a message in
 * err[0..errlen) (NUL-terminated when errlen > 0). A kernel whose threads
 * disagree on a barrier aborts the process instead (see emu.h). */
int perk_emu_launch_id(int id, const int64_t grid[3], const int64_t block[3], int64_t shmem,
                       const uint64_t* params, int nparams, char* err, size_t errlen);

/* perk_emu_launch is perk_emu_launch_id with the kernel given by name. */
int perk_emu_launch(const char* name, const int64_t grid[3], const int64_t block[3], int64_t shmem,
                    const uint64_t* params, int nparams, char* err, size_t errlen);

/* perk_emu_set_workers sets the number of worker threads for later launches
 * (n <= 0: one per CPU; at most 1024); perk_emu_workers returns the current
 * number. */
void perk_emu_set_workers(int n);
int perk_emu_workers(void);

/* Emulated device memory: perk_emu_alloc returns n bytes aligned to 256, or
 * 0 when the host cannot supply them; perk_emu_free releases them. The copy
 * helpers take device addresses as integers and do no bounds checks. */
uint64_t perk_emu_alloc(size_t n);
void perk_emu_free(uint64_t p);
void perk_emu_write(uint64_t dst, const void* src, size_t n);
void perk_emu_read(void* dst, uint64_t src, size_t n);
void perk_emu_copy(uint64_t dst, uint64_t src, size_t n);
void perk_emu_fill(uint64_t dst, int value, size_t n);

#ifdef __cplusplus
}
#endif

#endif
