/* moelm — the CPU half-storage variant ("cpu-bf16", "cpu-fp16"): activations live in bf16
 * or fp16 (be->act_dtype) and every op computes in fp32 with the fast path's kernels
 * (state->inner): inputs are widened into staging buffers, outputs rounded back once.
 * Accumulating outputs are widened first, so `+=` happens in fp32 and rounds once per op.
 * It is slower than the fp32 path (the conversions) and exists to prove that the engine
 * carries a half-precision activation type end to end, as a GPU backend will. Parameters,
 * gradients, optimizer state, losses and log-probabilities stay fp32 (they pass through). */
#include "config.h"

#include <string.h>

#include "backend/cpu/cpu-internal.h"

/* Grow-only staging buffers, by slot; an op uses at most a few at once. */
enum { HALF_SLOTS = 5 };

struct MoelmHalfScratch {
  float *buf[HALF_SLOTS];
  size_t cap[HALF_SLOTS];
};

void moelm_half_scratch_free(MoelmHalfScratch *scratch)
{
  if (scratch == NULL)
    return;
  for (int i = 0; i < HALF_SLOTS; i++)
    g_free(scratch->buf[i]);
  g_free(scratch);
}

static const struct moelm_backend_ops *inner(MoelmBackend *be)
{
  return ((MoelmCpuState *)be->priv)->inner;
}

static float *slot(MoelmBackend *be, int i, size_t n)
{
  MoelmCpuState *state = be->priv;
  if (state->half == NULL)
    state->half = g_new0(MoelmHalfScratch, 1);
  MoelmHalfScratch *s = state->half;
  if (n > s->cap[i]) {
    g_free(s->buf[i]);
    s->buf[i] = g_new(float, n);
    s->cap[i] = n;
  }
  return s->buf[i];
}

/* fp32 copy of n activations in slot i (NULL stays NULL). */
static float *widen(MoelmBackend *be, int i, const MoelmAct *src, size_t n)
{
  if (src == NULL)
    return NULL;
  float *f = slot(be, i, n > 0 ? n : 1);
  moelm_convert_floats(f, MOELM_DT_F32, src, be->act_dtype, n);
  return f;
}

static void narrow(MoelmBackend *be, MoelmAct *dst, const float *src, size_t n)
{
  if (dst != NULL)
    moelm_convert_floats(dst, be->act_dtype, src, MOELM_DT_F32, n);
}

#define F(p) ((MoelmAct *)(p))
#define CF(p) ((const MoelmAct *)(p))

static void half_add(MoelmBackend *be, MoelmAct *out, const MoelmAct *a, const MoelmAct *b, size_t n)
{
  float *fa = widen(be, 0, a, n), *fb = widen(be, 1, b, n);
  inner(be)->add(be, F(fa), CF(fa), CF(fb), n);
  narrow(be, out, fa, n);
}

static void half_embedding_forward(MoelmBackend *be, MoelmAct *out, const int32_t *tokens, const int32_t *positions,
                                   const float *wte, const float *wpe, int N, int C, float scale)
{
  float *fo = slot(be, 0, (size_t)N * C + 1);
  inner(be)->embedding_forward(be, F(fo), tokens, positions, wte, wpe, N, C, scale);
  narrow(be, out, fo, (size_t)N * C);
}

static void half_embedding_backward(MoelmBackend *be, float *dwte, float *dwpe, const MoelmAct *dout,
                                    const int32_t *tokens, const int32_t *positions, int N, int C, float scale)
{
  inner(be)->embedding_backward(be, dwte, dwpe, CF(widen(be, 0, dout, (size_t)N * C)), tokens, positions, N, C,
                                scale);
}

static void half_layernorm_forward(MoelmBackend *be, MoelmAct *out, float *mean, float *rstd, const MoelmAct *inp,
                                   const float *weight, const float *bias, int N, int C, float eps)
{
  const size_t n = (size_t)N * C;
  float *fi = widen(be, 0, inp, n), *fo = slot(be, 1, n + 1);
  inner(be)->layernorm_forward(be, F(fo), mean, rstd, CF(fi), weight, bias, N, C, eps);
  narrow(be, out, fo, n);
}

