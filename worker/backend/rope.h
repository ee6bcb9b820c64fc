/* rope.h - cos/sin of RoPE for one position, shared by the backends so that
 * the CPU and the GPU rotate by the very same angles. */
#ifndef SMQ_ROPE_H
#define SMQ_ROPE_H

#include <stdint.h>

#include "model.h"

/* cs[2i], cs[2i+1] = cos, sin of rotated pair i (i < n_rot/2) at position
 * pos, YaRN attention scaling included. */
void rope_table(const hparams *hp, uint32_t pos, float *cs);

#endif
