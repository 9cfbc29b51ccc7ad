/* tt_depthwise.c - depthwise k x k convolution (stride 1 or 2, padding k/2): forward, input
 * gradient, weight gradient of the selected channels.
 *
 * In place (y == x): each output channel is computed into `tmp` (one output channel) and then
 * copied over the input; output channel c lands at c * h_out^2, never beyond input channel c,
 * so no input channel is overwritten before it is read (h_out <= h_in).
 */
#include "tt_kernels.h"
#include "tt_model.h"

#define TT_MAX_KK 49   /* kernels up to 7 x 7 */

/* channel c's kernel: from the trained slice, the float array, or the int8 array dequantised into buf */
static const float *kernel_of(const float *w, const tt_slice *s, int c, int kk, float *buf)
{
    if (s->n > 0 && s->slot[c] >= 0)
        return s->w + (long)s->slot[c] * kk;
    if (s->q) {
        for (int i = 0; i < kk; i++)
            buf[i] = (float)s->q[(long)c * kk + i] * s->q_scale[c];
        return buf;
    }
    return w + (long)c * kk;
}

static void channel_forward(const float *xc, float *out, int h_in, int h_out, int k, int stride,
                            const float *wk)
{
    const int pad = k / 2;
    for (int oy = 0; oy < h_out; oy++) {
        for (int ox = 0; ox < h_out; ox++) {
            float acc = 0.0f;
            for (int ky = 0; ky < k; ky++) {
                const int iy = oy * stride + ky - pad;
                if (iy < 0 || iy >= h_in)
                    continue;
                for (int kx = 0; kx < k; kx++) {
                    const int ix = ox * stride + kx - pad;
                    if (ix >= 0 && ix < h_in)
                        acc += wk[ky * k + kx] * xc[iy * h_in + ix];
                }
            }
            out[oy * h_out + ox] = acc;
        }
    }
}

void tt_dw_forward(const float *x, float *y, float *tmp, int c, int h_in, int h_out, int k,
                   int stride, const float *w, const tt_slice *s)
{
    const int in_place = (x == y);
    const long hw_in = (long)h_in * h_in, hw_out = (long)h_out * h_out;
    float buf[TT_MAX_KK];
    for (int ch = 0; ch < c; ch++) {
        float *out = in_place ? tmp : y + ch * hw_out;
        channel_forward(x + ch * hw_in, out, h_in, h_out, k, stride, kernel_of(w, s, ch, k * k, buf));
        if (in_place) {
            float *dst = y + ch * hw_out;
            for (long p = 0; p < hw_out; p++)
                dst[p] = tmp[p];
        }
    }
}

void tt_dw_backward_input(const float *gy, float *gx, int c, int h_in, int h_out, int k,
                          int stride, const float *w, const tt_slice *s)
{
    const int pad = k / 2;
    const long hw_in = (long)h_in * h_in, hw_out = (long)h_out * h_out;
    float buf[TT_MAX_KK];
    for (int ch = 0; ch < c; ch++) {
        const float *wk = kernel_of(w, s, ch, k * k, buf);
        const float *g = gy + ch * hw_out;
        float *gxc = gx + ch * hw_in;
        for (long p = 0; p < hw_in; p++)
            gxc[p] = 0.0f;
        for (int oy = 0; oy < h_out; oy++) {
            for (int ox = 0; ox < h_out; ox++) {
                const float gv = g[oy * h_out + ox];
                for (int ky = 0; ky < k; ky++) {
                    const int iy = oy * stride + ky - pad;
                    if (iy < 0 || iy >= h_in)
                        continue;
                    for (int kx = 0; kx < k; kx++) {
                        const int ix = ox * stride + kx - pad;
                        if (ix >= 0 && ix < h_in)
                            gxc[iy * h_in + ix] += wk[ky * k + kx] * gv;
                    }
                }
            }
        }
    }
}

/* `saved` holds the input channels listed in s->sel, in that order. */
void tt_dw_backward_weight(const float *gy, const float *saved, float *gw, int h_in, int h_out,
                           int k, int stride, const tt_slice *s)
{
    const int pad = k / 2;
    const long hw_in = (long)h_in * h_in, hw_out = (long)h_out * h_out;
    for (int j = 0; j < s->n; j++) {
        const float *g = gy + s->sel[j] * hw_out;
        const float *xc = saved + j * hw_in;
        for (int ky = 0; ky < k; ky++) {
            for (int kx = 0; kx < k; kx++) {
                float acc = 0.0f;
                for (int oy = 0; oy < h_out; oy++) {
                    const int iy = oy * stride + ky - pad;
                    if (iy < 0 || iy >= h_in)
                        continue;
                    for (int ox = 0; ox < h_out; ox++) {
                        const int ix = ox * stride + kx - pad;
                        if (ix >= 0 && ix < h_in)
                            acc += g[oy * h_out + ox] * xc[iy * h_in + ix];
                    }
                }
                gw[(j * k + ky) * k + kx] = acc;
            }
        }
    }
}
