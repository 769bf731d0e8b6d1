/* moelm — op harness cases: memory ops and element-wise helpers, gemm, embedding, layer norm,
 * linear and grouped linear, activations, dropout, rows, Adam. Sizes are odd on purpose (not
 * multiples of the vector width or the GEMM blocks), include a size-1 edge, and the shapes of
 * the "tiny" benchmark model (C=256, FFN 1024, T=256, vocabulary 8000, 4 experts top-2). */
#include "config.h"

#include <math.h>
#include <string.h>

#include "ops-harness.h"

#define O(r) ((r)->be->ops)
#define BE(r) ((r)->be)


static const MoelmDropoutIds drop_ids = {.seed = 1234, .update = 7, .layer = 2, .site = 3};

/* ---- memory and element-wise ------------------------------------------------------------ */

static void run_convert(OpsRun *r, const OpsCase *c)
{
  const size_t n = (size_t)c->d[0];
  if (c->flags & OPS_TO_ACT) {
    const float *src = ops_f32(r, n, -4, 4);
    MoelmAct *dst = ops_act_out(r, "dst", n);
    if (OPS_OK(r))
      O(r)->convert(BE(r), dst, BE(r)->act_dtype, src, MOELM_DT_F32, n);
  } else {
    const MoelmAct *src = ops_act(r, n, -4, 4);
    float *dst = ops_f32_out(r, "dst", n);
    if (OPS_OK(r))
      O(r)->convert(BE(r), dst, MOELM_DT_F32, src, BE(r)->act_dtype, n);
  }
}

/* zero and copy on sub-ranges of activation buffers: the bytes around them stay. */
static void run_zero(OpsRun *r, const OpsCase *c)
{
  const size_t n = (size_t)c->d[0], a = n / 4;
  MoelmAct *x = ops_act_inout(r, "x", n, -1, 1);
  if (OPS_OK(r))
    O(r)->zero(BE(r), moelm_act_at(BE(r), x, a), moelm_act_bytes(BE(r), n - 2 * a));
}

static void run_copy(OpsRun *r, const OpsCase *c)
{
  const size_t n = (size_t)c->d[0], from = n / 4, to = n / 8, m = n - n / 4;
  const MoelmAct *src = ops_act(r, n, -1, 1);
  MoelmAct *dst = ops_act_inout(r, "dst", n, -1, 1);
  if (OPS_OK(r))
    O(r)->copy(BE(r), moelm_act_at(BE(r), dst, to), moelm_act_at(BE(r), src, from), moelm_act_bytes(BE(r), m));
}

static void run_fill(OpsRun *r, const OpsCase *c)
{
  float *x = ops_f32_out(r, "x", (size_t)c->d[0]);
  if (OPS_OK(r))
    O(r)->fill(BE(r), x, c->f, (size_t)c->d[0]);
}

static void run_add(OpsRun *r, const OpsCase *c)
{
  const size_t n = (size_t)c->d[0];
  if (c->flags & OPS_INPLACE) {
    MoelmAct *a = ops_act_inout(r, "out", n, -1, 1);
    const MoelmAct *b = ops_act(r, n, -1, 1);
    if (OPS_OK(r))
      O(r)->add(BE(r), a, a, b, n);
  } else {
    const MoelmAct *a = ops_act(r, n, -1, 1), *b = ops_act(r, n, -1, 1);
    MoelmAct *out = ops_act_out(r, "out", n);
    if (OPS_OK(r))
      O(r)->add(BE(r), out, a, b, n);
  }
}

static void run_axpy(OpsRun *r, const OpsCase *c)
{
  const size_t n = (size_t)c->d[0];
  const float *x = ops_f32(r, n, -1, 1);
  float *y = ops_f32_acc(r, "y", n, -1, 1);
  if (OPS_OK(r))
    O(r)->axpy(BE(r), y, c->f, x, n);
}

static void run_scale(OpsRun *r, const OpsCase *c)
{
  const size_t n = (size_t)c->d[0];
  float *h = ops_host_uniform(r, n, -1, 1);
  float *x = ops_f32_inout(r, "x", h, n);
  g_free(h);
  if (OPS_OK(r))
    O(r)->scale(BE(r), x, c->f, n);
}

static void run_sum_squares(OpsRun *r, const OpsCase *c)
{
  const size_t n = (size_t)c->d[0];
  const float *x = ops_f32(r, n, -2, 2);
  if (!OPS_OK(r))
    return;
  double ss = O(r)->sum_squares(BE(r), x, n);
  ops_host_result(r, "sum", &ss, 1);
}

static const OpsDef def_convert = {"convert", OPS_MEM, "n", NULL, {OPS_NEEDS(convert)},
                                   OPS_TOL_ELEMENTWISE, run_convert};
