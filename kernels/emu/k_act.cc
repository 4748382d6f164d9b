// Emulator build of kernels/act.cu.
#include "../act.cu"
