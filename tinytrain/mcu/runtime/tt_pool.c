/* tt_pool.c - global average pooling: features f[c] = mean over the map of y[c]. */
#include "tt_kernels.h"

void tt_pool_forward(const float *y, float *f, int c, int hw)
{
    for (int ch = 0; ch < c; ch++) {
        const float *yc = y + (long)ch * hw;
        float acc = 0.0f;
        for (int p = 0; p < hw; p++)
            acc += yc[p];
        f[ch] = acc / (float)hw;
    }
}

void tt_pool_backward(const float *gf, float *gy, int c, int hw)
{
    for (int ch = 0; ch < c; ch++) {
        const float g = gf[ch] / (float)hw;
        for (int p = 0; p < hw; p++)
            gy[(long)ch * hw + p] = g;
    }
}
