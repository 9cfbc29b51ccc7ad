/* tt_train.c - the API of tinytrain.h: forward, the sparse training step, prototypes, prediction.
 *
 * The training step mirrors tinytrain's PyTorch sparse-update engine at batch 1:
 *   - layers below the earliest trained layer run as inference and keep nothing;
 *   - from there up every ReLU6 keeps 1 bit per element, and a conv with trained weights keeps a
 *     copy of its input (all channels for output-channel rows of a 1x1 conv, only the selected
 *     channels for input-channel columns and for depthwise convs);
 *   - backward runs from the loss down to the earliest trained layer only, computes the weight
 *     gradient of the selected channels only, and the input gradient where a lower layer needs it;
 *   - the optimizer updates only the trained slices and shifts, each layer's as soon as its
 *     gradients exist ("operator reordering", TinyEngine), so a gradient is a working buffer that
 *     lives for one layer's backward only, not state held until the end of the step.
 * Every buffer is at an offset of the arena fixed by the exporter's memory plan.
 */
#include <string.h>

#include "tinytrain.h"
#include "tt_kernels.h"
#include "tt_model.h"

#define A(off) (tt_arena + (off))

static int32_t step_count;

static tt_slice slice_of(const tt_layer *l)
{
    tt_slice s;
    s.axis = l->axis;
    s.n = l->n_sel;
    s.sel = l->sel;
    s.slot = l->slot;
    s.w = l->n_sel ? A(l->wt) : 0;
    s.q = l->wq;
    s.q_scale = l->wq_scale;
    return s;
}

static long out_elems(const tt_layer *l) { return (long)l->cout * l->h_out * l->h_out; }
static long in_elems(const tt_layer *l) { return (long)l->cin * l->h_in * l->h_in; }

/* weights per channel along the trained axis */
static long slice_row(const tt_layer *l)
{
    if (l->kind == TT_DW)
        return (long)l->k * l->k;
    return l->axis == TT_AXIS_OUT ? l->cin : l->cout;
}

void tt_init(void)
{
    memset(tt_arena, 0, sizeof(float) * tt_net.arena_floats);
    for (int i = 0; i < tt_net.n_layers; i++) {
        const tt_layer *l = &tt_layers[i];
        if (l->n_sel && l->w0) {
            memcpy(A(l->wt), l->w0, sizeof(float) * l->n_sel * slice_row(l));
        } else if (l->n_sel) {
            float *wt = A(l->wt);
            if (l->kind == TT_PW && l->axis == TT_AXIS_IN) {
                for (int co = 0; co < l->cout; co++)
                    for (int j = 0; j < l->n_sel; j++)
                        wt[co * l->n_sel + j] = l->w[(long)co * l->cin + l->sel[j]];
            } else {
                const long row = slice_row(l);
                for (int j = 0; j < l->n_sel; j++)
                    memcpy(wt + j * row, l->w + l->sel[j] * row, sizeof(float) * row);
            }
        }
        if (l->bt >= 0)
            memcpy(A(l->bt), l->shift, sizeof(float) * l->cout);
    }
    memcpy(A(tt_net.protos), tt_net.init_protos,
           sizeof(float) * tt_net.n_classes * tt_net.feature_dim);
    step_count = 0;
}

uint8_t *tt_input_buffer(void) { return (uint8_t *)A(tt_net.image); }

/* RGB bytes (HWC) -> normalised float CHW, as to_tensor + normalize in Python; in an int8 export
 * int8 CHW through the input table */
static void load_image(const uint8_t *rgb)
{
    const long hw = (long)tt_net.resolution * tt_net.resolution;
    if (tt_net.n_int8) {
        tt_q_image(rgb, (int8_t *)A(tt_net.x0), hw, tt_net.lut);
        return;
    }
    float *x = A(tt_net.x0);
    for (int c = 0; c < 3; c++)
        for (long p = 0; p < hw; p++)
            x[c * hw + p] = ((float)rgb[p * 3 + c] / 255.0f - tt_net.mean[c]) / tt_net.std[c];
}

/* layer i of the int8 prefix */
static void forward_int8(const tt_layer *l)
{
    int8_t *x = (int8_t *)A(l->x), *y = (int8_t *)A(l->y);
    if (l->kind == TT_PW)
        tt_q_pw_forward(x, y, l->cin, l->cout, (long)l->h_out * l->h_out, &l->qc);
    else if (l->kind == TT_DW)
        tt_q_dw_forward(x, y, l->tmp >= 0 ? (int8_t *)A(l->tmp) : 0, l->cout, l->h_in, l->h_out, l->k,
                        l->stride, &l->qc);
    else
        tt_q_conv_forward(x, y, l->cin, l->cout, l->h_in, l->h_out, l->k, l->stride, &l->qc);
    if (l->res >= 0)
        tt_q_add(y, (const int8_t *)A(l->res), out_elems(l), &l->qa);
}

