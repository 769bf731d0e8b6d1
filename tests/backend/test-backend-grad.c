/* Every backward op against central differences of its forward (loss = sum(out * R) for a
 * random R, accumulated in double), on the reference backend and on the fast one. Gradient
 * buffers start with random content, so the checks also prove that backward ops add (+=). */
#include "config.h"

#include <math.h>
#include <string.h>

#include "moelm-test.h"
#include "backend-test-util.h"

#define RTOL 2e-2
#define ATOL 2e-3

/* Backends to check: the reference and the fast path with 2 threads. */
static MoelmBackend *backend_at(int which)
{
  return which == 0 ? bt_reference() : bt_fast(2);
}

/* analytic = after - before (what the backward added). */
static float *added(const float *after, const float *before, size_t n)
{
  float *d = g_new(float, n + 1);
  for (size_t i = 0; i < n; i++)
    d[i] = after[i] - before[i];
  return d;
}

/* ---- embedding ------------------------------------------------------------------------ */

typedef struct {
  MoelmBackend *be;
  int32_t tokens[9], positions[9];
  float *wte, *wpe, *out, *r;
  int N, C;
  float scale;
} EmbCtx;

static double emb_loss(void *p)
{
  EmbCtx *c = p;
  c->be->ops->embedding_forward(c->be, A(c->out), c->tokens, c->positions, c->wte, c->wpe, c->N, c->C, c->scale);
  return bt_dot(c->out, c->r, (size_t)c->N * c->C);
}

static void test_embedding_grad(void)
{
  for (int which = 0; which < 2; which++) {
    MoelmRng rng;
    moelm_rng_init(&rng, 11, 0, 0);
    EmbCtx c = {.be = backend_at(which), .N = 9, .C = 5, .scale = 1.7f};
    int V = 7, P = 12;
    for (int n = 0; n < c.N; n++) {
      c.tokens[n] = (int32_t)moelm_rng_next_below(&rng, 4); /* repeats */
      c.positions[n] = 2 + n % 5;
    }
    c.wte = bt_uniform(&rng, (size_t)V * c.C, -1, 1);
    c.wpe = bt_uniform(&rng, (size_t)P * c.C, -1, 1);
    c.out = bt_zeros((size_t)c.N * c.C);
    c.r = bt_uniform(&rng, (size_t)c.N * c.C, -1, 1);
    float *dwte0 = bt_uniform(&rng, (size_t)V * c.C, -1, 1), *dwpe0 = bt_uniform(&rng, (size_t)P * c.C, -1, 1);
    float *dwte = bt_copy(dwte0, (size_t)V * c.C), *dwpe = bt_copy(dwpe0, (size_t)P * c.C);
    c.be->ops->embedding_backward(c.be, dwte, dwpe, A(c.r), c.tokens, c.positions, c.N, c.C, c.scale);
    float *gw = added(dwte, dwte0, (size_t)V * c.C), *gp = added(dwpe, dwpe0, (size_t)P * c.C);
    bt_check_grad("embedding dwte", emb_loss, &c, c.wte, (size_t)V * c.C, gw, 1, 1e-2, RTOL, ATOL);
    bt_check_grad("embedding dwpe", emb_loss, &c, c.wpe, (size_t)P * c.C, gp, 1, 1e-2, RTOL, ATOL);
    /* without learned positions: dwpe NULL and wpe NULL */
    float *dwte_only = bt_copy(dwte0, (size_t)V * c.C);
    c.be->ops->embedding_backward(c.be, dwte_only, NULL, A(c.r), c.tokens, c.positions, c.N, c.C, c.scale);
    bt_assert_close("embedding dwte without positions", dwte_only, dwte, (size_t)V * c.C, 1e-6, 1e-6);
    g_free(c.wte), g_free(c.wpe), g_free(c.out), g_free(c.r), g_free(dwte0), g_free(dwpe0), g_free(dwte);
    g_free(dwpe), g_free(gw), g_free(gp), g_free(dwte_only);
    moelm_backend_free(c.be);
  }
}

/* ---- layer norm ----------------------------------------------------------------------- */

