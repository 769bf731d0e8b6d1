/* moelm — fast element-wise CPU ops: large arrays split over the pool in fixed chunks
 * (so reductions add up in the same order whatever the thread count), dropout, Adam and
 * row gather/scatter. */
#include "config.h"

#include <string.h>

#include "backend/cpu/cpu-internal.h"
#include "backend/cpu/simd.h"

/* Elements per chunk: big enough to amortise handing out, small enough to balance. */
#define CHUNK 16384

typedef struct {
  float *out;
  const float *a, *b;
  float alpha, value;
  MoelmActivation act;
  const MoelmDropoutIds *ids;
  float p;
  double *partials;
  size_t n;
  /* adam */
  float *param, *exp_avg, *exp_avg_sq;
  const MoelmAdamParams *hp;
  float step_size, decay;
} ElemJob;

/* Run fn over n elements in CHUNK-sized pieces (index = chunk number). */
static void run_chunks(MoelmBackend *be, size_t n, MoelmParallelFn fn, ElemJob *j)
{
  j->n = n;
  int64_t chunks = (int64_t)((n + CHUNK - 1) / CHUNK);
  moelm_thread_pool_run(moelm_cpu_pool(be), chunks, 1, fn, j);
}

#define CHUNK_RANGE(begin, end, n)                                                                              \
  size_t lo = (size_t)(begin) * CHUNK, hi = (size_t)(end) * CHUNK < (n) ? (size_t)(end) * CHUNK : (n)

static void fill_chunks(void *ctx, int64_t begin, int64_t end)
{
  const ElemJob *j = ctx;
  CHUNK_RANGE(begin, end, j->n);
  for (size_t i = lo; i < hi; i++)
    j->out[i] = j->value;
}

static void fast_fill(MoelmBackend *be, float *x, float value, size_t n)
{
  ElemJob j = {.out = x, .value = value};
  run_chunks(be, n, fill_chunks, &j);
}

static void add_chunks(void *ctx, int64_t begin, int64_t end)
{
  const ElemJob *j = ctx;
  CHUNK_RANGE(begin, end, j->n);
  for (size_t i = lo; i < hi; i++)
    j->out[i] = j->a[i] + j->b[i];
}

static void fast_add(MoelmBackend *be, MoelmAct *out_, const MoelmAct *a_, const MoelmAct *b_, size_t n)
{
  float *out = (float *)out_;
  const float *a = (const float *)a_;
  const float *b = (const float *)b_;
  ElemJob j = {.out = out, .a = a, .b = b};
  run_chunks(be, n, add_chunks, &j);
}

static void axpy_chunks(void *ctx, int64_t begin, int64_t end)
{
  const ElemJob *j = ctx;
  CHUNK_RANGE(begin, end, j->n);
  moelm_vaxpy(j->out + lo, j->alpha, j->a + lo, (int)(hi - lo));
}

static void fast_axpy(MoelmBackend *be, float *y, float alpha, const float *x, size_t n)
{
  ElemJob j = {.out = y, .a = x, .alpha = alpha};
  run_chunks(be, n, axpy_chunks, &j);
}

static void scale_chunks(void *ctx, int64_t begin, int64_t end)
{
  const ElemJob *j = ctx;
  CHUNK_RANGE(begin, end, j->n);
  for (size_t i = lo; i < hi; i++)
    j->out[i] *= j->alpha;
}

static void fast_scale(MoelmBackend *be, float *x, float alpha, size_t n)
{
  ElemJob j = {.out = x, .alpha = alpha};
  run_chunks(be, n, scale_chunks, &j);
}

static void sum_squares_chunks(void *ctx, int64_t begin, int64_t end)
{
  const ElemJob *j = ctx;
  for (int64_t c = begin; c < end; c++) {
    size_t lo = (size_t)c * CHUNK, hi = lo + CHUNK < j->n ? lo + CHUNK : j->n;
    /* eight double accumulators: vectorises, and keeps the sum exact enough for any arena */
    const float *x = j->a;
    double acc[8] = {0};
    size_t i = lo;
    for (; i + 8 <= hi; i += 8)
      for (size_t k = 0; k < 8; k++)
        acc[k] += (double)x[i + k] * (double)x[i + k];
    double tail = 0.0;
    for (; i < hi; i++)
      tail += (double)x[i] * (double)x[i];
    j->partials[c] = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail;
  }
}

