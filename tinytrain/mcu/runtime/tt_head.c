/* tt_head.c - the cosine-prototype classifier of ProtoNet / P>M>F and its cross-entropy.
 *
 * logits_k = scale * (cos(f, p_k) + bias), cos computed on L2-normalised vectors (norms clamped
 * at 1e-12 as F.normalize does). The prototypes are constants for the gradient (the training
 * loop recomputes them without autograd), so only d loss / d f is returned.
 */
#include <math.h>

#include "tt_kernels.h"

#define NORM_EPS 1e-12f

static float norm(const float *a, int d)
{
    float acc = 0.0f;
    for (int i = 0; i < d; i++)
        acc += a[i] * a[i];
    const float n = sqrtf(acc);
    return n > NORM_EPS ? n : NORM_EPS;
}

static float cosine(const float *f, float nf, const float *p, float np, int d)
{
    float acc = 0.0f;
    for (int i = 0; i < d; i++)
        acc += (f[i] / nf) * (p[i] / np);
    return acc;
}

void tt_head_forward(const float *f, const float *protos, int k, int d, float scale, float bias,
                     float *logits)
{
    const float nf = norm(f, d);
    for (int c = 0; c < k; c++) {
        const float *p = protos + (long)c * d;
        logits[c] = scale * (cosine(f, nf, p, norm(p, d), d) + bias);
    }
}

/* Returns the cross-entropy of `label` and writes its gradient w.r.t. the features into gf. */
float tt_head_backward(const float *f, const float *protos, const float *logits, int k, int d,
                       float scale, int label, float *gf)
{
    float zmax = logits[0];
    for (int c = 1; c < k; c++)
        zmax = logits[c] > zmax ? logits[c] : zmax;
    float sum = 0.0f;
    for (int c = 0; c < k; c++)
        sum += expf(logits[c] - zmax);
    const float loss = logf(sum) - (logits[label] - zmax);

    const float nf = norm(f, d);
    for (int i = 0; i < d; i++)
        gf[i] = 0.0f;
    for (int c = 0; c < k; c++) {
        const float *p = protos + (long)c * d;
        const float np = norm(p, d);
        const float cs = cosine(f, nf, p, np, d);
        /* d loss / d logit = softmax - onehot; d logit / d cos = scale */
        const float gcos = scale * (expf(logits[c] - zmax) / sum - (c == label ? 1.0f : 0.0f));
        /* d cos / d f = (p / |p| - cos * f / |f|) / |f| */
        for (int i = 0; i < d; i++)
            gf[i] += gcos * (p[i] / np - cs * (f[i] / nf));
    }
    for (int i = 0; i < d; i++)
        gf[i] /= nf;
    return loss;
}
