/* moelm — grouped linear (token-MoE experts) on the CPU: one linear per expert over its
 * contiguous rows, through the table's own linear ops (so the reference, the fast path and
 * the half-storage variant each use theirs). The offsets are host memory here. */
#include "config.h"

#include "backend/cpu/cpu-internal.h"

static void cpu_grouped_linear_forward(MoelmBackend *be, MoelmAct *out, const MoelmAct *inp, const float *weight,
                                       size_t w_stride, const float *bias, size_t b_stride, const int32_t *offsets,
                                       int E, int R, int IC, int OC)
{
  for (int e = 0; e < E; e++) {
    const int off = offsets[e], n = offsets[e + 1] - off;
    if (n > 0)
      be->ops->linear_forward(be, moelm_act_at(be, out, (size_t)off * OC), moelm_act_at(be, inp, (size_t)off * IC),
                              weight + (size_t)e * w_stride, bias ? bias + (size_t)e * b_stride : NULL, n, IC, OC);
  }
  const int used = offsets[E];
  if (used < R)
    be->ops->zero(be, moelm_act_at(be, out, (size_t)used * OC), moelm_act_bytes(be, (size_t)(R - used) * OC));
}

static void cpu_grouped_linear_backward(MoelmBackend *be, MoelmAct *dinp, float *dweight, float *dbias,
                                        const MoelmAct *dout, const MoelmAct *inp, const float *weight,
                                        size_t w_stride, size_t b_stride, const int32_t *offsets, int E, int R, int IC,
                                        int OC)
{
  for (int e = 0; e < E; e++) {
    const int off = offsets[e], n = offsets[e + 1] - off;
    if (n > 0)
      be->ops->linear_backward(be, dinp ? moelm_act_at(be, dinp, (size_t)off * IC) : NULL,
                               dweight ? dweight + (size_t)e * w_stride : NULL,
                               dbias ? dbias + (size_t)e * b_stride : NULL, moelm_act_at(be, dout, (size_t)off * OC),
                               moelm_act_at(be, inp, (size_t)off * IC), weight + (size_t)e * w_stride, n, IC, OC);
  }
}

void moelm_cpu_fill_grouped_linear(struct moelm_backend_ops *ops)
{
  ops->grouped_linear_forward = cpu_grouped_linear_forward;
  ops->grouped_linear_backward = cpu_grouped_linear_backward;
}