static double fast_sum_squares(MoelmBackend *be, const float *x, size_t n)
{
  size_t chunks = (n + CHUNK - 1) / CHUNK;
  ElemJob j = {.a = x, .partials = g_new0(double, chunks + 1)};
  run_chunks(be, n, sum_squares_chunks, &j);
  double sum = 0;
  for (size_t c = 0; c < chunks; c++)
    sum += j.partials[c];
  g_free(j.partials);
  return sum;
}

/* ---- activations ---------------------------------------------------------------------- */

static inline float act_forward(MoelmActivation act, float x)
{
  switch (act) {
  case MOELM_ACT_RELU:
    return x > 0.0f ? x : 0.0f;
  case MOELM_ACT_GELU:
    return 0.5f * x * (1.0f + erff(x * (float)M_SQRT1_2));
  case MOELM_ACT_GELU_ACCURATE:
    return 0.5f * x *
           (1.0f + tanhf((float)MOELM_SQRT_2_OVER_PI * (x + (float)MOELM_GELU_COEF * x * x * x)));
  case MOELM_ACT_TANH:
    return tanhf(x);
  }
  return 0.0f;
}

static inline float act_grad(MoelmActivation act, float x)
{
  switch (act) {
  case MOELM_ACT_RELU:
    return x > 0.0f ? 1.0f : 0.0f;
  case MOELM_ACT_GELU:
    return 0.5f * (1.0f + erff(x * (float)M_SQRT1_2)) + x * expf(-0.5f * x * x) * 0.3989422804014327f;
  case MOELM_ACT_GELU_ACCURATE: {
    float th = tanhf((float)MOELM_SQRT_2_OVER_PI * (x + (float)MOELM_GELU_COEF * x * x * x));
    float du = (float)MOELM_SQRT_2_OVER_PI * (1.0f + 3.0f * (float)MOELM_GELU_COEF * x * x);
    return 0.5f * (1.0f + th) + 0.5f * x * (1.0f - th * th) * du;
  }
  case MOELM_ACT_TANH: {
    float th = tanhf(x);
    return 1.0f - th * th;
  }
  }
  return 0.0f;
}

static void activation_forward_chunks(void *ctx, int64_t begin, int64_t end)
{
  const ElemJob *j = ctx;
  CHUNK_RANGE(begin, end, j->n);
  if (j->act == MOELM_ACT_RELU) { /* the common case, vectorised */
    moelm_vrelu(j->out + lo, j->a + lo, hi - lo);
    return;
  }
  for (size_t i = lo; i < hi; i++)
    j->out[i] = act_forward(j->act, j->a[i]);
}

static void fast_activation_forward(MoelmBackend *be, MoelmActivation act, MoelmAct *out_, const MoelmAct *inp_,
                                    size_t n)
{
  float *out = (float *)out_;
  const float *inp = (const float *)inp_;
  ElemJob j = {.out = out, .a = inp, .act = act};
  run_chunks(be, n, activation_forward_chunks, &j);
}

static void activation_backward_chunks(void *ctx, int64_t begin, int64_t end)
{
  const ElemJob *j = ctx;
  CHUNK_RANGE(begin, end, j->n);
  if (j->act == MOELM_ACT_RELU) {
    moelm_vrelu_backward(j->out + lo, j->a + lo, j->b + lo, hi - lo);
    return;
  }
  for (size_t i = lo; i < hi; i++)
    j->out[i] += j->b[i] * act_grad(j->act, j->a[i]);
}

static void fast_activation_backward(MoelmBackend *be, MoelmActivation act, MoelmAct *dinp_, const MoelmAct *inp_,
                                     const MoelmAct *dout_, size_t n)
{
  float *dinp = (float *)dinp_;
  const float *inp = (const float *)inp_;
  const float *dout = (const float *)dout_;
  ElemJob j = {.out = dinp, .a = inp, .b = dout, .act = act};
  run_chunks(be, n, activation_backward_chunks, &j);
}

/* ---- dropout -------------------------------------------------------------------------- */

static void dropout_forward_chunks(void *ctx, int64_t begin, int64_t end)
{
  const ElemJob *j = ctx;
  float mult[CHUNK];
  for (int64_t c = begin; c < end; c++) {
    size_t lo = (size_t)c * CHUNK, hi = lo + CHUNK < j->n ? lo + CHUNK : j->n;
    moelm_dropout_fill_multipliers(mult, j->ids, j->p, lo, hi - lo);
    moelm_vmul(j->out + lo, j->a + lo, mult, hi - lo);
  }
}

