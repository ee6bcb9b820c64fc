/* cuda_runtime.h - stands in for CUDA's own under the host emulation (cuda_emu.h). */
#include "cuda_emu.h"