typedef struct {
  MoelmBackend *be;
  float *inp, *weight, *bias, *out, *mean, *rstd, *r;
  int N, C;
} LnCtx;

static double ln_loss(void *p)
{
  LnCtx *c = p;
  c->be->ops->layernorm_forward(c->be, A(c->out), c->mean, c->rstd, A(c->inp), c->weight, c->bias, c->N, c->C, 1e-5f);
  return bt_dot(c->out, c->r, (size_t)c->N * c->C);
}

static void test_layernorm_grad(void)
{
  for (int which = 0; which < 2; which++) {
    MoelmRng rng;
    moelm_rng_init(&rng, 12, 0, 0);
    LnCtx c = {.be = backend_at(which), .N = 4, .C = 13};
    size_t nc = (size_t)c.N * c.C;
    c.inp = bt_uniform(&rng, nc, -2, 2);
    c.weight = bt_uniform(&rng, c.C, 0.5f, 1.5f);
    c.bias = bt_uniform(&rng, c.C, -0.5f, 0.5f);
    c.out = bt_zeros(nc), c.mean = bt_zeros(c.N), c.rstd = bt_zeros(c.N);
    c.r = bt_uniform(&rng, nc, -1, 1);
    ln_loss(&c);
    float *dinp0 = bt_uniform(&rng, nc, -1, 1), *dw0 = bt_uniform(&rng, c.C, -1, 1);
    float *db0 = bt_uniform(&rng, c.C, -1, 1);
    float *dinp = bt_copy(dinp0, nc), *dw = bt_copy(dw0, c.C), *db = bt_copy(db0, c.C);
    c.be->ops->layernorm_backward(c.be, A(dinp), dw, db, A(c.r), A(c.inp), c.weight, c.mean, c.rstd, c.N, c.C);
    float *gi = added(dinp, dinp0, nc), *gw = added(dw, dw0, c.C), *gb = added(db, db0, c.C);
    bt_check_grad("layernorm dinp", ln_loss, &c, c.inp, nc, gi, 1, 1e-2, RTOL, ATOL);
    bt_check_grad("layernorm dweight", ln_loss, &c, c.weight, c.C, gw, 1, 1e-2, RTOL, ATOL);
    bt_check_grad("layernorm dbias", ln_loss, &c, c.bias, c.C, gb, 1, 1e-2, RTOL, ATOL);
    g_free(c.inp), g_free(c.weight), g_free(c.bias), g_free(c.out), g_free(c.mean), g_free(c.rstd);
    g_free(c.r), g_free(dinp0), g_free(dw0), g_free(db0), g_free(dinp), g_free(dw), g_free(db);
    g_free(gi), g_free(gw), g_free(gb);
    moelm_backend_free(c.be);
  }
}

/* ---- linear --------------------------------------------------------------------------- */

typedef struct {
  MoelmBackend *be;
  float *inp, *weight, *bias, *out, *r;
  int N, IC, OC;
} LinCtx;

static double lin_loss(void *p)
{
  LinCtx *c = p;
  c->be->ops->linear_forward(c->be, A(c->out), A(c->inp), c->weight, c->bias, c->N, c->IC, c->OC);
  return bt_dot(c->out, c->r, (size_t)c->N * c->OC);
}