static const OpsDef def_zero = {"zero", OPS_MEM, "n", NULL, {OPS_NEEDS(zero)}, OPS_TOL_ELEMENTWISE, run_zero};
static const OpsDef def_copy = {"copy", OPS_MEM, "n", NULL, {OPS_NEEDS(copy)}, OPS_TOL_ELEMENTWISE, run_copy};
static const OpsDef def_fill = {"fill", OPS_MEM, "n", "value", {OPS_NEEDS(fill)}, OPS_TOL_F32_ELEMENTWISE, run_fill};
static const OpsDef def_add = {"add", OPS_MEM, "n", NULL, {OPS_NEEDS(add)}, OPS_TOL_ELEMENTWISE, run_add};
static const OpsDef def_axpy = {"axpy", OPS_MEM, "n", "alpha", {OPS_NEEDS(axpy)}, OPS_TOL_F32_ELEMENTWISE, run_axpy};
static const OpsDef def_scale = {"scale", OPS_MEM, "n", "alpha", {OPS_NEEDS(scale)},
                                 OPS_TOL_F32_ELEMENTWISE, run_scale};
static const OpsDef def_sum_squares = {"sum_squares", OPS_MEM, "n", NULL, {OPS_NEEDS(sum_squares)}, OPS_TOL_F32_SUMS,
                                       run_sum_squares};

/* ---- gemm ---------------------------------------------------------------------------------- */

static void run_gemm(OpsRun *r, const OpsCase *c)
{
  const int M = c->d[0], N = c->d[1], K = c->d[2];
  const gboolean ta = !!(c->flags & OPS_TRANS_A), tb = !!(c->flags & OPS_TRANS_B);
  const float *a = ops_f32(r, (size_t)M * K, -1, 1), *b = ops_f32(r, (size_t)K * N, -1, 1);
  float *cc;
  float beta = 0.0f;
  if (c->flags & OPS_BETA0) {
    cc = ops_f32_out(r, "c", (size_t)M * N); /* NaN: beta == 0 must ignore it */
  } else {
    float *h = ops_host_uniform(r, (size_t)M * N, -1, 1);
    cc = ops_f32_inout(r, "c", h, (size_t)M * N);
    g_free(h);
    beta = 0.3f;
  }
  if (OPS_OK(r))
    O(r)->gemm(BE(r), cc, a, b, M, N, K, ta, tb, c->f, beta);
}

static const OpsDef def_gemm = {"gemm", OPS_GEMM, "M N K", "alpha", {OPS_NEEDS(gemm)}, OPS_TOL_F32_SUMS, run_gemm};

/* ---- embedding ------------------------------------------------------------------------------ */

typedef struct {
  int32_t *tokens, *positions; /* backend memory */
} EmbIds;

static EmbIds emb_ids(OpsRun *r, int N, int V, int P)
{
  int32_t *t = g_new(int32_t, N + 1), *p = g_new(int32_t, N + 1);
  for (int n = 0; n < N; n++) {
    t[n] = (int32_t)ops_below(r, (uint32_t)V);
    p[n] = (int32_t)ops_below(r, (uint32_t)P);
  }
  EmbIds ids = {ops_i32_from(r, t, N), ops_i32_from(r, p, N)};
  g_free(t), g_free(p);
  return ids;
}

static void run_embedding_forward(OpsRun *r, const OpsCase *c)
{
  const int N = c->d[0], C = c->d[1], V = c->d[2], P = c->d[3];
  EmbIds ids = emb_ids(r, N, V, P);
  const float *wte = ops_f32(r, (size_t)V * C, -1, 1), *wpe = ops_f32(r, (size_t)P * C, -1, 1);
  MoelmAct *out = ops_act_out(r, "out", (size_t)N * C);
  if (OPS_OK(r))
    O(r)->embedding_forward(BE(r), out, ids.tokens, ids.positions, wte, (c->flags & OPS_LEARNED) ? wpe : NULL, N, C,
                            c->f);
}

static void run_embedding_backward(OpsRun *r, const OpsCase *c)
{
  const int N = c->d[0], C = c->d[1], V = c->d[2], P = c->d[3];
  EmbIds ids = emb_ids(r, N, V, P);
  const MoelmAct *dout = ops_act(r, (size_t)N * C, -1, 1);
  float *dwte = ops_f32_acc(r, "dwte", (size_t)V * C, -1, 1);
  float *dwpe = (c->flags & OPS_LEARNED) ? ops_f32_acc(r, "dwpe", (size_t)P * C, -1, 1) : NULL;
  if (OPS_OK(r))
    O(r)->embedding_backward(BE(r), dwte, dwpe, dout, ids.tokens, ids.positions, N, C, c->f);
}

