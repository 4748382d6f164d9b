// Emulator build of kernels/reduce.cu.
#include "../reduce.cu"
