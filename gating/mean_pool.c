/* moelm — MeanPoolGatingNetwork forward and backward on the model's backend. */
#include "config.h"

#include <string.h>

#include "mean_pool.h"
#include "moelm/errors.h"

#define GATE_DROPOUT_LAYER 0xFFFEu

struct MoelmGate {
  MoelmModel *model;
  MoelmBackend *be;
  int C, K;
  size_t wte, fc1_w, fc1_b, fc2_w, fc2_b; /* arena offsets */
  /* the last forward (backend memory) */
  int B, n;
  int32_t *tok, *row;     /* (n) context tokens and their row */
  float *wrow;            /* (n) 1/len of the row */
  float *emb;             /* (n, C) */
  float *pooled;          /* (B, C) */
  float *h1, *a1;         /* (B, C) fc1 output, dropout(tanh(h1)) */
  float *lp;              /* (B, K) log π */
  MoelmStepIds ids;
  gboolean dropout;
};

static size_t offset_of(MoelmModel *m, const char *name, GError **error, gboolean *ok)
{
  const MoelmParam *p = moelm_model_find(m, name);
  if (p == NULL && *ok) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG, "the model has no %s (built without a gating network)",
                name);
    *ok = FALSE;
  }
  return p ? p->offset : 0;
}

MoelmGate *moelm_mean_pool_gate_new(MoelmModel *model, GError **error)
{
  gboolean ok = TRUE;
  MoelmGate *g = g_new0(MoelmGate, 1);
  g->model = model;
  g->be = moelm_model_backend(model);
  g->C = moelm_model_get_config(model)->embed_dim;
  g->K = moelm_model_get_config(model)->gate_experts;
  g->wte = offset_of(model, "decoder.embed_tokens.weight", error, &ok);
  g->fc1_w = offset_of(model, "gating_network.fc1.weight", error, &ok);
  g->fc1_b = offset_of(model, "gating_network.fc1.bias", error, &ok);
  g->fc2_w = offset_of(model, "gating_network.fc2.weight", error, &ok);
  g->fc2_b = offset_of(model, "gating_network.fc2.bias", error, &ok);
  if (!ok) {
    g_free(g);
    return NULL;
  }
  return g;
}

static void free_acts(MoelmGate *g)
{
  void *bufs[] = {g->tok, g->row, g->wrow, g->emb, g->pooled, g->h1, g->a1, g->lp};
  for (gsize i = 0; i < G_N_ELEMENTS(bufs); i++)
    g->be->ops->free(g->be, bufs[i]);
  g->tok = g->row = NULL;
  g->wrow = g->emb = g->pooled = g->h1 = g->a1 = g->lp = NULL;
  g->B = g->n = 0;
}

void moelm_mean_pool_gate_free(MoelmGate *g)
{
  if (g == NULL)
    return;
  free_acts(g);
  g_free(g);
}

int moelm_mean_pool_gate_experts(const MoelmGate *g) { return g->K; }

gboolean moelm_mean_pool_gate_forward(MoelmGate *g, const int32_t *ctx, const int *lens, int B, int G,
                                      const MoelmStepIds *ids, float *log_prior, GError **error)
{
  MoelmBackend *be = g->be;
  const struct moelm_backend_ops *o = be->ops;
  const int C = g->C, K = g->K;
  free_acts(g);
  int n = 0;
  for (int b = 0; b < B; b++)
    n += lens[b];
  int32_t *tok = g_new(int32_t, n + 1), *row = g_new(int32_t, n + 1);
  float *wrow = g_new(float, n + 1);
  for (int b = 0, k = 0; b < B; b++)
    for (int t = 0; t < lens[b]; t++, k++) {
      tok[k] = ctx[(size_t)b * G + t];
      row[k] = b;
      wrow[k] = 1.0f / (float)lens[b];
    }
  gboolean ok = TRUE;
#define ALLOC(ptr, count)                                                          \
  if (ok)                                                                          \
    ok = ((ptr) = o->alloc(be, ((count) + 1) * sizeof(*(ptr)), error)) != NULL
  ALLOC(g->tok, (size_t)n);
  ALLOC(g->row, (size_t)n);
  ALLOC(g->wrow, (size_t)n);
  ALLOC(g->emb, (size_t)n * C);
  ALLOC(g->pooled, (size_t)B * C);
  ALLOC(g->h1, (size_t)B * C);
  ALLOC(g->a1, (size_t)B * C);
  ALLOC(g->lp, (size_t)B * K);
#undef ALLOC
  if (ok) {
    g->B = B;
    g->n = n;
    g->dropout = ids != NULL;
    if (ids)
      g->ids = *ids;
    float *W = moelm_model_params(g->model);
    o->to_device(be, g->tok, tok, (size_t)n * sizeof(int32_t));
    o->to_device(be, g->row, row, (size_t)n * sizeof(int32_t));
    o->to_device(be, g->wrow, wrow, (size_t)n * sizeof(float));
    o->zero(be, g->pooled, (size_t)B * C * sizeof(float));
    if (n > 0) {
      o->embedding_forward(be, g->emb, g->tok, NULL, W + g->wte, NULL, n, C, 1.0f);
      o->scatter_add_rows(be, g->pooled, g->emb, g->row, g->wrow, n, C);
    }
    o->linear_forward(be, g->h1, g->pooled, W + g->fc1_w, W + g->fc1_b, B, C, C);
    o->activation_forward(be, MOELM_ACT_TANH, g->a1, g->h1, (size_t)B * C);
    const float p = ids ? (float)moelm_model_get_config(g->model)->gate_dropout : 0.0f;
    MoelmDropoutIds d = {ids ? ids->seed : 0, ids ? ids->update : 0, GATE_DROPOUT_LAYER, 0};
    o->dropout_forward(be, g->a1, g->a1, (size_t)B * C, p, &d);
    o->linear_forward(be, g->lp, g->a1, W + g->fc2_w, W + g->fc2_b, B, C, K);
    o->log_softmax_forward(be, g->lp, g->lp, B, K);
    o->to_host(be, log_prior, g->lp, (size_t)B * K * sizeof(float));
  } else {
    free_acts(g);
  }
  g_free(tok);
  g_free(row);
  g_free(wrow);
  return ok;
}