static const OpsDef def_embedding_forward = {"embedding_forward", OPS_EMBED, "N C V P", "scale",
                                             {OPS_NEEDS(embedding_forward)},
                                             OPS_TOL_ELEMENTWISE, run_embedding_forward};
static const OpsDef def_embedding_backward = {"embedding_backward", OPS_EMBED, "N C V P", "scale",
                                              {OPS_NEEDS(embedding_backward)}, OPS_TOL_SUMS, run_embedding_backward};

/* ---- layer norm ------------------------------------------------------------------------------ */

static void run_layernorm_forward(OpsRun *r, const OpsCase *c)
{
  const int N = c->d[0], C = c->d[1];
  const size_t n = (size_t)N * C;
  const gboolean stats = !(c->flags & OPS_NO_SAVE);
  MoelmAct *inp, *out = ops_act_unary(r, "out", n, -3, 5, c->flags & OPS_INPLACE, &inp); /* in place: no stats */
  const float *w = ops_f32(r, C, 0.5f, 1.5f), *b = ops_f32(r, C, -1, 1);
  float *mean = stats ? ops_f32_out(r, "mean", N) : NULL, *rstd = stats ? ops_f32_out(r, "rstd", N) : NULL;
  if (OPS_OK(r))
    O(r)->layernorm_forward(BE(r), out, mean, rstd, inp, w, b, N, C, 1e-5f);
}

/* The saved statistics the backward reads, computed on the host from the input values. */
static void run_layernorm_backward(OpsRun *r, const OpsCase *c)
{
  const int N = c->d[0], C = c->d[1];
  const size_t n = (size_t)N * C;
  float *x = ops_host_uniform(r, n, -3, 5);
  ops_round_values(r, x, n);
  float *hm = g_new(float, N + 1), *hs = g_new(float, N + 1);
  for (int i = 0; i < N; i++) {
    double m = 0, v = 0;
    for (int j = 0; j < C; j++)
      m += x[(size_t)i * C + j];
    m /= C;
    for (int j = 0; j < C; j++)
      v += (x[(size_t)i * C + j] - m) * (x[(size_t)i * C + j] - m);
    hm[i] = (float)m;
    hs[i] = (float)(1.0 / sqrt(v / C + 1e-5));
  }
  const MoelmAct *inp = ops_act_from(r, x, n), *dout = ops_act(r, n, -1, 1);
  const float *w = ops_f32(r, C, 0.5f, 1.5f), *mean = ops_f32_from(r, hm, N), *rstd = ops_f32_from(r, hs, N);
  g_free(x), g_free(hm), g_free(hs);
  MoelmAct *dinp = (c->flags & OPS_NO_DINP) ? NULL : ops_act_acc(r, "dinp", n, -1, 1);
  const gboolean params = !(c->flags & OPS_PARTIAL);
  float *dw = params ? ops_f32_acc(r, "dweight", C, -1, 1) : NULL;
  float *db = params ? ops_f32_acc(r, "dbias", C, -1, 1) : NULL;
  if (OPS_OK(r))
    O(r)->layernorm_backward(BE(r), dinp, dw, db, dout, inp, w, mean, rstd, N, C);
}

static const OpsDef def_layernorm_forward = {"layernorm_forward", OPS_LNORM, "N C", NULL,
                                             {OPS_NEEDS(layernorm_forward)}, OPS_TOL_SUMS, run_layernorm_forward};
static const OpsDef def_layernorm_backward = {"layernorm_backward", OPS_LNORM, "N C", NULL,
                                              {OPS_NEEDS(layernorm_backward)}, OPS_TOL_SUMS, run_layernorm_backward};

/* ---- linear ---------------------------------------------------------------------------------- */

static void run_linear_forward(OpsRun *r, const OpsCase *c)
{
  const int N = c->d[0], IC = c->d[1], OC = c->d[2];
  const MoelmAct *inp = ops_act(r, (size_t)N * IC, -1, 1);
  const float *w = ops_f32(r, (size_t)OC * IC, -0.5f, 0.5f), *b = ops_f32(r, OC, -1, 1);
  MoelmAct *out = ops_act_out(r, "out", (size_t)N * OC);
  if (OPS_OK(r))
    O(r)->linear_forward(BE(r), out, inp, w, (c->flags & OPS_BIAS) ? b : NULL, N, IC, OC);
}

