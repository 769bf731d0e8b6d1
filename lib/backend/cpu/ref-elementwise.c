/* moelm — reference CPU ops, element-wise and row-wise: helpers, activations, dropout,
 * gather/scatter, Adam. Plain loops, double accumulation: the oracle for other paths. */
#include "config.h"

#include <string.h>

#include "backend/cpu/cpu-internal.h"

static void ref_fill(MoelmBackend *be, float *x, float value, size_t n)
{
  for (size_t i = 0; i < n; i++)
    x[i] = value;
}

static void ref_add(MoelmBackend *be, MoelmAct *out_, const MoelmAct *a_, const MoelmAct *b_, size_t n)
{
  float *out = (float *)out_;
  const float *a = (const float *)a_;
  const float *b = (const float *)b_;
  for (size_t i = 0; i < n; i++)
    out[i] = a[i] + b[i];
}

static void ref_axpy(MoelmBackend *be, float *y, float alpha, const float *x, size_t n)
{
  for (size_t i = 0; i < n; i++)
    y[i] += alpha * x[i];
}

static void ref_scale(MoelmBackend *be, float *x, float alpha, size_t n)
{
  for (size_t i = 0; i < n; i++)
    x[i] *= alpha;
}

static double ref_sum_squares(MoelmBackend *be, const float *x, size_t n)
{
  double sum = 0;
  for (size_t i = 0; i < n; i++)
    sum += (double)x[i] * x[i];
  return sum;
}

static void ref_activation_forward(MoelmBackend *be, MoelmActivation act, MoelmAct *out_, const MoelmAct *inp_,
                                   size_t n)
{
  float *out = (float *)out_;
  const float *inp = (const float *)inp_;
  for (size_t i = 0; i < n; i++)
    out[i] = (float)moelm_act_ref(act, inp[i]);
}

static void ref_activation_backward(MoelmBackend *be, MoelmActivation act, MoelmAct *dinp_, const MoelmAct *inp_,
                                    const MoelmAct *dout_, size_t n)
{
  float *dinp = (float *)dinp_;
  const float *inp = (const float *)inp_;
  const float *dout = (const float *)dout_;
  for (size_t i = 0; i < n; i++)
    dinp[i] += (float)(dout[i] * moelm_act_grad_ref(act, inp[i]));
}

static void ref_dropout_forward(MoelmBackend *be, MoelmAct *out_, const MoelmAct *inp_, size_t n, float p,
                                const MoelmDropoutIds *ids)
{
  float *out = (float *)out_;
  const float *inp = (const float *)inp_;
  if (p == 0.0f) {
    if (out != inp)
      memmove(out, inp, n * sizeof(float));
    return;
  }
  float mult = moelm_dropout_multiplier(p);
  for (size_t i = 0; i < n; i++)
    out[i] = moelm_dropout_keep(ids, p, i) ? inp[i] * mult : 0.0f;
}

static void ref_dropout_backward(MoelmBackend *be, MoelmAct *dinp_, const MoelmAct *dout_, size_t n, float p,
                                 const MoelmDropoutIds *ids)
{
  float *dinp = (float *)dinp_;
  const float *dout = (const float *)dout_;
  float mult = p == 0.0f ? 1.0f : moelm_dropout_multiplier(p);
  for (size_t i = 0; i < n; i++)
    if (p == 0.0f || moelm_dropout_keep(ids, p, i))
      dinp[i] += dout[i] * mult;
}

static void ref_gather_rows(MoelmBackend *be, MoelmAct *out_, const MoelmAct *inp_, const int32_t *idx, int n, int C)
{
  float *out = (float *)out_;
  const float *inp = (const float *)inp_;
  for (int i = 0; i < n; i++) {
    if (idx[i] < 0)
      memset(out + (size_t)i * C, 0, (size_t)C * sizeof(float));
    else
      memcpy(out + (size_t)i * C, inp + (size_t)idx[i] * C, (size_t)C * sizeof(float));
  }
}

static void ref_scatter_add_rows(MoelmBackend *be, MoelmAct *out_, const MoelmAct *inp_, const int32_t *idx,
                                 const float *weight, int n, int C)
{
  float *out = (float *)out_;
  const float *inp = (const float *)inp_;
  for (int i = 0; i < n; i++) {
    if (idx[i] < 0)
      continue;
    float w = weight ? weight[i] : 1.0f;
    float *o = out + (size_t)idx[i] * C;
    const float *x = inp + (size_t)i * C;
    for (int c = 0; c < C; c++)
      o[c] += w * x[c];
  }
}

static void ref_scatter_add_rows_backward(MoelmBackend *be, MoelmAct *dinp_, float *dweight, const MoelmAct *dout_,
                                          const MoelmAct *inp_, const int32_t *idx, const float *weight, int n, int C)
{
  float *dinp = (float *)dinp_;
  const float *dout = (const float *)dout_;
  const float *inp = (const float *)inp_;
  for (int i = 0; i < n; i++) {
    if (idx[i] < 0)
      continue;
    const float *g = dout + (size_t)idx[i] * C;
    if (dinp != NULL) {
      float w = weight ? weight[i] : 1.0f;
      float *d = dinp + (size_t)i * C;
      for (int c = 0; c < C; c++)
        d[c] += w * g[c];
    }
    if (dweight != NULL) {
      const float *x = inp + (size_t)i * C;
      double dot = 0;
      for (int c = 0; c < C; c++)
        dot += (double)g[c] * x[c];
      dweight[i] += (float)dot;
    }
  }
}

static void ref_adam_step(MoelmBackend *be, float *param, const float *grad, float *exp_avg, float *exp_avg_sq,
                          size_t n, const MoelmAdamParams *hp)
{
  double bc1 = 1.0 - pow(hp->beta1, (double)hp->step);
  double bc2 = 1.0 - pow(hp->beta2, (double)hp->step);
  double step_size = hp->lr * sqrt(bc2) / bc1;
  double decay = (double)hp->weight_decay * hp->lr;
  for (size_t i = 0; i < n; i++) {
    double g = (double)grad[i] * hp->grad_scale;
    double m = hp->beta1 * (double)exp_avg[i] + (1.0 - hp->beta1) * g;
    double v = hp->beta2 * (double)exp_avg_sq[i] + (1.0 - hp->beta2) * g * g;
    double p = param[i];
    p -= decay * p;
    p -= step_size * m / (sqrt(v) + hp->eps);
    exp_avg[i] = (float)m;
    exp_avg_sq[i] = (float)v;
    param[i] = (float)p;
  }
}

void moelm_ref_fill_elementwise(struct moelm_backend_ops *ops)
{
  ops->fill = ref_fill;
  ops->add = ref_add;
  ops->axpy = ref_axpy;
  ops->scale = ref_scale;
  ops->sum_squares = ref_sum_squares;
  ops->activation_forward = ref_activation_forward;
  ops->activation_backward = ref_activation_backward;
  ops->dropout_forward = ref_dropout_forward;
  ops->dropout_backward = ref_dropout_backward;
  ops->gather_rows = ref_gather_rows;
  ops->scatter_add_rows = ref_scatter_add_rows;
  ops->scatter_add_rows_backward = ref_scatter_add_rows_backward;
  ops->adam_step = ref_adam_step;
}
