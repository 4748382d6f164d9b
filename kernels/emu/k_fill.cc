// Emulator build of kernels/fill.cu.
#include "../fill.cu"