static void run_linear_backward(OpsRun *r, const OpsCase *c)
{
  const int N = c->d[0], IC = c->d[1], OC = c->d[2];
  const MoelmAct *inp = ops_act(r, (size_t)N * IC, -1, 1), *dout = ops_act(r, (size_t)N * OC, -1, 1);
  const float *w = ops_f32(r, (size_t)OC * IC, -0.5f, 0.5f);
  MoelmAct *dinp = (c->flags & OPS_NO_DINP) ? NULL : ops_act_acc(r, "dinp", (size_t)N * IC, -1, 1);
  const gboolean params = !(c->flags & OPS_PARTIAL);
  float *dw = params ? ops_f32_acc(r, "dweight", (size_t)OC * IC, -1, 1) : NULL;
  float *db = params && (c->flags & OPS_BIAS) ? ops_f32_acc(r, "dbias", OC, -1, 1) : NULL;
  if (OPS_OK(r))
    O(r)->linear_backward(BE(r), dinp, dw, db, dout, inp, w, N, IC, OC);
}

static const OpsDef def_linear_forward = {"linear_forward", OPS_LINEAR, "N IC OC", NULL,
                                          {OPS_NEEDS(linear_forward)}, OPS_TOL_SUMS, run_linear_forward};
static const OpsDef def_linear_backward = {"linear_backward", OPS_LINEAR, "N IC OC", NULL,
                                           {OPS_NEEDS(linear_backward)}, OPS_TOL_SUMS, run_linear_backward};

/* ---- grouped linear -------------------------------------------------------------------------
 * E experts over R rows of which the first `used` are dispatched; expert 1 gets no row when
 * E >= 3. Expert tensors sit w_stride / b_stride apart with gaps that must stay untouched. */

typedef struct {
  int E, R, IC, OC, used;
  size_t w_stride, b_stride;
  const int32_t *offsets; /* backend memory */
} Groups;

static Groups groups(OpsRun *r, const OpsCase *c)
{
  Groups g = {.E = c->d[0], .R = c->d[1], .IC = c->d[2], .OC = c->d[3], .used = c->d[4]};
  g.w_stride = (size_t)g.OC * g.IC + 5;
  g.b_stride = (size_t)g.OC + 3;
  double *share = g_new(double, g.E), total = 0;
  for (int e = 0; e < g.E; e++)
    total += share[e] = (g.E >= 3 && e == 1) ? 0 : 0.5 + ops_unit(r);
  int32_t *off = g_new(int32_t, g.E + 1);
  double acc = 0;
  off[0] = 0;
  for (int e = 0; e < g.E; e++) {
    acc += share[e];
    off[e + 1] = e == g.E - 1 ? g.used : (int32_t)(g.used * acc / total);
  }
  g.offsets = ops_i32_from(r, off, g.E + 1);
  g_free(share), g_free(off);
  return g;
}

static void run_grouped_forward(OpsRun *r, const OpsCase *c)
{
  Groups g = groups(r, c);
  const MoelmAct *inp = ops_act(r, (size_t)g.R * g.IC, -1, 1);
  const float *w = ops_f32(r, g.E * g.w_stride, -0.5f, 0.5f), *b = ops_f32(r, g.E * g.b_stride, -1, 1);
  MoelmAct *out = ops_act_out(r, "out", (size_t)g.R * g.OC); /* unused rows must become zeros */
  if (OPS_OK(r))
    O(r)->grouped_linear_forward(BE(r), out, inp, w, g.w_stride, (c->flags & OPS_BIAS) ? b : NULL, g.b_stride,
                                 g.offsets, g.E, g.R, g.IC, g.OC);
}

static void run_grouped_backward(OpsRun *r, const OpsCase *c)
{
  Groups g = groups(r, c);
  const MoelmAct *inp = ops_act(r, (size_t)g.R * g.IC, -1, 1), *dout = ops_act(r, (size_t)g.R * g.OC, -1, 1);
  const float *w = ops_f32(r, g.E * g.w_stride, -0.5f, 0.5f);
  MoelmAct *dinp = (c->flags & OPS_NO_DINP) ? NULL : ops_act_acc(r, "dinp", (size_t)g.R * g.IC, -1, 1);
  const gboolean params = !(c->flags & OPS_PARTIAL);
  float *dw = params ? ops_f32_acc(r, "dweight", g.E * g.w_stride, -1, 1) : NULL;
  float *db = params && (c->flags & OPS_BIAS) ? ops_f32_acc(r, "dbias", g.E * g.b_stride, -1, 1) : NULL;
  if (OPS_OK(r))
    O(r)->grouped_linear_backward(BE(r), dinp, dw, db, dout, inp, w, g.w_stride, g.b_stride, g.offsets, g.E, g.R,
                                  g.IC, g.OC);
}

static const OpsDef def_grouped_forward = {"grouped_linear_forward", OPS_GROUPED, "E R IC OC used", NULL,
                                           {OPS_NEEDS(grouped_linear_forward)}, OPS_TOL_SUMS, run_grouped_forward};