static void forward(int training)
{
    for (int i = 0; i < tt_net.n_int8; i++)
        forward_int8(&tt_layers[i]);
    if (tt_net.n_int8) {
        const tt_layer *last = &tt_layers[tt_net.n_int8 - 1], *first = &tt_layers[tt_net.n_int8];
        tt_dequantise((const int8_t *)A(last->y), A(first->x), out_elems(last), tt_net.deq_zero,
                      tt_net.deq_scale);
    }
    for (int i = tt_net.n_int8; i < tt_net.n_layers; i++) {
        const tt_layer *l = &tt_layers[i];
        const int keep = training && l->train;
        float *x = A(l->x), *y = A(l->y);
        const int hw_in = l->h_in * l->h_in, hw_out = l->h_out * l->h_out;
        const tt_slice s = slice_of(l);
        if (keep && l->n_sel) {
            if (l->kind == TT_PW && l->axis == TT_AXIS_OUT)
                memcpy(A(l->saved), x, sizeof(float) * in_elems(l));
            else
                for (int j = 0; j < l->n_sel; j++)
                    memcpy(A(l->saved) + (long)j * hw_in, x + (long)l->sel[j] * hw_in,
                           sizeof(float) * hw_in);
        }
        if (l->kind == TT_PW)
            tt_pw_forward(x, y, l->cin, l->cout, hw_out, l->w, &s);
        else if (l->kind == TT_DW)
            tt_dw_forward(x, y, l->tmp >= 0 ? A(l->tmp) : 0, l->cout, l->h_in, l->h_out, l->k,
                          l->stride, l->w, &s);
        else
            tt_conv_forward(x, y, l->cin, l->cout, l->h_in, l->h_out, l->k, l->stride, l->w);
        tt_affine_forward(y, l->scale, l->bt >= 0 ? A(l->bt) : l->shift, l->cout, hw_out);
        if (l->act) {
            if (keep)
                tt_relu6_forward_mask(y, (uint32_t *)A(l->mask), (int)out_elems(l));
            else
                tt_relu6_forward(y, (int)out_elems(l));
        }
        if (l->res >= 0)
            tt_residual_forward(y, A(l->res), (int)out_elems(l));
    }
    const tt_layer *last = &tt_layers[tt_net.n_layers - 1];
    tt_pool_forward(A(last->y), A(tt_net.features), last->cout, last->h_out * last->h_out);
}

/* One optimizer step on layer l's trained slice and BN shift, from their gradients of this step. */
static void update_layer(const tt_layer *l)
{
    const int nw = (int)(l->n_sel * slice_row(l));
    if (tt_net.optimizer == TT_ADAM) {
        if (l->n_sel)
            tt_adam_step(A(l->wt), A(l->gw), A(l->m), A(l->v), nw, tt_net.lr, tt_net.beta1,
                         tt_net.beta2, tt_net.eps, step_count);
        if (l->bt >= 0)
            tt_adam_step(A(l->bt), A(l->gb), A(l->bm), A(l->bv), l->cout, tt_net.lr, tt_net.beta1,
                         tt_net.beta2, tt_net.eps, step_count);
    } else {
        if (l->n_sel)
            tt_sgd_step(A(l->wt), A(l->gw), nw, tt_net.lr);
        if (l->bt >= 0)
            tt_sgd_step(A(l->bt), A(l->gb), l->cout, tt_net.lr);
    }
}

/* Backward from the loss down to the earliest trained layer, with each layer's update applied in
 * place as soon as its gradients are computed. The result equals computing every gradient first
 * and updating all at the end (PyTorch's loss.backward(); optimizer.step()), because:
 *   - SGD and Adam update a tensor from its own gradient and its own state only;
 *   - in layer l the weight gradient (from the kept input), the shift gradient (from the output
 *     gradient) and the input gradient are all computed before the update, and only the input
 *     gradient reads the weights (the trained slice through `s`): it sees the pre-update values;
 *   - nothing after that reads layer l's weights or shift: the layers below need only the input
 *     gradient, their own kept inputs and masks, and the forward pass is over.
 * So gw and gb are working buffers whose lifetime is this layer's backward (the memory plan's
 * "gw<i>", "gb<i>"), placed in memory that other layers' backward reuses. */
