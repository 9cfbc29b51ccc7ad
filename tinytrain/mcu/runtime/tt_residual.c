/* tt_residual.c - the residual add of an inverted-residual block. Forward adds the block input to
 * the branch output; backward adds the block-output gradient (the identity path) to the branch's
 * input gradient. */
#include "tt_kernels.h"

void tt_residual_forward(float *y, const float *x, int n)
{
    for (int i = 0; i < n; i++)
        y[i] = x[i] + y[i];
}

void tt_residual_backward(float *gx, const float *gres, int n)
{
    for (int i = 0; i < n; i++)
        gx[i] += gres[i];
}
