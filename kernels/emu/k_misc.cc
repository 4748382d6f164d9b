// Emulator build of kernels/misc.cu.
#include "../misc.cu"
