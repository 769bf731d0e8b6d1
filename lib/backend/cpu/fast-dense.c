/* moelm — fast CPU ops over dense rows: GEMM and linear through the parallel sgemm,
 * embedding and layer norm split over the pool by rows (or by column slices where rows
 * would race on the same gradient row). */
#include "config.h"

#include <string.h>

#include "backend/cpu/cpu-internal.h"
#include "backend/cpu/simd.h"

/* Column slices are this many floats wide (a multiple of the vector width). */
#define COL_SLICE 32

static void fast_gemm(MoelmBackend *be, float *c, const float *a, const float *b, int M, int N, int K,
                      gboolean trans_a, gboolean trans_b, float alpha, float beta)
{
  moelm_cpu_sgemm_parallel(moelm_cpu_pool(be), trans_a, trans_b, M, N, K, alpha, a, trans_a ? M : K, b,
                           trans_b ? K : N, beta, c, N);
}

/* ---- embedding ------------------------------------------------------------------------ */

typedef struct {
  float *out;
  const float *dout;
  float *dwte, *dwpe;
  const int32_t *tokens, *positions;
  const float *wte, *wpe;
  int N, C;
  float scale;
} EmbeddingJob;

static void embedding_forward_rows(void *ctx, int64_t begin, int64_t end)
{
  const EmbeddingJob *j = ctx;
  int C = j->C;
  for (int64_t n = begin; n < end; n++) {
    const float *e = j->wte + (size_t)j->tokens[n] * C;
    float *o = j->out + n * C;
    for (int c = 0; c < C; c++)
      o[c] = j->scale * e[c];
    if (j->wpe != NULL)
      moelm_vaxpy(o, 1.0f, j->wpe + (size_t)j->positions[n] * C, C);
  }
}

static void fast_embedding_forward(MoelmBackend *be, MoelmAct *out_, const int32_t *tokens, const int32_t *positions,
                                   const float *wte, const float *wpe, int N, int C, float scale)
{
  float *out = (float *)out_;
  EmbeddingJob j = {.out = out, .tokens = tokens, .positions = positions, .wte = wte, .wpe = wpe, .N = N, .C = C,
                    .scale = scale};
  moelm_thread_pool_run(moelm_cpu_pool(be), N, 16384 / (C > 0 ? C : 1) + 1, embedding_forward_rows, &j);
}

/* Tokens repeat, so threads own column slices of the gradient tables instead of rows. */
static void embedding_backward_cols(void *ctx, int64_t begin, int64_t end)
{
  const EmbeddingJob *j = ctx;
  int c0 = (int)begin * COL_SLICE, c1 = (int)end * COL_SLICE < j->C ? (int)end * COL_SLICE : j->C;
  for (int n = 0; n < j->N; n++) {
    const float *g = j->dout + (size_t)n * j->C + c0;
    if (j->dwte != NULL)
      moelm_vaxpy(j->dwte + (size_t)j->tokens[n] * j->C + c0, j->scale, g, c1 - c0);
    if (j->dwpe != NULL)
      moelm_vaxpy(j->dwpe + (size_t)j->positions[n] * j->C + c0, 1.0f, g, c1 - c0);
  }
}

static void fast_embedding_backward(MoelmBackend *be, float *dwte, float *dwpe, const MoelmAct *dout_,
                                    const int32_t *tokens, const int32_t *positions, int N, int C, float scale)
{
  const float *dout = (const float *)dout_;
  EmbeddingJob j = {.dout = dout, .dwte = dwte, .dwpe = dwpe, .tokens = tokens, .positions = positions, .N = N,
                    .C = C, .scale = scale};
  int slices = (C + COL_SLICE - 1) / COL_SLICE;
  moelm_thread_pool_run(moelm_cpu_pool(be), slices, (int64_t)N * C < 65536 ? slices : 1, embedding_backward_cols,
                        &j);
}

/* ---- layer norm ----------------------------------------------------------------------- */

typedef struct {
  float *out, *mean, *rstd;
  const float *inp, *weight, *bias;
  float *dinp, *dweight, *dbias;
  const float *dout, *cmean, *crstd;
  float *partials; /* (parts, 2, C): per-part dweight | dbias */
  int N, C, parts;
  float eps;
} LayerNormJob;