static void test_linear_grad(void)
{
  for (int which = 0; which < 2; which++)
    for (int with_bias = 0; with_bias < 2; with_bias++) {
      MoelmRng rng;
      moelm_rng_init(&rng, 13, 0, 0);
      LinCtx c = {.be = backend_at(which), .N = 5, .IC = 7, .OC = 6};
      size_t ni = (size_t)c.N * c.IC, nw = (size_t)c.OC * c.IC, no = (size_t)c.N * c.OC;
      c.inp = bt_uniform(&rng, ni, -1, 1);
      c.weight = bt_uniform(&rng, nw, -1, 1);
      c.bias = with_bias ? bt_uniform(&rng, c.OC, -1, 1) : NULL;
      c.out = bt_zeros(no);
      c.r = bt_uniform(&rng, no, -1, 1);
      float *dinp0 = bt_uniform(&rng, ni, -1, 1), *dw0 = bt_uniform(&rng, nw, -1, 1);
      float *db0 = bt_uniform(&rng, c.OC, -1, 1);
      float *dinp = bt_copy(dinp0, ni), *dw = bt_copy(dw0, nw), *db = bt_copy(db0, c.OC);
      c.be->ops->linear_backward(c.be, A(dinp), dw, with_bias ? db : NULL, A(c.r), A(c.inp), c.weight, c.N, c.IC, c.OC);
      float *gi = added(dinp, dinp0, ni), *gw = added(dw, dw0, nw), *gb = added(db, db0, c.OC);
      bt_check_grad("linear dinp", lin_loss, &c, c.inp, ni, gi, 1, 1e-2, RTOL, ATOL);
      bt_check_grad("linear dweight", lin_loss, &c, c.weight, nw, gw, 1, 1e-2, RTOL, ATOL);
      if (with_bias)
        bt_check_grad("linear dbias", lin_loss, &c, c.bias, c.OC, gb, 1, 1e-2, RTOL, ATOL);
      else
        bt_assert_close("linear: NULL dbias untouched", db, db0, c.OC, 0, 0);
      /* dinp NULL skips the input gradient but still gives dweight */
      float *dw_only = bt_copy(dw0, nw);
      c.be->ops->linear_backward(c.be, NULL, dw_only, NULL, A(c.r), A(c.inp), c.weight, c.N, c.IC, c.OC);
      bt_assert_close("linear dweight without dinp", dw_only, dw, nw, 1e-5, 1e-6);
      g_free(c.inp), g_free(c.weight), g_free(c.bias), g_free(c.out), g_free(c.r), g_free(dinp0), g_free(dw0);
      g_free(db0), g_free(dinp), g_free(dw), g_free(db), g_free(gi), g_free(gw), g_free(gb), g_free(dw_only);
      moelm_backend_free(c.be);
    }
}

/* ---- attention ------------------------------------------------------------------------ */

typedef struct {
  MoelmBackend *be;
  float *qkv, *out, *saved, *r;
  const uint8_t *kpm;
  int B, T, C, NH;
  float p;
  MoelmDropoutIds ids;
} AttnCtx;

static double attn_loss(void *p)
{
  AttnCtx *c = p;
  c->be->ops->attention_forward(c->be, A(c->out), c->saved, A(c->qkv), c->kpm, c->B, c->T, c->C, c->NH, c->p, &c->ids);
  return bt_dot(c->out, c->r, (size_t)c->B * c->T * c->C);
}

static void check_attention_grad(int which, gboolean with_mask, float p)
{
  MoelmRng rng;
  moelm_rng_init(&rng, 14, 0, 0);
  /* b = 1 pads key 0 (so its query 0 sees nothing) and key 3 */
  static const uint8_t kpm[2 * 6] = {0, 0, 0, 0, 0, 0, 1, 0, 0, 1, 0, 0};
  AttnCtx c = {.be = backend_at(which), .B = 2, .T = 6, .C = 8, .NH = 2, .p = p,
               .ids = {.seed = 5, .update = 3, .layer = 1, .site = 2}};
  c.kpm = with_mask ? kpm : NULL;
  size_t nqkv = (size_t)c.B * c.T * 3 * c.C, no = (size_t)c.B * c.T * c.C;
  c.qkv = bt_uniform(&rng, nqkv, -1.5f, 1.5f);
  c.out = bt_zeros(no);
  c.saved = bt_zeros(c.be->ops->attention_saved_bytes(c.be, c.B, c.T, c.C, c.NH) / sizeof(float));
  c.r = bt_uniform(&rng, no, -1, 1);
  attn_loss(&c);
  float *d0 = bt_uniform(&rng, nqkv, -1, 1), *d = bt_copy(d0, nqkv);
  c.be->ops->attention_backward(c.be, A(d), A(c.r), A(c.qkv), c.saved, c.kpm, c.B, c.T, c.C, c.NH, c.p, &c.ids);
  float *g = added(d, d0, nqkv);
  bt_check_grad("attention dqkv", attn_loss, &c, c.qkv, nqkv, g, 1, 1e-2, RTOL, ATOL);
  if (with_mask) { /* the fully masked query row (b=1, t=0) outputs zeros */
    for (int i = 0; i < c.C; i++)
      CU_ASSERT_EQUAL(c.out[(size_t)1 * c.T * c.C + i], 0.0f);
  }
  g_free(c.qkv), g_free(c.out), g_free(c.saved), g_free(c.r), g_free(d0), g_free(d), g_free(g);
  moelm_backend_free(c.be);
}

