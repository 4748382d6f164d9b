#include "selftest.cu"