static const OpsDef def_grouped_backward = {"grouped_linear_backward", OPS_GROUPED, "E R IC OC used", NULL,
                                            {OPS_NEEDS(grouped_linear_backward)}, OPS_TOL_SUMS, run_grouped_backward};

/* ---- activations ------------------------------------------------------------------------------ */

static void run_activation_forward(OpsRun *r, const OpsCase *c)
{
  const size_t n = (size_t)c->d[0];
  MoelmAct *inp, *out = ops_act_unary(r, "out", n, -4, 4, c->flags & OPS_INPLACE, &inp);
  if (OPS_OK(r))
    O(r)->activation_forward(BE(r), (MoelmActivation)c->d[1], out, inp, n);
}

static void run_activation_backward(OpsRun *r, const OpsCase *c)
{
  const size_t n = (size_t)c->d[0];
  const MoelmAct *inp = ops_act(r, n, -4, 4), *dout = ops_act(r, n, -1, 1);
  MoelmAct *dinp = ops_act_acc(r, "dinp", n, -1, 1);
  if (OPS_OK(r))
    O(r)->activation_backward(BE(r), (MoelmActivation)c->d[1], dinp, inp, dout, n);
}

/* d[1]: 0 relu, 1 gelu, 2 gelu_accurate, 3 tanh (MoelmActivation) */
static const OpsDef def_activation_forward = {"activation_forward", OPS_ACT, "n act", NULL,
                                              {OPS_NEEDS(activation_forward)},
                                              OPS_TOL_ELEMENTWISE, run_activation_forward};
static const OpsDef def_activation_backward = {"activation_backward", OPS_ACT, "n act", NULL,
                                               {OPS_NEEDS(activation_backward)},
                                               OPS_TOL_ELEMENTWISE, run_activation_backward};

/* ---- dropout ------------------------------------------------------------------------------------
 * The masks are a function of the ids alone, so every backend matches the reference up to
 * rounding; a different mask would be an O(p) error. */

static void run_dropout_forward(OpsRun *r, const OpsCase *c)
{
  const size_t n = (size_t)c->d[0];
  MoelmAct *inp, *out = ops_act_unary(r, "out", n, -2, 2, c->flags & OPS_INPLACE, &inp);
  if (OPS_OK(r))
    O(r)->dropout_forward(BE(r), out, inp, n, c->f, &drop_ids);
}

static void run_dropout_backward(OpsRun *r, const OpsCase *c)
{
  const size_t n = (size_t)c->d[0];
  const MoelmAct *dout = ops_act(r, n, -1, 1);
  MoelmAct *dinp = ops_act_acc(r, "dinp", n, -1, 1);
  if (OPS_OK(r))
    O(r)->dropout_backward(BE(r), dinp, dout, n, c->f, &drop_ids);
}

static const OpsDef def_dropout_forward = {"dropout_forward", OPS_DROPOUT, "n", "p", {OPS_NEEDS(dropout_forward)},
                                           OPS_TOL_ELEMENTWISE, run_dropout_forward};
static const OpsDef def_dropout_backward = {"dropout_backward", OPS_DROPOUT, "n", "p",
                                            {OPS_NEEDS(dropout_backward)}, OPS_TOL_ELEMENTWISE, run_dropout_backward};

/* ---- rows: gather / scatter -------------------------------------------------------------------
 * Indices repeat and about one in eight is -1 (an unused row). */

static const int32_t *row_index(OpsRun *r, int n, int rows)
{
  int32_t *idx = g_new(int32_t, n + 1);
  for (int i = 0; i < n; i++)
    idx[i] = ops_below(r, 8) == 0 ? -1 : (int32_t)ops_below(r, (uint32_t)rows);
  const int32_t *p = ops_i32_from(r, idx, n);
  g_free(idx);
  return p;
}

static void run_gather(OpsRun *r, const OpsCase *c)
{
  const int n = c->d[0], C = c->d[1], rows = c->d[2];
  const int32_t *idx = row_index(r, n, rows);
  const MoelmAct *inp = ops_act(r, (size_t)rows * C, -1, 1);
  MoelmAct *out = ops_act_out(r, "out", (size_t)n * C);
  if (OPS_OK(r))
    O(r)->gather_rows(BE(r), out, inp, idx, n, C);
}

static void run_scatter(OpsRun *r, const OpsCase *c)
{
  const int n = c->d[0], C = c->d[1], rows = c->d[2];
  const int32_t *idx = row_index(r, n, rows);
  const MoelmAct *inp = ops_act(r, (size_t)n * C, -1, 1);
  const float *w = ops_f32(r, n, -1, 1);
  MoelmAct *out = ops_act_acc(r, "out", (size_t)rows * C, -1, 1);
  if (OPS_OK(r))
    O(r)->scatter_add_rows(BE(r), out, inp, idx, (c->flags & OPS_NO_WEIGHT) ? NULL : w, n, C);
}

