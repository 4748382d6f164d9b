// Emulator build of kernels/norm.cu.
#include "../norm.cu"
