// Emulator build of kernels/gemm.cu.
#include "../gemm.cu"
