// Emulator build of kernels/cast.cu.
#include "../cast.cu"
