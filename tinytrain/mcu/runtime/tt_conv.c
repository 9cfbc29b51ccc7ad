/* tt_conv.c - a general k x k convolution with groups 1: the stem.
 *
 * The runtime never trains the stem (its input is the image), so there is no backward here.
 */
#include "tt_kernels.h"

void tt_conv_forward(const float *x, float *y, int cin, int cout, int h_in, int h_out, int k,
                     int stride, const float *w)
{
    const int pad = k / 2;
    for (int co = 0; co < cout; co++) {
        float *yc = y + (long)co * h_out * h_out;
        for (int oy = 0; oy < h_out; oy++) {
            for (int ox = 0; ox < h_out; ox++) {
                float acc = 0.0f;
                for (int ci = 0; ci < cin; ci++) {
                    const float *xc = x + (long)ci * h_in * h_in;
                    const float *wk = w + ((long)co * cin + ci) * k * k;
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
                }
                yc[oy * h_out + ox] = acc;
            }
        }
    }
}