static void layernorm_forward_rows(void *ctx, int64_t begin, int64_t end)
{
  const LayerNormJob *j = ctx;
  int C = j->C;
  for (int64_t n = begin; n < end; n++) {
    const float *x = j->inp + n * C;
    float sum = 0.0f;
    for (int c = 0; c < C; c++)
      sum += x[c];
    float m = sum / C;
    float var = 0.0f;
    for (int c = 0; c < C; c++)
      var += (x[c] - m) * (x[c] - m);
    float s = 1.0f / sqrtf(var / C + j->eps);
    float *o = j->out + n * C;
    for (int c = 0; c < C; c++)
      o[c] = (x[c] - m) * s * j->weight[c] + j->bias[c];
    if (j->mean != NULL)
      j->mean[n] = m;
    if (j->rstd != NULL)
      j->rstd[n] = s;
  }
}

static void fast_layernorm_forward(MoelmBackend *be, MoelmAct *out_, float *mean, float *rstd, const MoelmAct *inp_,
                                   const float *weight, const float *bias, int N, int C, float eps)
{
  float *out = (float *)out_;
  const float *inp = (const float *)inp_;
  LayerNormJob j = {.out = out, .mean = mean, .rstd = rstd, .inp = inp, .weight = weight, .bias = bias, .N = N,
                    .C = C, .eps = eps};
  moelm_thread_pool_run(moelm_cpu_pool(be), N, 16384 / (C > 0 ? C : 1) + 1, layernorm_forward_rows, &j);
}

/* Part p handles a fixed range of rows, so the order of the parameter-gradient sums does
 * not depend on which thread ran what: results are reproducible for a given thread count. */
static void layernorm_backward_parts(void *ctx, int64_t begin, int64_t end)
{
  const LayerNormJob *j = ctx;
  int C = j->C;
  for (int64_t part = begin; part < end; part++) {
    int64_t n0 = j->N * part / j->parts, n1 = j->N * (part + 1) / j->parts;
    float *pw = j->partials + part * 2 * C, *pb = pw + C;
    memset(pw, 0, 2 * (size_t)C * sizeof(float));
    for (int64_t n = n0; n < n1; n++) {
      const float *x = j->inp + n * C;
      const float *g = j->dout + n * C;
      float m = j->cmean[n], s = j->crstd[n];
      float mean_dxhat = 0.0f, mean_dxhat_xhat = 0.0f;
      for (int c = 0; c < C; c++) {
        float xhat = (x[c] - m) * s;
        float dxhat = g[c] * j->weight[c];
        mean_dxhat += dxhat;
        mean_dxhat_xhat += dxhat * xhat;
        pb[c] += g[c];
        pw[c] += g[c] * xhat;
      }
      mean_dxhat /= C;
      mean_dxhat_xhat /= C;
      if (j->dinp != NULL) {
        float *d = j->dinp + n * C;
        for (int c = 0; c < C; c++) {
          float xhat = (x[c] - m) * s;
          d[c] += s * (g[c] * j->weight[c] - mean_dxhat - xhat * mean_dxhat_xhat);
        }
      }
    }
  }
}

static void fast_layernorm_backward(MoelmBackend *be, MoelmAct *dinp_, float *dweight, float *dbias,
                                    const MoelmAct *dout_, const MoelmAct *inp_, const float *weight,
                                    const float *mean, const float *rstd, int N, int C)
{
  float *dinp = (float *)dinp_;
  const float *dout = (const float *)dout_;
  const float *inp = (const float *)inp_;
  MoelmThreadPool *pool = moelm_cpu_pool(be);
  int parts = (int64_t)N * C < 32768 ? 1 : moelm_thread_pool_size(pool);
  if (parts > N)
    parts = N > 0 ? N : 1;
  LayerNormJob j = {.dinp = dinp, .dweight = dweight, .dbias = dbias, .dout = dout, .inp = inp,
                    .weight = weight, .cmean = mean, .crstd = rstd, .N = N, .C = C, .parts = parts};
  j.partials = g_new(float, (size_t)parts * 2 * C);
  moelm_thread_pool_run(pool, parts, 1, layernorm_backward_parts, &j);
  for (int p = 0; p < parts; p++) {
    if (dweight != NULL)
      moelm_vaxpy(dweight, 1.0f, j.partials + (size_t)p * 2 * C, C);
    if (dbias != NULL)
      moelm_vaxpy(dbias, 1.0f, j.partials + (size_t)p * 2 * C + C, C);
  }
  g_free(j.partials);
}

