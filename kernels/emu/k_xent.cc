// Emulator build of kernels/xent.cu.
#include "../xent.cu"
