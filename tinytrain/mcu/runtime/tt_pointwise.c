/* tt_pointwise.c - 1 x 1 convolution: forward, input gradient, weight gradient of the trained slice.
 *
 * y[co][p] = sum_ci W[co][ci] x[ci][p]. W[co][ci] comes from the trained slice when its row
 * (axis out) or column (axis in) is selected, otherwise from the frozen array.
 */
#include "tt_kernels.h"
#include "tt_model.h"

static float weight(const float *w, const tt_slice *s, int co, int ci, int cin)
{
    if (s->n > 0) {
        if (s->axis == TT_AXIS_OUT) {
            const int k = s->slot[co];
            if (k >= 0)
                return s->w[k * cin + ci];
        } else {
            const int k = s->slot[ci];
            if (k >= 0)
                return s->w[co * s->n + k];
        }
    }
    if (s->q)
        return (float)s->q[(long)co * cin + ci] * s->q_scale[co];
    return w[(long)co * cin + ci];
}

void tt_pw_forward(const float *x, float *y, int cin, int cout, int hw, const float *w,
                   const tt_slice *s)
{
    for (int co = 0; co < cout; co++) {
        float *yc = y + (long)co * hw;
        for (int p = 0; p < hw; p++)
            yc[p] = 0.0f;
        for (int ci = 0; ci < cin; ci++) {
            const float wv = weight(w, s, co, ci, cin);
            const float *xc = x + (long)ci * hw;
            for (int p = 0; p < hw; p++)
                yc[p] += wv * xc[p];
        }
    }
}

/* gx[ci][p] = sum_co W[co][ci] gy[co][p] */
void tt_pw_backward_input(const float *gy, float *gx, int cin, int cout, int hw, const float *w,
                          const tt_slice *s)
{
    for (long i = 0; i < (long)cin * hw; i++)
        gx[i] = 0.0f;
    for (int co = 0; co < cout; co++) {
        const float *gc = gy + (long)co * hw;
        for (int ci = 0; ci < cin; ci++) {
            const float wv = weight(w, s, co, ci, cin);
            float *gxc = gx + (long)ci * hw;
            for (int p = 0; p < hw; p++)
                gxc[p] += wv * gc[p];
        }
    }
}

/* Weight gradient of the selected channels only. `saved` is the whole input (axis out) or the
 * selected input channels (axis in), as kept by the forward pass. */
void tt_pw_backward_weight(const float *gy, const float *saved, float *gw, int cin, int cout,
                           int hw, const tt_slice *s)
{
    if (s->axis == TT_AXIS_OUT) {
        for (int k = 0; k < s->n; k++) {
            const float *gc = gy + (long)s->sel[k] * hw;
            for (int ci = 0; ci < cin; ci++) {
                const float *xc = saved + (long)ci * hw;
                float acc = 0.0f;
                for (int p = 0; p < hw; p++)
                    acc += gc[p] * xc[p];
                gw[k * cin + ci] = acc;
            }
        }
    } else {
        for (int co = 0; co < cout; co++) {
            const float *gc = gy + (long)co * hw;
            for (int k = 0; k < s->n; k++) {
                const float *xc = saved + (long)k * hw;
                float acc = 0.0f;
                for (int p = 0; p < hw; p++)
                    acc += gc[p] * xc[p];
                gw[co * s->n + k] = acc;
            }
        }
    }
}
