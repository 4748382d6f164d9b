// Emulator build of kernels/optim.cu.
#include "../optim.cu"