static void fast_dropout_forward(MoelmBackend *be, MoelmAct *out_, const MoelmAct *inp_, size_t n, float p,
                                 const MoelmDropoutIds *ids)
{
  float *out = (float *)out_;
  const float *inp = (const float *)inp_;
  if (p == 0.0f) {
    if (out != inp)
      memmove(out, inp, n * sizeof(float));
    return;
  }
  ElemJob j = {.out = out, .a = inp, .p = p, .ids = ids};
  run_chunks(be, n, dropout_forward_chunks, &j);
}

static void dropout_backward_chunks(void *ctx, int64_t begin, int64_t end)
{
  const ElemJob *j = ctx;
  float mult[CHUNK];
  for (int64_t c = begin; c < end; c++) {
    size_t lo = (size_t)c * CHUNK, hi = lo + CHUNK < j->n ? lo + CHUNK : j->n;
    moelm_dropout_fill_multipliers(mult, j->ids, j->p, lo, hi - lo);
    moelm_vmul_add(j->out + lo, j->a + lo, mult, hi - lo);
  }
}

static void fast_dropout_backward(MoelmBackend *be, MoelmAct *dinp_, const MoelmAct *dout_, size_t n, float p,
                                  const MoelmDropoutIds *ids)
{
  float *dinp = (float *)dinp_;
  const float *dout = (const float *)dout_;
  if (p == 0.0f) {
    fast_axpy(be, dinp, 1.0f, dout, n);
    return;
  }
  ElemJob j = {.out = dinp, .a = dout, .p = p, .ids = ids};
  run_chunks(be, n, dropout_backward_chunks, &j);
}

/* ---- Adam ----------------------------------------------------------------------------- */

/* One element of the update (coefficients precomputed by fast_adam_step). */
#define ADAM_ELEMENT(k)                                                                 \
  do {                                                                                  \
    const float gk = g[k] * scale;                                                      \
    const float mk = m[k] * b1 + a1 * gk;                                               \
    const float vk = v[k] * b2 + a2 * gk * gk;                                          \
    m[k] = mk;                                                                          \
    v[k] = vk;                                                                          \
    const float pk = p[k] - decay * p[k];                                               \
    p[k] = pk - step * (mk / (sqrtf(vk) + eps));                                        \
  } while (0)

static void adam_chunks(void *ctx, int64_t begin, int64_t end)
{
  const ElemJob *j = ctx;
  CHUNK_RANGE(begin, end, j->n);
  const MoelmAdamParams *hp = j->hp;
  float *restrict p = j->param, *restrict m = j->exp_avg, *restrict v = j->exp_avg_sq;
  const float *restrict g = j->a;
  const float b1 = (float)hp->beta1, a1 = (float)(1.0 - hp->beta1), b2 = (float)hp->beta2,
              a2 = (float)(1.0 - hp->beta2);
  const float eps = hp->eps, scale = hp->grad_scale, decay = j->decay, step = j->step_size;
  size_t i = lo;
  for (; i + 8 <= hi; i += 8) /* a fixed trip count: one AVX2 vector per array */
    for (size_t k = i; k < i + 8; k++)
      ADAM_ELEMENT(k);
  for (; i < hi; i++)
    ADAM_ELEMENT(i);
}
#undef ADAM_ELEMENT

static void fast_adam_step(MoelmBackend *be, float *param, const float *grad, float *exp_avg, float *exp_avg_sq,
                           size_t n, const MoelmAdamParams *hp)
{
  double bc1 = 1.0 - pow(hp->beta1, (double)hp->step);
  double bc2 = 1.0 - pow(hp->beta2, (double)hp->step);
  ElemJob j = {.param = param, .a = grad, .exp_avg = exp_avg, .exp_avg_sq = exp_avg_sq, .hp = hp,
               .step_size = (float)(hp->lr * sqrt(bc2) / bc1), .decay = hp->weight_decay * hp->lr};
  run_chunks(be, n, adam_chunks, &j);
}

/* ---- rows ----------------------------------------------------------------------------- */

