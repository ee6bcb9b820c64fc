/* rope.c - the rotary-embedding table every backend uses. */
#include "rope.h"

#include <math.h>

/* cos/sin for each rotated pair of a row at position pos, as ggml computes
 * them (theta advanced by repeated multiplication, in float), including
 * linear and YaRN scaling. */
void rope_table(const hparams *hp, uint32_t pos, float *cs)
{
    float theta_scale = powf(hp->rope_base, -2.0f / (float)hp->n_rot);
    float freq_scale = 1.0f / hp->rope_factor;
    float ext = hp->scaling == ROPE_SCALING_YARN ? 1.0f : 0.0f;
    float mscale = 1.0f, lo = 0, hi = 0;
    if (hp->scaling == ROPE_SCALING_YARN) {
        float n = (float)hp->n_rot, orig = (float)hp->n_ctx_orig, base = logf(hp->rope_base);
        lo = floorf(n * logf(orig / (hp->yarn_beta_fast * 2 * (float)M_PI)) / (2 * base));
        hi = ceilf(n * logf(orig / (hp->yarn_beta_slow * 2 * (float)M_PI)) / (2 * base));
        lo = lo > 0 ? lo : 0;
        hi = hi < n - 1 ? hi : n - 1;
        mscale = hp->yarn_attn_factor * (1.0f + 0.1f * logf(hp->rope_factor));
    }
    float theta = (float)pos;
    for (uint32_t i = 0; i < hp->n_rot / 2; i++) {
        float t_interp = freq_scale * theta, t = t_interp;
        if (ext != 0.0f) {
            float y = ((float)i - lo) / fmaxf(0.001f, hi - lo);
            float ramp = (1.0f - fminf(1.0f, fmaxf(0.0f, y))) * ext;
            t = t_interp * (1 - ramp) + theta * ramp;
        }
        cs[2 * i] = cosf(t) * mscale;
        cs[2 * i + 1] = sinf(t) * mscale;
        theta *= theta_scale;
    }
}