static void test_attention_grad(void)
{
  for (int which = 0; which < 2; which++) {
    check_attention_grad(which, FALSE, 0.0f);
    check_attention_grad(which, TRUE, 0.0f);
    check_attention_grad(which, TRUE, 0.3f);
  }
}

/* ---- activations and dropout ---------------------------------------------------------- */

typedef struct {
  MoelmBackend *be;
  MoelmActivation act;
  float *inp, *out, *r;
  size_t n;
  float p;
  MoelmDropoutIds ids;
} ElemCtx;

static double act_loss(void *p)
{
  ElemCtx *c = p;
  c->be->ops->activation_forward(c->be, c->act, A(c->out), A(c->inp), c->n);
  return bt_dot(c->out, c->r, c->n);
}

static void test_activation_grad(void)
{
  static const MoelmActivation acts[] = {MOELM_ACT_RELU, MOELM_ACT_GELU, MOELM_ACT_GELU_ACCURATE, MOELM_ACT_TANH};
  for (int which = 0; which < 2; which++)
    for (size_t a = 0; a < G_N_ELEMENTS(acts); a++) {
      MoelmRng rng;
      moelm_rng_init(&rng, 15, 0, 0);
      ElemCtx c = {.be = backend_at(which), .act = acts[a], .n = 41};
      c.inp = bt_uniform(&rng, c.n, -3, 3);
      for (size_t i = 0; i < c.n; i++) /* keep away from relu's kink */
        if (fabsf(c.inp[i]) < 0.05f)
          c.inp[i] = 0.5f;
      c.out = bt_zeros(c.n);
      c.r = bt_uniform(&rng, c.n, -1, 1);
      float *d0 = bt_uniform(&rng, c.n, -1, 1), *d = bt_copy(d0, c.n);
      c.be->ops->activation_backward(c.be, c.act, A(d), A(c.inp), A(c.r), c.n);
      float *g = added(d, d0, c.n);
      bt_check_grad("activation dinp", act_loss, &c, c.inp, c.n, g, 1, 1e-3, RTOL, ATOL);
      g_free(c.inp), g_free(c.out), g_free(c.r), g_free(d0), g_free(d), g_free(g);
      moelm_backend_free(c.be);
    }
}

static double dropout_loss(void *p)
{
  ElemCtx *c = p;
  c->be->ops->dropout_forward(c->be, A(c->out), A(c->inp), c->n, c->p, &c->ids);
  return bt_dot(c->out, c->r, c->n);
}

static void test_dropout_grad(void)
{
  for (int which = 0; which < 2; which++) {
    MoelmRng rng;
    moelm_rng_init(&rng, 16, 0, 0);
    ElemCtx c = {.be = backend_at(which), .n = 53, .p = 0.3f, .ids = {.seed = 9, .update = 1, .layer = 2, .site = 0}};
    c.inp = bt_uniform(&rng, c.n, -1, 1);
    c.out = bt_zeros(c.n);
    c.r = bt_uniform(&rng, c.n, -1, 1);
    float *d0 = bt_uniform(&rng, c.n, -1, 1), *d = bt_copy(d0, c.n);
    c.be->ops->dropout_backward(c.be, A(d), A(c.r), c.n, c.p, &c.ids);
    float *g = added(d, d0, c.n);
    bt_check_grad("dropout dinp", dropout_loss, &c, c.inp, c.n, g, 1, 1e-2, RTOL, ATOL);
    int dropped = 0;
    for (size_t i = 0; i < c.n; i++)
      dropped += g[i] == 0.0f;
    CU_ASSERT(dropped > 0 && dropped < (int)c.n); /* p = 0.3 really dropped some, not all */
    g_free(c.inp), g_free(c.out), g_free(c.r), g_free(d0), g_free(d), g_free(g);
    moelm_backend_free(c.be);
  }
}

