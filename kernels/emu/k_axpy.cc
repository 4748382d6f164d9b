// Emulator build of kernels/axpy.cu.
#include "../axpy.cu"
