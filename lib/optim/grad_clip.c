/* moelm — gradient norm, clipping and scaling over the flat gradient buffer (fairseq's
 * clip_grad_norm_ and multiply_grads). */
#include "config.h"

#include <math.h>

#include "moelm/optim.h"

double moelm_grad_sumsq(const float *grads, size_t n)
{
  /* Eight independent partial sums: the additions vectorise without reassociating a single
   * chain, and the double accumulators keep the sum exact enough for any arena size. */
  double acc[8] = {0};
  size_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (size_t k = 0; k < 8; k++)
      acc[k] += (double)grads[i + k] * (double)grads[i + k];
  double tail = 0.0;
  for (; i < n; i++)
    tail += (double)grads[i] * (double)grads[i];
  return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail;
}

double moelm_clip_coef(double total_norm, double max_norm)
{
  if (!(max_norm > 0.0) || !isfinite(total_norm))
    return 1.0;
  double coef = max_norm / (total_norm + 1e-6);
  return coef < 1.0 ? coef : 1.0;
}

void moelm_multiply_grads(float *grads, size_t n, double c)
{
  const float cf = (float)c;
  size_t i = 0;
  for (; i + 8 <= n; i += 8) /* fixed-length blocks: vectorised at -O2 */
    for (size_t k = i; k < i + 8; k++)
      grads[k] *= cf;
  for (; i < n; i++)
    grads[i] *= cf;
}

double moelm_clip_grad_norm(float *grads, size_t n, double max_norm)
{
  double norm = sqrt(moelm_grad_sumsq(grads, n));
  double coef = moelm_clip_coef(norm, max_norm);
  if (coef < 1.0)
    moelm_multiply_grads(grads, n, coef);
  return norm;
}

gboolean moelm_grads_all_finite(const float *grads, size_t n)
{
  /* x - x is 0 for finite x and nan for inf/nan: branch-free, eight lanes at a time. */
  float probe[8] = {0};
  size_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (size_t k = 0; k < 8; k++)
      probe[k] += grads[i + k] - grads[i + k];
  float tail = 0.0f;
  for (; i < n; i++)
    tail += grads[i] - grads[i];
  for (size_t k = 0; k < 8; k++)
    tail += probe[k];
  return tail == 0.0f;
}
