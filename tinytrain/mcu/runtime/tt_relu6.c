/* tt_relu6.c - ReLU6. The training forward keeps one bit per element (set where 0 < x < 6, the
 * elements the gradient passes through) instead of the float input. */
#include "tt_kernels.h"

void tt_relu6_forward(float *y, int n)
{
    for (int i = 0; i < n; i++)
        y[i] = y[i] < 0.0f ? 0.0f : (y[i] > 6.0f ? 6.0f : y[i]);
}

void tt_relu6_forward_mask(float *y, uint32_t *mask, int n)
{
    for (int w = 0; w < (n + 31) / 32; w++)
        mask[w] = 0;
    for (int i = 0; i < n; i++) {
        if (y[i] > 0.0f && y[i] < 6.0f)
            mask[i >> 5] |= 1u << (i & 31);
        y[i] = y[i] < 0.0f ? 0.0f : (y[i] > 6.0f ? 6.0f : y[i]);
    }
}

void tt_relu6_backward(float *g, const uint32_t *mask, int n)
{
    for (int i = 0; i < n; i++)
        if (!(mask[i >> 5] & (1u << (i & 31))))
            g[i] = 0.0f;
}
