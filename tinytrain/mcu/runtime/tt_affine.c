/* tt_affine.c - frozen BatchNorm folded into a per-channel affine map, y = x * scale + shift.
 *
 * It keeps nothing for backward: the input gradient needs only `scale`, the shift gradient only
 * the output gradient.
 */
#include "tt_kernels.h"

void tt_affine_forward(float *y, const float *scale, const float *shift, int c, int hw)
{
    for (int ch = 0; ch < c; ch++) {
        float *yc = y + (long)ch * hw;
        const float s = scale[ch], t = shift[ch];
        for (int p = 0; p < hw; p++)
            yc[p] = t + yc[p] * s;
    }
}

/* gx = gy * scale; gx may be gy (in place) */
void tt_affine_backward(const float *gy, float *gx, const float *scale, int c, int hw)
{
    for (int ch = 0; ch < c; ch++) {
        const float s = scale[ch];
        for (long p = (long)ch * hw; p < (long)(ch + 1) * hw; p++)
            gx[p] = gy[p] * s;
    }
}

/* gshift[c] = sum_p gy[c][p] (the gradient of one step; no accumulation) */
void tt_affine_backward_shift(const float *gy, float *gshift, int c, int hw)
{
    for (int ch = 0; ch < c; ch++) {
        const float *g = gy + (long)ch * hw;
        float acc = 0.0f;
        for (int p = 0; p < hw; p++)
            acc += g[p];
        gshift[ch] = acc;
    }
}