/* ---- linear --------------------------------------------------------------------------- */

typedef struct {
  float *out;
  const float *bias;
  const float *dout;
  float *dbias;
  int N, OC;
} BiasJob;

static void bias_fill_rows(void *ctx, int64_t begin, int64_t end)
{
  const BiasJob *j = ctx;
  for (int64_t n = begin; n < end; n++)
    memcpy(j->out + n * j->OC, j->bias, (size_t)j->OC * sizeof(float));
}

static void bias_grad_cols(void *ctx, int64_t begin, int64_t end)
{
  const BiasJob *j = ctx;
  int o0 = (int)begin * COL_SLICE, o1 = (int)end * COL_SLICE < j->OC ? (int)end * COL_SLICE : j->OC;
  float acc[COL_SLICE];
  for (int o = o0; o < o1; o += COL_SLICE) {
    int w = o1 - o < COL_SLICE ? o1 - o : COL_SLICE;
    memset(acc, 0, sizeof(acc));
    for (int n = 0; n < j->N; n++) {
      const float *g = j->dout + (size_t)n * j->OC + o;
      for (int k = 0; k < w; k++)
        acc[k] += g[k];
    }
    for (int k = 0; k < w; k++)
      j->dbias[o + k] += acc[k];
  }
}

static void fast_linear_forward(MoelmBackend *be, MoelmAct *out_, const MoelmAct *inp_, const float *weight,
                                const float *bias, int N, int IC, int OC)
{
  float *out = (float *)out_;
  const float *inp = (const float *)inp_;
  MoelmThreadPool *pool = moelm_cpu_pool(be);
  if (bias != NULL) {
    BiasJob j = {.out = out, .bias = bias, .N = N, .OC = OC};
    moelm_thread_pool_run(pool, N, 16384 / (OC > 0 ? OC : 1) + 1, bias_fill_rows, &j);
  }
  moelm_cpu_sgemm_parallel(pool, FALSE, TRUE, N, OC, IC, 1.0f, inp, IC, weight, IC, bias != NULL ? 1.0f : 0.0f,
                           out, OC);
}

static void fast_linear_backward(MoelmBackend *be, MoelmAct *dinp_, float *dweight, float *dbias,
                                 const MoelmAct *dout_, const MoelmAct *inp_, const float *weight, int N, int IC,
                                 int OC)
{
  float *dinp = (float *)dinp_;
  const float *dout = (const float *)dout_;
  const float *inp = (const float *)inp_;
  MoelmThreadPool *pool = moelm_cpu_pool(be);
  if (dinp != NULL) /* dinp(N,IC) += dout(N,OC) weight(OC,IC) */
    moelm_cpu_sgemm_parallel(pool, FALSE, FALSE, N, IC, OC, 1.0f, dout, OC, weight, IC, 1.0f, dinp, IC);
  if (dweight != NULL) /* dweight(OC,IC) += dout^T(OC,N) inp(N,IC) */
    moelm_cpu_sgemm_parallel(pool, TRUE, FALSE, OC, IC, N, 1.0f, dout, OC, inp, IC, 1.0f, dweight, IC);
  if (dbias != NULL) {
    BiasJob j = {.dout = dout, .dbias = dbias, .N = N, .OC = OC};
    int slices = (OC + COL_SLICE - 1) / COL_SLICE;
    moelm_thread_pool_run(pool, slices, (int64_t)N * OC < 65536 ? slices : 1, bias_grad_cols, &j);
  }
}

void moelm_fast_fill_dense(struct moelm_backend_ops *ops)
{
  ops->gemm = fast_gemm;
  ops->embedding_forward = fast_embedding_forward;
  ops->embedding_backward = fast_embedding_backward;
  ops->layernorm_forward = fast_layernorm_forward;
  ops->layernorm_backward = fast_layernorm_backward;
  ops->linear_forward = fast_linear_forward;
  ops->linear_backward = fast_linear_backward;
}
