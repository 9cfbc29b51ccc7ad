/* tt_model.h - the network and its memory plan as data (filled in by the generated tt_model.c).
 *
 * Every conv layer is conv -> per-channel affine (BatchNorm folded into scale and shift) ->
 * optional ReLU6, in forward order (layer 0 = stem), exactly like the Python `Backbone`.
 * All mutable floats live in one static arena; the exporter's memory planner chose every offset
 * (in floats from the start of `tt_arena`, -1 = unused), so the runtime allocates nothing.
 */
#ifndef TT_MODEL_H
#define TT_MODEL_H

#include <stdint.h>

#define TT_CONV 0        /* general k x k conv, groups 1 (the stem; forward only) */
#define TT_PW 1          /* 1 x 1 conv */
#define TT_DW 2          /* depthwise k x k conv */

#define TT_AXIS_OUT 0    /* trained rows of W (output channels; the only axis of a depthwise conv) */
#define TT_AXIS_IN 1     /* trained columns of W (input channels) */

#define TT_SGD 0
#define TT_ADAM 1

#include "tt_kernels.h"

typedef struct {
    uint8_t kind, act, k, stride;
    uint16_t cin, cout, h_in, h_out;
    const float *w;              /* frozen weights, cout x cin/groups x k x k (flash); 0 in an int8 export */
    const float *scale, *shift;  /* folded BatchNorm */

    /* int8 export: a float layer's frozen weights as int8 with a scale per output channel, and the
     * initial values of its trained slice (the float master copy, laid out as the slice) */
    const int8_t *wq;
    const float *wq_scale;
    const float *w0;
    /* int8 export: q = 1 for a layer of the int8 prefix, which runs `qc` (and `qa` after it when
     * res >= 0) on int8 tensors at x, y, tmp, res; nothing of it is trained */
    uint8_t q;
    tt_qconv qc;
    tt_qadd qa;

    /* forward: input, output (== x: a depthwise conv in place), one-channel temporary of an
     * in-place depthwise conv, block input to add after this layer (residual) */
    int32_t x, y, tmp, res;

    /* training: set on every layer from the earliest trained one up */
    uint8_t train, axis;
    uint16_t n_sel;              /* trained weight channels along `axis`; 0 = weights frozen */
    const uint16_t *sel;         /* their indices, sorted */
    const int16_t *slot;         /* channel along `axis` -> position in `sel`, or -1 */
    int32_t mask;                /* ReLU6 pass-through bits of the output (1 bit per element) */
    int32_t saved;               /* input kept for the weight gradient (all or the selected channels) */
    int32_t wt, gw, m, v;        /* trained weight slice, its gradient, optimizer moments; the
                                    gradient is working memory of this layer's backward only (the
                                    update is applied right after it), the rest persists */
    int32_t bt, gb, bm, bv;      /* trained BN shift (-1: frozen), gradient (working), moments */

    /* backward: gradient w.r.t. the output, w.r.t. the conv output (== gy: in place), w.r.t. the
     * input (-1: not needed), and the block-output gradient to add into gx (identity path) */
    int32_t gy, gc, gx, gres;
} tt_layer;

typedef struct {
    int32_t n_layers, earliest, resolution, n_classes, feature_dim;
    int32_t optimizer;
    double lr, beta1, beta2, eps;
    float head_scale, head_bias;
    float mean[3], std[3];
    int32_t image, x0;           /* uint8 frame slot, normalised image (3 x R x R; int8 in an int8 export) */
    /* int8 export: layers 0 .. n_int8 - 1 run in int8 (0: a float export); the input table
     * (3 x 256: pixel -> int8), and the dequantisation of the prefix's output into the first float
     * layer's input */
    int32_t n_int8;
    const int8_t *lut;
    int32_t deq_zero;
    float deq_scale;
    int32_t features, gfeatures, logits, protos, counts;
    uint32_t arena_floats;
    const float *init_protos;    /* exported prototypes (n_classes x feature_dim) */
} tt_net_t;

extern const tt_layer tt_layers[];
extern const tt_net_t tt_net;
extern float tt_arena[];

#endif /* TT_MODEL_H */