/* ---- softmax family ------------------------------------------------------------------- */

typedef struct {
  MoelmBackend *be;
  float *logits, *scratch, *losses, *dloss, *out, *r;
  int32_t targets[5];
  int N, V;
} CeCtx;

static double ce_loss(void *p)
{
  CeCtx *c = p;
  c->be->ops->cross_entropy(c->be, c->losses, A(c->logits), c->targets, NULL, c->N, c->V, 1);
  return bt_dot(c->losses, c->dloss, c->N);
}

static void test_cross_entropy_grad(void)
{
  for (int which = 0; which < 2; which++) {
    MoelmRng rng;
    moelm_rng_init(&rng, 17, 0, 0);
    CeCtx c = {.be = backend_at(which), .N = 5, .V = 11, .targets = {4, 1, 0, 10, 7}}; /* row 1 is ignored */
    size_t nl = (size_t)c.N * c.V;
    c.logits = bt_uniform(&rng, nl, -3, 3);
    c.losses = bt_zeros(c.N);
    c.dloss = bt_uniform(&rng, c.N, 0.2f, 2.0f);
    float *grad = bt_copy(c.logits, nl);
    float *losses = bt_zeros(c.N);
    c.be->ops->cross_entropy(c.be, losses, A(grad), c.targets, c.dloss, c.N, c.V, 1);
    bt_check_grad("cross_entropy dlogits", ce_loss, &c, c.logits, nl, grad, 1, 1e-2, RTOL, ATOL);
    ce_loss(&c);
    bt_assert_close("cross_entropy losses with and without gradient", losses, c.losses, c.N, 1e-6, 1e-7);
    CU_ASSERT_EQUAL(losses[1], 0.0f);
    for (int v = 0; v < c.V; v++)
      CU_ASSERT_EQUAL(grad[(size_t)1 * c.V + v], 0.0f);
    g_free(c.logits), g_free(c.losses), g_free(c.dloss), g_free(grad), g_free(losses);
    moelm_backend_free(c.be);
  }
}

static double log_softmax_loss(void *p)
{
  CeCtx *c = p;
  c->be->ops->log_softmax_forward(c->be, c->out, A(c->logits), c->N, c->V);
  return bt_dot(c->out, c->r, (size_t)c->N * c->V);
}

static void test_log_softmax_grad(void)
{
  for (int which = 0; which < 2; which++) {
    MoelmRng rng;
    moelm_rng_init(&rng, 18, 0, 0);
    CeCtx c = {.be = backend_at(which), .N = 3, .V = 9};
    size_t nl = (size_t)c.N * c.V;
    c.logits = bt_uniform(&rng, nl, -3, 3);
    c.out = bt_zeros(nl);
    c.r = bt_uniform(&rng, nl, -1, 1);
    log_softmax_loss(&c);
    float *d0 = bt_uniform(&rng, nl, -1, 1), *d = bt_copy(d0, nl);
    c.be->ops->log_softmax_backward(c.be, A(d), c.out, c.r, c.N, c.V);
    float *g = added(d, d0, nl);
    bt_check_grad("log_softmax dinp", log_softmax_loss, &c, c.logits, nl, g, 1, 1e-2, RTOL, ATOL);
    g_free(c.logits), g_free(c.out), g_free(c.r), g_free(d0), g_free(d), g_free(g);
    moelm_backend_free(c.be);
  }
}

/* ---- rows ----------------------------------------------------------------------------- */

typedef struct {
  MoelmBackend *be;
  float *inp, *weight, *base, *out, *r;
  int32_t idx[6];
  int n, rows, C;
  gboolean gather;
} RowsCtx;