static void half_layernorm_backward(MoelmBackend *be, MoelmAct *dinp, float *dweight, float *dbias,
                                    const MoelmAct *dout, const MoelmAct *inp, const float *weight, const float *mean,
                                    const float *rstd, int N, int C)
{
  const size_t n = (size_t)N * C;
  float *fd = widen(be, 0, dinp, n), *fg = widen(be, 1, dout, n), *fi = widen(be, 2, inp, n);
  inner(be)->layernorm_backward(be, F(fd), dweight, dbias, CF(fg), CF(fi), weight, mean, rstd, N, C);
  narrow(be, dinp, fd, n);
}

static void half_linear_forward(MoelmBackend *be, MoelmAct *out, const MoelmAct *inp, const float *weight,
                                const float *bias, int N, int IC, int OC)
{
  float *fi = widen(be, 0, inp, (size_t)N * IC), *fo = slot(be, 1, (size_t)N * OC + 1);
  inner(be)->linear_forward(be, F(fo), CF(fi), weight, bias, N, IC, OC);
  narrow(be, out, fo, (size_t)N * OC);
}

static void half_linear_backward(MoelmBackend *be, MoelmAct *dinp, float *dweight, float *dbias, const MoelmAct *dout,
                                 const MoelmAct *inp, const float *weight, int N, int IC, int OC)
{
  float *fd = widen(be, 0, dinp, (size_t)N * IC), *fg = widen(be, 1, dout, (size_t)N * OC);
  float *fi = dweight ? widen(be, 2, inp, (size_t)N * IC) : NULL;
  inner(be)->linear_backward(be, F(fd), dweight, dbias, CF(fg), CF(fi), weight, N, IC, OC);
  narrow(be, dinp, fd, (size_t)N * IC);
}

static size_t half_attention_saved_bytes(MoelmBackend *be, int B, int T, int C, int NH)
{
  return inner(be)->attention_saved_bytes(be, B, T, C, NH); /* fp32 probabilities */
}

static void half_attention_forward(MoelmBackend *be, MoelmAct *out, void *saved, const MoelmAct *qkv,
                                   const uint8_t *key_padding_mask, int B, int T, int C, int NH, float p,
                                   const MoelmDropoutIds *ids)
{
  const size_t n = (size_t)B * T * C;
  float *fq = widen(be, 0, qkv, 3 * n), *fo = slot(be, 1, n + 1);
  inner(be)->attention_forward(be, F(fo), saved, CF(fq), key_padding_mask, B, T, C, NH, p, ids);
  narrow(be, out, fo, n);
}

static void half_attention_backward(MoelmBackend *be, MoelmAct *dqkv, const MoelmAct *dout, const MoelmAct *qkv,
                                    const void *saved, const uint8_t *key_padding_mask, int B, int T, int C, int NH,
                                    float p, const MoelmDropoutIds *ids)
{
  const size_t n = (size_t)B * T * C;
  float *fd = widen(be, 0, dqkv, 3 * n), *fg = widen(be, 1, dout, n), *fq = widen(be, 2, qkv, 3 * n);
  inner(be)->attention_backward(be, F(fd), CF(fg), CF(fq), saved, key_padding_mask, B, T, C, NH, p, ids);
  narrow(be, dqkv, fd, 3 * n);
}

static void half_attention_decode(MoelmBackend *be, MoelmAct *out, const MoelmAct *q, const MoelmAct *k_cache,
                                  const MoelmAct *v_cache, const uint8_t *key_padding_mask, int B, int Tq, int Tk,
                                  int Tcap, int C, int NH)
{
  const size_t nq = (size_t)B * Tq * C, nc = (size_t)B * Tcap * C;
  float *fq = widen(be, 0, q, nq), *fk = widen(be, 1, k_cache, nc), *fv = widen(be, 2, v_cache, nc);
  float *fo = slot(be, 3, nq + 1);
  inner(be)->attention_decode(be, F(fo), CF(fq), CF(fk), CF(fv), key_padding_mask, B, Tq, Tk, Tcap, C, NH);
  narrow(be, out, fo, nq);
}

