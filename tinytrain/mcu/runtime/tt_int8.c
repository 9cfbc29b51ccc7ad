/* tt_int8.c - the int8 kernels of the frozen prefix (int8 exports only): the input table, k x k,
 * 1 x 1 and depthwise convs, the residual add, and the dequantisation at the prefix's end.
 *
 * Integers only. A conv accumulates (x - zero_in) * w in int32 from the int32 bias, then requantises
 * each output channel with a fixed-point multiplier, y = zero_out + ((acc * M0 + 2^(s-1)) >> s),
 * clamped to [lo, hi] (ReLU6 in the int8 domain is the clamp). The PyTorch reference
 * (tinytrain/mcu/quant.py) does the same integer operations, so the results are equal bit for bit.
 * Padding positions contribute nothing, i.e. the real value 0.
 */
#include "tt_kernels.h"

static int8_t requantise(int32_t acc, const tt_qconv *q, int co)
{
    const int s = q->shift[co];
    int64_t v = ((int64_t)acc * q->mult[co] + ((int64_t)1 << (s - 1))) >> s;
    v += q->zero_out;
    if (v < q->lo)
        v = q->lo;
    if (v > q->hi)
        v = q->hi;
    return (int8_t)v;
}

/* sum over one k x k window of one input channel of w * (x - zx); padding positions add nothing */
static int32_t window_sum(const int8_t *xc, const int8_t *wk, int h_in, int k, int stride, int oy, int ox, int zx)
{
    const int pad = k / 2;
    int32_t acc = 0;
    for (int ky = 0; ky < k; ky++) {
        const int iy = oy * stride + ky - pad;
        if (iy < 0 || iy >= h_in)
            continue;
        for (int kx = 0; kx < k; kx++) {
            const int ix = ox * stride + kx - pad;
            if (ix >= 0 && ix < h_in)
                acc += (int32_t)wk[ky * k + kx] * (xc[iy * h_in + ix] - zx);
        }
    }
    return acc;
}

/* rgb: HWC bytes; x: CHW int8 through the per-channel table lut[c * 256 + pixel] */
void tt_q_image(const uint8_t *rgb, int8_t *x, long hw, const int8_t *lut)
{
    for (int c = 0; c < 3; c++)
        for (long p = 0; p < hw; p++)
            x[c * hw + p] = lut[c * 256 + rgb[p * 3 + c]];
}

void tt_q_conv_forward(const int8_t *x, int8_t *y, int cin, int cout, int h_in, int h_out, int k,
                       int stride, const tt_qconv *q)
{
    const int zx = q->zero_in;
    for (int co = 0; co < cout; co++) {
        int8_t *yc = y + (long)co * h_out * h_out;
        for (int oy = 0; oy < h_out; oy++) {
            for (int ox = 0; ox < h_out; ox++) {
                int32_t acc = q->bias[co];
                for (int ci = 0; ci < cin; ci++)
                    acc += window_sum(x + (long)ci * h_in * h_in, q->w + ((long)co * cin + ci) * k * k, h_in, k,
                                      stride, oy, ox, zx);
                yc[oy * h_out + ox] = requantise(acc, q, co);
            }
        }
    }
}

void tt_q_pw_forward(const int8_t *x, int8_t *y, int cin, int cout, long hw, const tt_qconv *q)
{
    const int zx = q->zero_in;
    for (int co = 0; co < cout; co++) {
        const int8_t *wr = q->w + (long)co * cin;
        int8_t *yc = y + co * hw;
        for (long p = 0; p < hw; p++) {
            int32_t acc = q->bias[co];
            const int8_t *xp = x + p;
            for (int ci = 0; ci < cin; ci++)
                acc += (int32_t)wr[ci] * (xp[ci * hw] - zx);
            yc[p] = requantise(acc, q, co);
        }
    }
}

/* In place when y == x: each output channel goes to `tmp` first, then over its own input channel
 * (output channel c starts at c * h_out^2 <= c * h_in^2, so no unread input is overwritten). */
void tt_q_dw_forward(const int8_t *x, int8_t *y, int8_t *tmp, int c, int h_in, int h_out, int k,
                     int stride, const tt_qconv *q)
{
    const int zx = q->zero_in, in_place = (x == y);
    const long hw_in = (long)h_in * h_in, hw_out = (long)h_out * h_out;
    for (int ch = 0; ch < c; ch++) {
        const int8_t *xc = x + ch * hw_in, *wk = q->w + (long)ch * k * k;
        int8_t *out = in_place ? tmp : y + ch * hw_out;
        for (int oy = 0; oy < h_out; oy++) {
            for (int ox = 0; ox < h_out; ox++)
                out[oy * h_out + ox] = requantise(q->bias[ch] + window_sum(xc, wk, h_in, k, stride, oy, ox, zx), q, ch);
        }
        if (in_place) {
            int8_t *dst = y + ch * hw_out;
            for (long p = 0; p < hw_out; p++)
                dst[p] = tmp[p];
        }
    }
}

/* y = zero_out + (((x - zero_x) * m_x + (y - zero_y) * m_y + 2^(shift-1)) >> shift), in place in y */
void tt_q_add(int8_t *y, const int8_t *x, long n, const tt_qadd *a)
{
    const int64_t half = (int64_t)1 << (a->shift - 1);
    for (long i = 0; i < n; i++) {
        int64_t v = (int64_t)(x[i] - a->zero_x) * a->m_x + (int64_t)(y[i] - a->zero_y) * a->m_y;
        v = ((v + half) >> a->shift) + a->zero_out;
        y[i] = (int8_t)(v < -128 ? -128 : (v > 127 ? 127 : v));
    }
}

/* float x = (q - zero) * scale */
void tt_dequantise(const int8_t *q, float *x, long n, int zero, float scale)
{
    for (long i = 0; i < n; i++)
        x[i] = (float)(q[i] - zero) * scale;
}
