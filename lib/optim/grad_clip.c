/* moelm — gradient norm, clipping and scaling over the flat gradient buffer (fairseq's
 * clip_grad_norm_ and multiply_grads), done by the backend that holds the gradients. */
#include "config.h"

#include <math.h>

#include "moelm/optim.h"

double moelm_grad_sumsq(MoelmBackend *be, const float *grads, size_t n)
{
  return n > 0 ? be->ops->sum_squares(be, grads, n) : 0.0;
}

double moelm_clip_coef(double total_norm, double max_norm)
{
  if (!(max_norm > 0.0) || !isfinite(total_norm))
    return 1.0;
  double coef = max_norm / (total_norm + 1e-6);
  return coef < 1.0 ? coef : 1.0;
}

void moelm_multiply_grads(MoelmBackend *be, float *grads, size_t n, double c)
{
  if (n > 0)
    be->ops->scale(be, grads, (float)c, n);
}

double moelm_clip_grad_norm(MoelmBackend *be, float *grads, size_t n, double max_norm)
{
  double norm = sqrt(moelm_grad_sumsq(be, grads, n));
  double coef = moelm_clip_coef(norm, max_norm);
  if (coef < 1.0)
    moelm_multiply_grads(be, grads, n, coef);
  return norm;
}

gboolean moelm_grads_all_finite(MoelmBackend *be, const float *grads, size_t n)
{
  /* a finite float squared cannot overflow a double sum: only inf/nan make it non-finite */
  return isfinite(moelm_grad_sumsq(be, grads, n));
}
