// Emulator build of kernels/embed.cu.
#include "../embed.cu"
