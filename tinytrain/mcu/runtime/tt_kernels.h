/* tt_kernels.h - the kernels, one family per file, each backward next to its forward.
 *
 * Tensors are float32, channel-major (C x H x W), batch 1, square maps, "same" padding k/2.
 * A conv whose weights are partly trained reads the selected channels from a RAM slice
 * (`tt_slice`) and every other weight from the frozen (flash) array: float32, or in an int8 export
 * int8 with a float scale per output channel (`q`, `q_scale`), read as q * q_scale[co].
 * The int8 prefix of an int8 export has its own kernels (tt_int8.c): int8 tensors, integers only.
 */
#ifndef TT_KERNELS_H
#define TT_KERNELS_H

#include <stdint.h>

typedef struct {
    int axis;                /* TT_AXIS_OUT or TT_AXIS_IN (tt_model.h) */
    int n;                   /* selected channels; 0 = every weight frozen */
    const uint16_t *sel;     /* selected channel indices, sorted */
    const int16_t *slot;     /* channel -> position in sel, or -1 */
    float *w;                /* the trained slice: n x cin (out), cout x n (in), n x k x k (depthwise) */
    const int8_t *q;         /* int8 export: the frozen weights as int8 (the float array is then unused) */
    const float *q_scale;    /* ... and their scale per output channel */
} tt_slice;

/* an int8 conv of the prefix: weights (BN folded), int32 bias, per-channel fixed-point
 * requantisation (mult, shift), zero points of input and output, output clamp [lo, hi] */
typedef struct {
    const int8_t *w;
    const int32_t *bias, *mult;
    const int8_t *shift;
    int32_t zero_in, zero_out, lo, hi;
} tt_qconv;

/* an int8 residual add: multipliers of both inputs in 2^-shift units, zero points */
typedef struct {
    int32_t zero_x, m_x, zero_y, m_y, zero_out, shift;
} tt_qadd;

/* tt_conv.c: general k x k conv, groups 1 (the stem) */
void tt_conv_forward(const float *x, float *y, int cin, int cout, int h_in, int h_out, int k,
                     int stride, const float *w);

/* tt_pointwise.c: 1 x 1 conv */
void tt_pw_forward(const float *x, float *y, int cin, int cout, int hw, const float *w,
                   const tt_slice *s);
void tt_pw_backward_input(const float *gy, float *gx, int cin, int cout, int hw, const float *w,
                          const tt_slice *s);
void tt_pw_backward_weight(const float *gy, const float *saved, float *gw, int cin, int cout,
                           int hw, const tt_slice *s);

/* tt_depthwise.c: depthwise k x k conv, stride 1 or 2; in place when y == x (needs tmp) */
void tt_dw_forward(const float *x, float *y, float *tmp, int c, int h_in, int h_out, int k,
                   int stride, const float *w, const tt_slice *s);
void tt_dw_backward_input(const float *gy, float *gx, int c, int h_in, int h_out, int k,
                          int stride, const float *w, const tt_slice *s);
void tt_dw_backward_weight(const float *gy, const float *saved, float *gw, int h_in, int h_out,
                           int k, int stride, const tt_slice *s);

/* tt_affine.c: frozen BatchNorm as y = x * scale + shift per channel */
void tt_affine_forward(float *y, const float *scale, const float *shift, int c, int hw);
void tt_affine_backward(const float *gy, float *gx, const float *scale, int c, int hw);
void tt_affine_backward_shift(const float *gy, float *gshift, int c, int hw);

/* tt_relu6.c: clamp to [0, 6]; the training forward keeps 1 bit per element */
void tt_relu6_forward(float *y, int n);
void tt_relu6_forward_mask(float *y, uint32_t *mask, int n);
void tt_relu6_backward(float *g, const uint32_t *mask, int n);

/* tt_residual.c: y += x (forward: block output; backward: identity-path gradient) */
void tt_residual_forward(float *y, const float *x, int n);
void tt_residual_backward(float *gx, const float *gres, int n);

/* tt_pool.c: global average pooling */
void tt_pool_forward(const float *y, float *f, int c, int hw);
void tt_pool_backward(const float *gf, float *gy, int c, int hw);

/* tt_head.c: cosine-prototype classifier, scale * (cos(f, p_k) + bias), and its cross-entropy */
void tt_head_forward(const float *f, const float *protos, int k, int d, float scale, float bias,
                     float *logits);
float tt_head_backward(const float *f, const float *protos, const float *logits, int k, int d,
                       float scale, int label, float *gf);

/* tt_int8.c: the int8 prefix (integers only) and the dequantisation at its end */
void tt_q_image(const uint8_t *rgb, int8_t *x, long hw, const int8_t *lut);
void tt_q_conv_forward(const int8_t *x, int8_t *y, int cin, int cout, int h_in, int h_out, int k,
                       int stride, const tt_qconv *q);
void tt_q_pw_forward(const int8_t *x, int8_t *y, int cin, int cout, long hw, const tt_qconv *q);
void tt_q_dw_forward(const int8_t *x, int8_t *y, int8_t *tmp, int c, int h_in, int h_out, int k,
                     int stride, const tt_qconv *q);
void tt_q_add(int8_t *y, const int8_t *x, long n, const tt_qadd *a);
void tt_dequantise(const int8_t *q, float *x, long n, int zero, float scale);

/* tt_optim.c: SGD and Adam (PyTorch's update rules) on a trained tensor */
void tt_sgd_step(float *p, const float *g, int n, double lr);
void tt_adam_step(float *p, const float *g, float *m, float *v, int n, double lr, double beta1,
                  double beta2, double eps, int32_t step);

#endif /* TT_KERNELS_H */