static void backward(void)
{
    const tt_layer *last = &tt_layers[tt_net.n_layers - 1];
    tt_pool_backward(A(tt_net.gfeatures), A(last->gy), last->cout, last->h_out * last->h_out);
    for (int i = tt_net.n_layers - 1; i >= tt_net.earliest; i--) {
        const tt_layer *l = &tt_layers[i];
        float *g = A(l->gy), *gc = A(l->gc);
        const int hw_out = l->h_out * l->h_out;
        const tt_slice s = slice_of(l);
        if (l->act)
            tt_relu6_backward(g, (const uint32_t *)A(l->mask), (int)out_elems(l));
        if (l->bt >= 0)
            tt_affine_backward_shift(g, A(l->gb), l->cout, hw_out);
        tt_affine_backward(g, gc, l->scale, l->cout, hw_out);
        if (l->n_sel) {
            if (l->kind == TT_PW)
                tt_pw_backward_weight(gc, A(l->saved), A(l->gw), l->cin, l->cout, hw_out, &s);
            else
                tt_dw_backward_weight(gc, A(l->saved), A(l->gw), l->h_in, l->h_out, l->k,
                                      l->stride, &s);
        }
        if (l->gx >= 0) {
            /* with the weights of the forward pass: the update comes after */
            if (l->kind == TT_PW)
                tt_pw_backward_input(gc, A(l->gx), l->cin, l->cout, hw_out, l->w, &s);
            else
                tt_dw_backward_input(gc, A(l->gx), l->cout, l->h_in, l->h_out, l->k, l->stride,
                                     l->w, &s);
            if (l->gres >= 0)
                tt_residual_backward(A(l->gx), A(l->gres), (int)in_elems(l));
        }
        update_layer(l);
    }
}

float tt_train_step(const uint8_t *rgb, int label)
{
    if (label < 0 || label >= tt_net.n_classes)
        return -1.0f;
    load_image(rgb);
    forward(1);
    float *f = A(tt_net.features), *logits = A(tt_net.logits);
    tt_head_forward(f, A(tt_net.protos), tt_net.n_classes, tt_net.feature_dim, tt_net.head_scale,
                    tt_net.head_bias, logits);
    const float loss = tt_head_backward(f, A(tt_net.protos), logits, tt_net.n_classes,
                                        tt_net.feature_dim, tt_net.head_scale, label,
                                        A(tt_net.gfeatures));
    step_count++;             /* Adam's bias correction: this step's number, for every layer */
    backward();               /* gradients and in-place updates, layer by layer */
    return loss;
}

int tt_predict(const uint8_t *rgb, float *logits)
{
    load_image(rgb);
    forward(0);
    float *z = A(tt_net.logits);
    tt_head_forward(A(tt_net.features), A(tt_net.protos), tt_net.n_classes, tt_net.feature_dim,
                    tt_net.head_scale, tt_net.head_bias, z);
    int best = 0;
    for (int c = 0; c < tt_net.n_classes; c++) {
        if (z[c] > z[best])
            best = c;
        if (logits)
            logits[c] = z[c];
    }
    return best;
}

int tt_set_prototypes(const float *prototypes, int n_classes)
{
    if (n_classes != tt_net.n_classes)
        return -1;
    memcpy(A(tt_net.protos), prototypes, sizeof(float) * n_classes * tt_net.feature_dim);
    return 0;
}

void tt_prototypes_begin(void)
{
    memset(A(tt_net.protos), 0, sizeof(float) * tt_net.n_classes * tt_net.feature_dim);
    memset(A(tt_net.counts), 0, sizeof(int32_t) * tt_net.n_classes);
}

int tt_prototypes_add(const uint8_t *rgb, int label)
{
    if (label < 0 || label >= tt_net.n_classes)
        return -1;
    load_image(rgb);
    forward(0);
    const float *f = A(tt_net.features);
    float *p = A(tt_net.protos) + (long)label * tt_net.feature_dim;
    for (int i = 0; i < tt_net.feature_dim; i++)
        p[i] += f[i];
    ((int32_t *)A(tt_net.counts))[label]++;
    return 0;
}

int tt_prototypes_end(void)
{
    const int32_t *counts = (const int32_t *)A(tt_net.counts);
    int status = 0;
    for (int c = 0; c < tt_net.n_classes; c++) {
        float *p = A(tt_net.protos) + (long)c * tt_net.feature_dim;
        if (counts[c] == 0) {
            status = -1;
            continue;
        }
        for (int i = 0; i < tt_net.feature_dim; i++)
            p[i] /= (float)counts[c];
    }
    return status;
}

int tt_update_prototypes(const uint8_t *const *rgb, const int *labels, int n)
{
    tt_prototypes_begin();
    for (int i = 0; i < n; i++)
        if (tt_prototypes_add(rgb[i], labels[i]) != 0)
            return -1;
    return tt_prototypes_end();
}

long tt_int8_prefix(const uint8_t *rgb, const int8_t **out)
{
    if (!tt_net.n_int8)
        return 0;
    load_image(rgb);
    for (int i = 0; i < tt_net.n_int8; i++)
        forward_int8(&tt_layers[i]);
    const tt_layer *last = &tt_layers[tt_net.n_int8 - 1];
    if (out)
        *out = (const int8_t *)A(last->y);
    return out_elems(last);
}

int tt_resolution(void) { return tt_net.resolution; }
int tt_num_classes(void) { return tt_net.n_classes; }
int tt_feature_dim(void) { return tt_net.feature_dim; }
uint32_t tt_arena_bytes(void) { return tt_net.arena_floats * (uint32_t)sizeof(float); }