static void half_activation_forward(MoelmBackend *be, MoelmActivation act, MoelmAct *out, const MoelmAct *inp,
                                    size_t n)
{
  float *f = widen(be, 0, inp, n);
  inner(be)->activation_forward(be, act, F(f), CF(f), n);
  narrow(be, out, f, n);
}

static void half_activation_backward(MoelmBackend *be, MoelmActivation act, MoelmAct *dinp, const MoelmAct *inp,
                                     const MoelmAct *dout, size_t n)
{
  float *fd = widen(be, 0, dinp, n), *fi = widen(be, 1, inp, n), *fg = widen(be, 2, dout, n);
  inner(be)->activation_backward(be, act, F(fd), CF(fi), CF(fg), n);
  narrow(be, dinp, fd, n);
}

static void half_dropout_forward(MoelmBackend *be, MoelmAct *out, const MoelmAct *inp, size_t n, float p,
                                 const MoelmDropoutIds *ids)
{
  float *f = widen(be, 0, inp, n);
  inner(be)->dropout_forward(be, F(f), CF(f), n, p, ids);
  narrow(be, out, f, n);
}

static void half_dropout_backward(MoelmBackend *be, MoelmAct *dinp, const MoelmAct *dout, size_t n, float p,
                                  const MoelmDropoutIds *ids)
{
  float *fd = widen(be, 0, dinp, n), *fg = widen(be, 1, dout, n);
  inner(be)->dropout_backward(be, F(fd), CF(fg), n, p, ids);
  narrow(be, dinp, fd, n);
}

/* Rows: gather and scatter move whole rows, so they work on the stored bits directly. */
static void half_gather_rows(MoelmBackend *be, MoelmAct *out, const MoelmAct *inp, const int32_t *idx, int n, int C)
{
  const size_t row = moelm_act_bytes(be, (size_t)C);
  for (int i = 0; i < n; i++) {
    char *dst = (char *)out + (size_t)i * row;
    if (idx[i] < 0)
      memset(dst, 0, row);
    else
      memcpy(dst, (const char *)inp + (size_t)idx[i] * row, row);
  }
}

/* The rows of out that scatter touches, widened: out is (max idx + 1, C). */
static int rows_touched(const int32_t *idx, int n)
{
  int rows = 0;
  for (int i = 0; i < n; i++)
    rows = MAX(rows, idx[i] + 1);
  return rows;
}

static void half_scatter_add_rows(MoelmBackend *be, MoelmAct *out, const MoelmAct *inp, const int32_t *idx,
                                  const float *weight, int n, int C)
{
  const size_t rows = (size_t)rows_touched(idx, n);
  float *fo = widen(be, 0, out, rows * C), *fi = widen(be, 1, inp, (size_t)n * C);
  inner(be)->scatter_add_rows(be, F(fo), CF(fi), idx, weight, n, C);
  narrow(be, out, fo, rows * C);
}

static void half_scatter_add_rows_backward(MoelmBackend *be, MoelmAct *dinp, float *dweight, const MoelmAct *dout,
                                           const MoelmAct *inp, const int32_t *idx, const float *weight, int n, int C)
{
  const size_t rows = (size_t)rows_touched(idx, n);
  float *fd = widen(be, 0, dinp, (size_t)n * C), *fg = widen(be, 1, dout, rows * C);
  float *fi = dweight ? widen(be, 2, inp, (size_t)n * C) : NULL;
  inner(be)->scatter_add_rows_backward(be, F(fd), dweight, CF(fg), CF(fi), idx, weight, n, C);
  narrow(be, dinp, fd, (size_t)n * C);
}