static void run_scatter_backward(OpsRun *r, const OpsCase *c)
{
  const int n = c->d[0], C = c->d[1], rows = c->d[2];
  const int32_t *idx = row_index(r, n, rows);
  const MoelmAct *inp = ops_act(r, (size_t)n * C, -1, 1), *dout = ops_act(r, (size_t)rows * C, -1, 1);
  const float *w = ops_f32(r, n, -1, 1);
  MoelmAct *dinp = (c->flags & OPS_NO_DINP) ? NULL : ops_act_acc(r, "dinp", (size_t)n * C, -1, 1);
  float *dw = (c->flags & OPS_PARTIAL) ? NULL : ops_f32_acc(r, "dweight", n, -1, 1);
  if (OPS_OK(r))
    O(r)->scatter_add_rows_backward(BE(r), dinp, dw, dout, inp, idx, (c->flags & OPS_NO_WEIGHT) ? NULL : w, n, C);
}

static const OpsDef def_gather = {"gather_rows", OPS_ROWS, "n C rows", NULL, {OPS_NEEDS(gather_rows)},
                                  OPS_TOL_ELEMENTWISE, run_gather};
static const OpsDef def_scatter = {"scatter_add_rows", OPS_ROWS, "n C rows", NULL, {OPS_NEEDS(scatter_add_rows)},
                                   OPS_TOL_SUMS, run_scatter};
static const OpsDef def_scatter_backward = {"scatter_add_rows_backward", OPS_ROWS, "n C rows", NULL,
                                            {OPS_NEEDS(scatter_add_rows_backward)}, OPS_TOL_SUMS, run_scatter_backward};

/* ---- Adam --------------------------------------------------------------------------------------- */

static void run_adam(OpsRun *r, const OpsCase *c)
{
  const size_t n = (size_t)c->d[0];
  const MoelmAdamParams hp = {.beta1 = 0.9, .beta2 = 0.98, .lr = 5e-4f, .eps = 1e-8f, .weight_decay = c->f,
                              .grad_scale = 0.25f, .step = c->d[1]};
  /* magnitudes of a model's: weights ~0.05, updates ~lr */
  const float *grad = ops_f32(r, n, -1, 1);
  float *param = ops_f32_acc(r, "param", n, -0.05f, 0.05f);
  float *m = ops_f32_acc(r, "exp_avg", n, -0.01f, 0.01f);
  float *v = ops_f32_acc(r, "exp_avg_sq", n, 0, 1e-4f);
  if (OPS_OK(r))
    O(r)->adam_step(BE(r), param, grad, m, v, n, &hp);
}

static const OpsDef def_adam = {"adam_step", OPS_ADAM, "n step", "weight_decay", {OPS_NEEDS(adam_step)},
                                OPS_TOL_F32_ELEMENTWISE, run_adam};

/* ---- the cases ------------------------------------------------------------------------------------ */

enum { RELU = MOELM_ACT_RELU, GELU = MOELM_ACT_GELU, GELU_ACC = MOELM_ACT_GELU_ACCURATE, TANH = MOELM_ACT_TANH };
/* The benchmark model: a batch of 8 x 256 tokens, C 256, FFN 1024, 4 experts top-2. GEMM
 * cases take 64 of the tokens (the reference loops are slow; the shapes that matter for
 * kernels are the feature sizes), element-wise and row cases the whole batch or layer. */
enum { TOKENS = 2048, SEQ = 256, DIM = 256, FFN = 1024, VOCAB = 8000, ROWS = 64, ROWS2 = 2 * ROWS };

