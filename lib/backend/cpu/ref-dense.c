/* moelm — reference CPU ops over dense rows: GEMM, embedding, layer norm, linear.
 * Plain loop nests with double accumulators: the oracle for every other path. */
#include "config.h"

#include "backend/cpu/cpu-internal.h"

static void ref_gemm(MoelmBackend *be, float *c, const float *a, const float *b, int M, int N, int K,
                     gboolean trans_a, gboolean trans_b, float alpha, float beta)
{
  for (int i = 0; i < M; i++)
    for (int j = 0; j < N; j++) {
      double sum = 0;
      for (int k = 0; k < K; k++) {
        double av = trans_a ? a[(size_t)k * M + i] : a[(size_t)i * K + k];
        double bv = trans_b ? b[(size_t)j * K + k] : b[(size_t)k * N + j];
        sum += av * bv;
      }
      float *cij = c + (size_t)i * N + j;
      *cij = (float)(alpha * sum + (beta == 0.0f ? 0.0 : (double)beta * *cij));
    }
}

static void ref_embedding_forward(MoelmBackend *be, MoelmAct *out_, const int32_t *tokens, const int32_t *positions,
                                  const float *wte, const float *wpe, int N, int C, float scale)
{
  float *out = (float *)out_;
  for (int n = 0; n < N; n++) {
    const float *e = wte + (size_t)tokens[n] * C;
    const float *p = wpe ? wpe + (size_t)positions[n] * C : NULL;
    float *o = out + (size_t)n * C;
    for (int c = 0; c < C; c++)
      o[c] = scale * e[c] + (p ? p[c] : 0.0f);
  }
}

static void ref_embedding_backward(MoelmBackend *be, float *dwte, float *dwpe, const MoelmAct *dout_,
                                   const int32_t *tokens, const int32_t *positions, int N, int C, float scale)
{
  const float *dout = (const float *)dout_;
  for (int n = 0; n < N; n++) {
    const float *g = dout + (size_t)n * C;
    if (dwte != NULL) {
      float *d = dwte + (size_t)tokens[n] * C;
      for (int c = 0; c < C; c++)
        d[c] += scale * g[c];
    }
    if (dwpe != NULL) {
      float *d = dwpe + (size_t)positions[n] * C;
      for (int c = 0; c < C; c++)
        d[c] += g[c];
    }
  }
}

static void ref_layernorm_forward(MoelmBackend *be, MoelmAct *out_, float *mean, float *rstd, const MoelmAct *inp_,
                                  const float *weight, const float *bias, int N, int C, float eps)
{
  float *out = (float *)out_;
  const float *inp = (const float *)inp_;
  for (int n = 0; n < N; n++) {
    const float *x = inp + (size_t)n * C;
    double m = 0;
    for (int c = 0; c < C; c++)
      m += x[c];
    m /= C;
    double v = 0;
    for (int c = 0; c < C; c++)
      v += (x[c] - m) * (x[c] - m);
    v /= C;
    double s = 1.0 / sqrt(v + eps);
    float *o = out + (size_t)n * C;
    for (int c = 0; c < C; c++)
      o[c] = (float)((x[c] - m) * s * weight[c] + bias[c]);
    if (mean != NULL)
      mean[n] = (float)m;
    if (rstd != NULL)
      rstd[n] = (float)s;
  }
}

static void ref_layernorm_backward(MoelmBackend *be, MoelmAct *dinp_, float *dweight, float *dbias,
                                   const MoelmAct *dout_, const MoelmAct *inp_, const float *weight,
                                   const float *mean, const float *rstd, int N, int C)
{
  float *dinp = (float *)dinp_;
  const float *dout = (const float *)dout_;
  const float *inp = (const float *)inp_;
  for (int n = 0; n < N; n++) {
    const float *x = inp + (size_t)n * C;
    const float *g = dout + (size_t)n * C;
    double m = mean[n], s = rstd[n];
    /* dxhat = dout * weight; dx = s * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)) */
    double mean_dxhat = 0, mean_dxhat_xhat = 0;
    for (int c = 0; c < C; c++) {
      double xhat = (x[c] - m) * s;
      double dxhat = (double)g[c] * weight[c];
      mean_dxhat += dxhat;
      mean_dxhat_xhat += dxhat * xhat;
    }
    mean_dxhat /= C;
    mean_dxhat_xhat /= C;
    for (int c = 0; c < C; c++) {
      double xhat = (x[c] - m) * s;
      if (dbias != NULL)
        dbias[c] += g[c];
      if (dweight != NULL)
        dweight[c] += (float)(g[c] * xhat);
      if (dinp != NULL) {
        double dxhat = (double)g[c] * weight[c];
        dinp[(size_t)n * C + c] += (float)(s * (dxhat - mean_dxhat - xhat * mean_dxhat_xhat));
      }
    }
  }
}

static void ref_linear_forward(MoelmBackend *be, MoelmAct *out_, const MoelmAct *inp_, const float *weight,
                               const float *bias, int N, int IC, int OC)
{
  float *out = (float *)out_;
  const float *inp = (const float *)inp_;
  for (int n = 0; n < N; n++)
    for (int o = 0; o < OC; o++) {
      const float *x = inp + (size_t)n * IC;
      const float *w = weight + (size_t)o * IC;
      double sum = bias ? bias[o] : 0.0;
      for (int i = 0; i < IC; i++)
        sum += (double)x[i] * w[i];
      out[(size_t)n * OC + o] = (float)sum;
    }
}

static void ref_linear_backward(MoelmBackend *be, MoelmAct *dinp_, float *dweight, float *dbias,
                                const MoelmAct *dout_, const MoelmAct *inp_, const float *weight, int N, int IC, int OC)
{
  float *dinp = (float *)dinp_;
  const float *dout = (const float *)dout_;
  const float *inp = (const float *)inp_;
  if (dinp != NULL)
    for (int n = 0; n < N; n++)
      for (int i = 0; i < IC; i++) {
        double sum = 0;
        for (int o = 0; o < OC; o++)
          sum += (double)dout[(size_t)n * OC + o] * weight[(size_t)o * IC + i];
        dinp[(size_t)n * IC + i] += (float)sum;
      }
  if (dweight != NULL)
    for (int o = 0; o < OC; o++)
      for (int i = 0; i < IC; i++) {
        double sum = 0;
        for (int n = 0; n < N; n++)
          sum += (double)dout[(size_t)n * OC + o] * inp[(size_t)n * IC + i];
        dweight[(size_t)o * IC + i] += (float)sum;
      }
  if (dbias != NULL)
    for (int o = 0; o < OC; o++) {
      double sum = 0;
      for (int n = 0; n < N; n++)
        sum += dout[(size_t)n * OC + o];
      dbias[o] += (float)sum;
    }
}

void moelm_ref_fill_dense(struct moelm_backend_ops *ops)
{
  ops->gemm = ref_gemm;
  ops->embedding_forward = ref_embedding_forward;
  ops->embedding_backward = ref_embedding_backward;
  ops->layernorm_forward = ref_layernorm_forward;
  ops->layernorm_backward = ref_layernorm_backward;
  ops->linear_forward = ref_linear_forward;
  ops->linear_backward = ref_linear_backward;
}