static void half_cross_entropy(MoelmBackend *be, float *losses, MoelmAct *logits, const int32_t *targets,
                               const float *dloss, int N, int V, int ignore_index)
{
  const size_t n = (size_t)N * V;
  float *f = widen(be, 0, logits, n);
  inner(be)->cross_entropy(be, losses, F(f), targets, dloss, N, V, ignore_index);
  if (dloss != NULL)
    narrow(be, logits, f, n);
}

static void half_target_log_probs(MoelmBackend *be, float *lprobs, const MoelmAct *logits, const int32_t *targets,
                                  int N, int V, int ignore_index)
{
  inner(be)->target_log_probs(be, lprobs, CF(widen(be, 0, logits, (size_t)N * V)), targets, N, V, ignore_index);
}

static void half_log_softmax_forward(MoelmBackend *be, float *out, const MoelmAct *inp, int N, int V)
{
  inner(be)->log_softmax_forward(be, out, CF(widen(be, 0, inp, (size_t)N * V)), N, V);
}

static void half_log_softmax_backward(MoelmBackend *be, MoelmAct *dinp, const float *out, const float *dout, int N,
                                      int V)
{
  const size_t n = (size_t)N * V;
  float *fd = widen(be, 0, dinp, n);
  inner(be)->log_softmax_backward(be, F(fd), out, dout, N, V);
  narrow(be, dinp, fd, n);
}

/* fp32-only ops pass straight through to the fp32 kernels. */
static void half_fill(MoelmBackend *be, float *x, float value, size_t n) { inner(be)->fill(be, x, value, n); }
static void half_axpy(MoelmBackend *be, float *y, float alpha, const float *x, size_t n)
{
  inner(be)->axpy(be, y, alpha, x, n);
}
static void half_scale(MoelmBackend *be, float *x, float alpha, size_t n) { inner(be)->scale(be, x, alpha, n); }
static double half_sum_squares(MoelmBackend *be, const float *x, size_t n) { return inner(be)->sum_squares(be, x, n); }
static void half_gemm(MoelmBackend *be, float *c, const float *a, const float *b, int M, int N, int K, gboolean ta,
                      gboolean tb, float alpha, float beta)
{
  inner(be)->gemm(be, c, a, b, M, N, K, ta, tb, alpha, beta);
}
static void half_adam_step(MoelmBackend *be, float *param, const float *grad, float *exp_avg, float *exp_avg_sq,
                           size_t n, const MoelmAdamParams *hp)
{
  inner(be)->adam_step(be, param, grad, exp_avg, exp_avg_sq, n, hp);
}

void moelm_cpu_fill_half_storage(struct moelm_backend_ops *ops)
{
  ops->fill = half_fill;
  ops->add = half_add;
  ops->axpy = half_axpy;
  ops->scale = half_scale;
  ops->sum_squares = half_sum_squares;
  ops->gemm = half_gemm;
  ops->embedding_forward = half_embedding_forward;
  ops->embedding_backward = half_embedding_backward;
  ops->layernorm_forward = half_layernorm_forward;
  ops->layernorm_backward = half_layernorm_backward;
  ops->linear_forward = half_linear_forward;
  ops->linear_backward = half_linear_backward;
  ops->attention_saved_bytes = half_attention_saved_bytes;
  ops->attention_forward = half_attention_forward;
  ops->attention_backward = half_attention_backward;
  ops->attention_decode = half_attention_decode;
  ops->activation_forward = half_activation_forward;
  ops->activation_backward = half_activation_backward;
  ops->dropout_forward = half_dropout_forward;
  ops->dropout_backward = half_dropout_backward;
  ops->gather_rows = half_gather_rows;
  ops->scatter_add_rows = half_scatter_add_rows;
  ops->scatter_add_rows_backward = half_scatter_add_rows_backward;
  ops->cross_entropy = half_cross_entropy;
  ops->target_log_probs = half_target_log_probs;
  ops->log_softmax_forward = half_log_softmax_forward;
  ops->log_softmax_backward = half_log_softmax_backward;
  ops->adam_step = half_adam_step;
}