static const OpsCase dense_cases[] = {
    {&def_convert, {1}, 0, OPS_TO_ACT},
    {&def_convert, {1003}, 0, OPS_TO_ACT},
    {&def_convert, {1}, 0, 0},
    {&def_convert, {TOKENS * 4}, 0, 0}, /* router logits to fp32 */
    {&def_zero, {1}, 0, 0},
    {&def_zero, {1003}, 0, 0},
    {&def_copy, {1}, 0, 0},
    {&def_copy, {1003}, 0, 0},
    {&def_fill, {1}, 2.5f, 0},
    {&def_fill, {1003}, -0.75f, 0},
    {&def_add, {1}, 0, 0},
    {&def_add, {1003}, 0, 0},
    {&def_add, {1003}, 0, OPS_INPLACE},
    {&def_add, {TOKENS * DIM}, 0, OPS_INPLACE}, /* the residual */
    {&def_axpy, {1}, 0.3f, 0},
    {&def_axpy, {1003}, -1.7f, 0},
    {&def_scale, {1}, -1.5f, 0},
    {&def_scale, {100003}, 0.37f, 0},
    {&def_sum_squares, {1}, 0, 0},
    {&def_sum_squares, {100003}, 0, 0},

    {&def_gemm, {37, 29, 45}, 0.7f, 0},
    {&def_gemm, {37, 29, 45}, 0.7f, OPS_TRANS_A},
    {&def_gemm, {37, 29, 45}, 0.7f, OPS_TRANS_B},
    {&def_gemm, {37, 29, 45}, 0.7f, OPS_TRANS_A | OPS_TRANS_B},
    {&def_gemm, {37, 29, 45}, 1.0f, OPS_BETA0},
    {&def_gemm, {37, 29, 45}, 1.0f, OPS_BETA0 | OPS_TRANS_A | OPS_TRANS_B},
    {&def_gemm, {1, 70, 33}, 1.0f, OPS_BETA0 | OPS_TRANS_B},
    {&def_gemm, {130, 3, 17}, 0.5f, OPS_TRANS_A},
    {&def_gemm, {1, 1, 1}, 1.0f, OPS_BETA0},
    {&def_gemm, {ROWS, DIM, DIM}, 1.0f, OPS_BETA0 | OPS_TRANS_B},

    {&def_embedding_forward, {37, 45, 50, 40}, 1.3f, OPS_LEARNED},
    {&def_embedding_forward, {37, 45, 50, 40}, 1.3f, 0},
    {&def_embedding_forward, {1, 1, 1, 1}, 1.0f, OPS_LEARNED},
    {&def_embedding_forward, {TOKENS, DIM, VOCAB, SEQ + 2}, 16.0f, OPS_LEARNED},
    {&def_embedding_backward, {37, 45, 50, 40}, 1.3f, OPS_LEARNED},
    {&def_embedding_backward, {2000, 70, 50, 40}, 1.3f, 0}, /* many repeats */
    {&def_embedding_backward, {1, 1, 1, 1}, 1.0f, OPS_LEARNED},
    {&def_embedding_backward, {TOKENS, DIM, VOCAB, SEQ + 2}, 16.0f, OPS_LEARNED},

    {&def_layernorm_forward, {67, 45}, 0, 0},
    {&def_layernorm_forward, {67, 45}, 0, OPS_NO_SAVE | OPS_INPLACE},
    {&def_layernorm_forward, {1, 1}, 0, 0},
    {&def_layernorm_forward, {513, 100}, 0, 0},
    {&def_layernorm_forward, {TOKENS, DIM}, 0, 0},
    {&def_layernorm_backward, {67, 45}, 0, 0},
    {&def_layernorm_backward, {67, 45}, 0, OPS_PARTIAL},
    {&def_layernorm_backward, {67, 45}, 0, OPS_NO_DINP},
    {&def_layernorm_backward, {1, 7}, 0, 0}, /* C = 1 has a gradient of pure rounding noise */
    {&def_layernorm_backward, {513, 100}, 0, 0},
    {&def_layernorm_backward, {TOKENS, DIM}, 0, 0},

    {&def_linear_forward, {67, 45, 83}, 0, OPS_BIAS},
    {&def_linear_forward, {67, 45, 83}, 0, 0},
    {&def_linear_forward, {1, 1, 1}, 0, OPS_BIAS},
    {&def_linear_forward, {3, 200, 1003}, 0, OPS_BIAS},
    {&def_linear_forward, {ROWS, DIM, 3 * DIM}, 0, OPS_BIAS}, /* qkv */
    {&def_linear_forward, {ROWS, DIM, FFN}, 0, OPS_BIAS},     /* fc1 */
    {&def_linear_forward, {ROWS, FFN, DIM}, 0, OPS_BIAS},     /* fc2 */
    {&def_linear_forward, {16, DIM, VOCAB}, 0, 0},            /* output projection */
    {&def_linear_backward, {67, 45, 83}, 0, OPS_BIAS},
    {&def_linear_backward, {67, 45, 83}, 0, 0},
    {&def_linear_backward, {67, 45, 83}, 0, OPS_BIAS | OPS_PARTIAL},
    {&def_linear_backward, {67, 45, 83}, 0, OPS_BIAS | OPS_NO_DINP},
    {&def_linear_backward, {1, 1, 1}, 0, OPS_BIAS},
    {&def_linear_backward, {3, 200, 1003}, 0, OPS_BIAS},
    {&def_linear_backward, {ROWS, DIM, FFN}, 0, OPS_BIAS},
    {&def_linear_backward, {ROWS, FFN, DIM}, 0, OPS_BIAS},
    {&def_linear_backward, {16, DIM, VOCAB}, 0, 0},

    {&def_grouped_forward, {4, 74, 45, 83, 60}, 0, OPS_BIAS},
    {&def_grouped_forward, {3, 37, 16, 9, 37}, 0, 0},
    {&def_grouped_forward, {1, 1, 1, 1, 1}, 0, OPS_BIAS},
    {&def_grouped_forward, {4, 8, 8, 8, 0}, 0, OPS_BIAS}, /* nothing dispatched */
    {&def_grouped_forward, {4, ROWS2, DIM, FFN, ROWS2 - 37}, 0, OPS_BIAS},
    {&def_grouped_forward, {4, ROWS2, FFN, DIM, ROWS2}, 0, OPS_BIAS},
    {&def_grouped_backward, {4, 74, 45, 83, 60}, 0, OPS_BIAS},
    {&def_grouped_backward, {3, 37, 16, 9, 37}, 0, 0},
    {&def_grouped_backward, {4, 74, 45, 83, 60}, 0, OPS_BIAS | OPS_PARTIAL},
    {&def_grouped_backward, {4, 74, 45, 83, 60}, 0, OPS_BIAS | OPS_NO_DINP},
    {&def_grouped_backward, {1, 1, 1, 1, 1}, 0, OPS_BIAS},
    {&def_grouped_backward, {4, 8, 8, 8, 0}, 0, OPS_BIAS},
    {&def_grouped_backward, {4, ROWS2, DIM, FFN, ROWS2 - 37}, 0, OPS_BIAS},

    {&def_activation_forward, {1003, RELU}, 0, 0},
    {&def_activation_forward, {1003, GELU}, 0, 0},
    {&def_activation_forward, {1003, GELU_ACC}, 0, 0},
    {&def_activation_forward, {1003, TANH}, 0, 0},
    {&def_activation_forward, {1, TANH}, 0, 0},
    {&def_activation_forward, {1003, TANH}, 0, OPS_INPLACE},
    {&def_activation_forward, {SEQ * FFN, RELU}, 0, OPS_INPLACE},
    {&def_activation_forward, {SEQ * FFN, GELU}, 0, 0},
    {&def_activation_backward, {1003, RELU}, 0, 0},
    {&def_activation_backward, {1003, GELU}, 0, 0},
    {&def_activation_backward, {1003, GELU_ACC}, 0, 0},
    {&def_activation_backward, {1003, TANH}, 0, 0},
    {&def_activation_backward, {1, TANH}, 0, 0},
    {&def_activation_backward, {SEQ * FFN, RELU}, 0, 0},
    {&def_activation_backward, {SEQ * FFN, GELU}, 0, 0},

    {&def_dropout_forward, {1003}, 0.1f, 0},
    {&def_dropout_forward, {1003}, 0.0f, 0},
    {&def_dropout_forward, {1}, 0.1f, 0},
    {&def_dropout_forward, {1003}, 0.1f, OPS_INPLACE},
    {&def_dropout_forward, {100003}, 0.5f, 0},
    {&def_dropout_forward, {TOKENS * DIM}, 0.1f, OPS_INPLACE},
    {&def_dropout_backward, {1003}, 0.1f, 0},
    {&def_dropout_backward, {1003}, 0.0f, 0},
    {&def_dropout_backward, {1}, 0.5f, 0},
    {&def_dropout_backward, {TOKENS * DIM}, 0.1f, 0},

    {&def_gather, {300, 45, 20}, 0, 0},
    {&def_gather, {1, 1, 1}, 0, 0},
    {&def_gather, {2 * TOKENS, DIM, TOKENS}, 0, 0}, /* the MoE permutation */
    {&def_scatter, {300, 45, 20}, 0, 0},
    {&def_scatter, {300, 45, 20}, 0, OPS_NO_WEIGHT},
    {&def_scatter, {1, 1, 1}, 0, 0},
    {&def_scatter, {2 * TOKENS, DIM, TOKENS}, 0, 0},
    {&def_scatter_backward, {300, 45, 20}, 0, 0},
    {&def_scatter_backward, {300, 45, 20}, 0, OPS_NO_WEIGHT},
    {&def_scatter_backward, {300, 45, 20}, 0, OPS_PARTIAL},
    {&def_scatter_backward, {300, 45, 20}, 0, OPS_NO_DINP},
    {&def_scatter_backward, {1, 1, 1}, 0, 0},
    {&def_scatter_backward, {2 * TOKENS, DIM, TOKENS}, 0, 0},

    {&def_adam, {1003, 3}, 0.01f, 0},
    {&def_adam, {1, 1}, 0.0f, 0},
    {&def_adam, {100003, 10}, 0.1f, 0},
};

const OpsTable ops_dense_table = {dense_cases, G_N_ELEMENTS(dense_cases)};
