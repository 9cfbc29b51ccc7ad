/* tt_optim.c - the optimizer on one trained tensor, with PyTorch's update rules (torch.optim.SGD
 * without momentum, torch.optim.Adam without weight decay or amsgrad); `step` counts from 1. */
#include <math.h>

#include "tt_kernels.h"

void tt_sgd_step(float *p, const float *g, int n, double lr)
{
    const float neg_lr = (float)-lr;
    for (int i = 0; i < n; i++)
        p[i] = p[i] + neg_lr * g[i];
}

void tt_adam_step(float *p, const float *g, float *m, float *v, int n, double lr, double beta1,
                  double beta2, double eps, int32_t step)
{
    /* scalars in double, as PyTorch computes them in Python floats, then used as float */
    const float neg_step_size = (float)(-lr / (1.0 - pow(beta1, (double)step)));
    const float bc2_sqrt = (float)sqrt(1.0 - pow(beta2, (double)step));
    const float w1 = (float)(1.0 - beta1), b2 = (float)beta2, w2 = (float)(1.0 - beta2);
    const float epsf = (float)eps;
    for (int i = 0; i < n; i++) {
        m[i] = m[i] + w1 * (g[i] - m[i]);
        v[i] = v[i] * b2 + w2 * g[i] * g[i];
        const float denom = sqrtf(v[i]) / bc2_sqrt + epsf;
        p[i] = p[i] + neg_step_size * (m[i] / denom);
    }
}