gboolean moelm_mean_pool_gate_backward(MoelmGate *g, const float *dlog_prior, GError **error)
{
  MoelmBackend *be = g->be;
  const struct moelm_backend_ops *o = be->ops;
  const int C = g->C, K = g->K, B = g->B, n = g->n;
  if (g->lp == NULL) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG, "gating network backward without a forward");
    return FALSE;
  }
  float *W = moelm_model_params(g->model), *dW = moelm_model_grads(g->model);
  float *dlp = NULL, *dz = NULL, *da1 = NULL, *dh1 = NULL, *dpool = NULL, *demb = NULL;
  gboolean ok = (dlp = o->alloc(be, (size_t)B * K * sizeof(float), error)) &&
                (dz = o->alloc(be, (size_t)B * K * sizeof(float), error)) &&
                (da1 = o->alloc(be, (size_t)B * C * sizeof(float), error)) &&
                (dh1 = o->alloc(be, (size_t)B * C * sizeof(float), error)) &&
                (dpool = o->alloc(be, (size_t)B * C * sizeof(float), error)) &&
                (demb = o->alloc(be, ((size_t)n + 1) * C * sizeof(float), error));
  if (ok) {
    const size_t BC = (size_t)B * C;
    o->to_device(be, dlp, dlog_prior, (size_t)B * K * sizeof(float));
    o->zero(be, dz, (size_t)B * K * sizeof(float));
    o->log_softmax_backward(be, dz, g->lp, dlp, B, K);
    o->zero(be, da1, BC * sizeof(float));
    o->linear_backward(be, da1, dW + g->fc2_w, dW + g->fc2_b, dz, g->a1, W + g->fc2_w, B, C, K);
    const float p = g->dropout ? (float)moelm_model_get_config(g->model)->gate_dropout : 0.0f;
    MoelmDropoutIds d = {g->ids.seed, g->ids.update, GATE_DROPOUT_LAYER, 0};
    o->zero(be, dh1, BC * sizeof(float));
    o->dropout_backward(be, dh1, da1, BC, p, &d); /* dh1 temporarily holds d tanh-output */
    o->zero(be, da1, BC * sizeof(float));
    o->activation_backward(be, MOELM_ACT_TANH, da1, g->h1, dh1, BC); /* da1 := d h1 */
    o->zero(be, dpool, BC * sizeof(float));
    o->linear_backward(be, dpool, dW + g->fc1_w, dW + g->fc1_b, da1, g->pooled, W + g->fc1_w, B, C, C);
    if (n > 0) {
      o->zero(be, demb, (size_t)n * C * sizeof(float));
      o->scatter_add_rows_backward(be, demb, NULL, dpool, g->emb, g->row, g->wrow, n, C);
      o->embedding_backward(be, dW + g->wte, NULL, demb, g->tok, NULL, n, C, 1.0f);
    }
  }
  void *bufs[] = {dlp, dz, da1, dh1, dpool, demb};
  for (gsize i = 0; i < G_N_ELEMENTS(bufs); i++)
    o->free(be, bufs[i]);
  return ok;
}