typedef struct {
  float *out, *dweight;
  const float *inp, *dout, *weight;
  const int32_t *idx;
  int n, C;
} RowsJob;

static void gather_part(void *ctx, int64_t begin, int64_t end)
{
  const RowsJob *j = ctx;
  for (int64_t i = begin; i < end; i++) {
    if (j->idx[i] < 0)
      memset(j->out + i * j->C, 0, (size_t)j->C * sizeof(float));
    else
      memcpy(j->out + i * j->C, j->inp + (size_t)j->idx[i] * j->C, (size_t)j->C * sizeof(float));
  }
}

static void fast_gather_rows(MoelmBackend *be, MoelmAct *out_, const MoelmAct *inp_, const int32_t *idx, int n, int C)
{
  float *out = (float *)out_;
  const float *inp = (const float *)inp_;
  RowsJob j = {.out = out, .inp = inp, .idx = idx, .n = n, .C = C};
  moelm_thread_pool_run(moelm_cpu_pool(be), n, 16384 / (C > 0 ? C : 1) + 1, gather_part, &j);
}

/* Destination rows may repeat, so threads own column slices. */
#define COL_SLICE 32

static void scatter_part(void *ctx, int64_t begin, int64_t end)
{
  const RowsJob *j = ctx;
  int c0 = (int)begin * COL_SLICE, c1 = (int)end * COL_SLICE < j->C ? (int)end * COL_SLICE : j->C;
  for (int i = 0; i < j->n; i++)
    if (j->idx[i] >= 0)
      moelm_vaxpy(j->out + (size_t)j->idx[i] * j->C + c0, j->weight ? j->weight[i] : 1.0f,
                j->inp + (size_t)i * j->C + c0, c1 - c0);
}

static void fast_scatter_add_rows(MoelmBackend *be, MoelmAct *out_, const MoelmAct *inp_, const int32_t *idx,
                                  const float *weight, int n, int C)
{
  float *out = (float *)out_;
  const float *inp = (const float *)inp_;
  RowsJob j = {.out = out, .inp = inp, .idx = idx, .weight = weight, .n = n, .C = C};
  int slices = (C + COL_SLICE - 1) / COL_SLICE;
  moelm_thread_pool_run(moelm_cpu_pool(be), slices, (int64_t)n * C < 65536 ? slices : 1, scatter_part, &j);
}

static void scatter_backward_part(void *ctx, int64_t begin, int64_t end)
{
  const RowsJob *j = ctx;
  for (int64_t i = begin; i < end; i++) {
    if (j->idx[i] < 0)
      continue;
    const float *g = j->dout + (size_t)j->idx[i] * j->C;
    if (j->out != NULL)
      moelm_vaxpy(j->out + i * j->C, j->weight ? j->weight[i] : 1.0f, g, j->C);
    if (j->dweight != NULL)
      j->dweight[i] += moelm_vdot(g, j->inp + i * j->C, j->C);
  }
}

static void fast_scatter_add_rows_backward(MoelmBackend *be, MoelmAct *dinp_, float *dweight, const MoelmAct *dout_,
                                           const MoelmAct *inp_, const int32_t *idx, const float *weight, int n, int C)
{
  float *dinp = (float *)dinp_;
  const float *dout = (const float *)dout_;
  const float *inp = (const float *)inp_;
  RowsJob j = {.out = dinp, .dweight = dweight, .dout = dout, .inp = inp, .idx = idx, .weight = weight, .n = n,
               .C = C};
  moelm_thread_pool_run(moelm_cpu_pool(be), n, 16384 / (C > 0 ? C : 1) + 1, scatter_backward_part, &j);
}

void moelm_fast_fill_elementwise(struct moelm_backend_ops *ops)
{
  ops->fill = fast_fill;
  ops->add = fast_add;
  ops->axpy = fast_axpy;
  ops->scale = fast_scale;
  ops->sum_squares = fast_sum_squares;
  ops->activation_forward = fast_activation_forward;
  ops->activation_backward = fast_activation_backward;
  ops->dropout_forward = fast_dropout_forward;
  ops->dropout_backward = fast_dropout_backward;
  ops->gather_rows = fast_gather_rows;
  ops->scatter_add_rows = fast_scatter_add_rows;
  ops->scatter_add_rows_backward = fast_scatter_add_rows_backward;
  ops->adam_step = fast_adam_step;
}
