// Emulator build of kernels/attention.cu.
#include "../attention.cu"
