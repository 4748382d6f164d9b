// Emulator build of kernels/rope.cu.
#include "../rope.cu"
