// Emulator build of kernels/lora.cu.
#include "../lora.cu"