static double rows_loss(void *p)
{
  RowsCtx *c = p;
  if (c->gather) {
    c->be->ops->gather_rows(c->be, A(c->out), A(c->inp), c->idx, c->n, c->C);
    return bt_dot(c->out, c->r, (size_t)c->n * c->C);
  }
  memcpy(c->out, c->base, (size_t)c->rows * c->C * sizeof(float));
  c->be->ops->scatter_add_rows(c->be, A(c->out), A(c->inp), c->idx, c->weight, c->n, c->C);
  return bt_dot(c->out, c->r, (size_t)c->rows * c->C);
}

static void test_rows_grad(void)
{
  for (int which = 0; which < 2; which++) {
    MoelmRng rng;
    moelm_rng_init(&rng, 19, 0, 0);
    RowsCtx c = {.be = backend_at(which), .n = 6, .rows = 4, .C = 5, .idx = {2, 0, 2, 3, 1, 2}};
    size_t ni = (size_t)c.n * c.C, nr = (size_t)c.rows * c.C;
    c.inp = bt_uniform(&rng, ni, -1, 1);
    c.weight = bt_uniform(&rng, c.n, -1, 1);
    c.base = bt_uniform(&rng, nr, -1, 1);
    c.out = bt_zeros(ni > nr ? ni : nr);
    c.r = bt_uniform(&rng, ni > nr ? ni : nr, -1, 1);
    /* scatter_add_rows: d/d inp and d/d weight */
    float *di0 = bt_uniform(&rng, ni, -1, 1), *dw0 = bt_uniform(&rng, c.n, -1, 1);
    float *di = bt_copy(di0, ni), *dw = bt_copy(dw0, c.n);
    c.be->ops->scatter_add_rows_backward(c.be, A(di), dw, A(c.r), A(c.inp), c.idx, c.weight, c.n, c.C);
    float *gi = added(di, di0, ni), *gw = added(dw, dw0, c.n);
    bt_check_grad("scatter_add_rows dinp", rows_loss, &c, c.inp, ni, gi, 1, 1e-2, RTOL, ATOL);
    bt_check_grad("scatter_add_rows dweight", rows_loss, &c, c.weight, c.n, gw, 1, 1e-2, RTOL, ATOL);
    /* gather_rows (inp has `rows` rows here): its backward is an unweighted scatter-add */
    c.gather = TRUE;
    float *src = bt_uniform(&rng, nr, -1, 1);
    float *save_inp = c.inp;
    c.inp = src;
    float *dsrc0 = bt_uniform(&rng, nr, -1, 1), *dsrc = bt_copy(dsrc0, nr);
    c.be->ops->scatter_add_rows(c.be, A(dsrc), A(c.r), c.idx, NULL, c.n, c.C);
    float *gs = added(dsrc, dsrc0, nr);
    bt_check_grad("gather_rows dinp", rows_loss, &c, c.inp, nr, gs, 1, 1e-2, RTOL, ATOL);
    c.inp = save_inp;
    g_free(c.inp), g_free(c.weight), g_free(c.base), g_free(c.out), g_free(c.r), g_free(di0), g_free(dw0);
    g_free(di), g_free(dw), g_free(gi), g_free(gw), g_free(src), g_free(dsrc0), g_free(dsrc), g_free(gs);
    moelm_backend_free(c.be);
  }
}

MOELM_TEST_SUITE(backend_grad)
{
  CU_add_test(suite, "embedding backward vs central differences", test_embedding_grad);
  CU_add_test(suite, "layernorm backward vs central differences", test_layernorm_grad);
  CU_add_test(suite, "linear backward vs central differences", test_linear_grad);
  CU_add_test(suite, "attention backward (masks, dropout) vs central differences", test_attention_grad);
  CU_add_test(suite, "activation backward vs central differences", test_activation_grad);
  CU_add_test(suite, "dropout backward vs central differences", test_dropout_grad);
  CU_add_test(suite, "cross-entropy gradient vs central differences", test_cross_entropy_grad);
  CU_add_test(suite, "log_softmax backward vs central differences", test_log_softmax_grad);
  CU_add_test(suite, "gather/scatter rows backward vs central differences", test_rows_grad);
}
