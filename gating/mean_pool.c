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
  /* the last forward (backend memory; grow-only, kept between calls) */
  int B, n;
  int cap_B, cap_n;       /* rows and context tokens the buffers below hold */
  int32_t *tok, *row;     /* (n) context tokens and their row */
  float *wrow;            /* (n) 1/len of the row */
  MoelmAct *emb;          /* (n, C) */
  MoelmAct *pooled;       /* (B, C) */
  MoelmAct *h1, *a1;      /* (B, C) fc1 output, dropout(tanh(h1)) */
  MoelmAct *z;            /* (B, K) fc2 output */
  float *lp;              /* (B, K) log π, fp32 */
  /* backward scratch */
  float *dlp;             /* (B, K) */
  MoelmAct *dz, *da1, *dh1, *dpool; /* (B, K), (B, C) x3 */
  MoelmAct *demb;         /* (n, C) */
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

static void free_buffers(MoelmGate *g)
{
  void *bufs[] = {&g->tok, &g->row, &g->wrow, &g->emb, &g->pooled, &g->h1, &g->a1, &g->z,
                  &g->lp,  &g->dlp, &g->dz,   &g->da1, &g->dh1,    &g->dpool, &g->demb};
  for (gsize i = 0; i < G_N_ELEMENTS(bufs); i++) {
    void **p = bufs[i];
    g->be->ops->free(g->be, *p);
    *p = NULL;
  }
  g->B = g->n = g->cap_B = g->cap_n = 0;
}

static void alloc_buffer(MoelmGate *g, void *ptr, size_t count, size_t size, gboolean *ok, GError **error)
{
  void **p = ptr;
  if (*ok)
    *ok = (*p = g->be->ops->alloc(g->be, (count + 1) * size, error)) != NULL;
}

/* Make the buffers hold B rows and n context tokens (grow only: a training run settles on
 * its largest batch after a few steps and allocates nothing more). */
static gboolean ensure_buffers(MoelmGate *g, int B, int n, GError **error)
{
  if (B <= g->cap_B && n <= g->cap_n)
    return TRUE;
  const int cap_B = MAX(B, g->cap_B), cap_n = MAX(n, g->cap_n);
  free_buffers(g);
  const size_t C = g->C, K = g->K, A = g->be->act_size, b = (size_t)cap_B, t = (size_t)cap_n;
  gboolean ok = TRUE;
  alloc_buffer(g, &g->tok, t, sizeof(int32_t), &ok, error);
  alloc_buffer(g, &g->row, t, sizeof(int32_t), &ok, error);
  alloc_buffer(g, &g->wrow, t, sizeof(float), &ok, error);
  alloc_buffer(g, &g->emb, t * C, A, &ok, error);
  alloc_buffer(g, &g->demb, t * C, A, &ok, error);
  alloc_buffer(g, &g->pooled, b * C, A, &ok, error);
  alloc_buffer(g, &g->h1, b * C, A, &ok, error);
  alloc_buffer(g, &g->a1, b * C, A, &ok, error);
  alloc_buffer(g, &g->z, b * K, A, &ok, error);
  alloc_buffer(g, &g->lp, b * K, sizeof(float), &ok, error);
  alloc_buffer(g, &g->dlp, b * K, sizeof(float), &ok, error);
  alloc_buffer(g, &g->dz, b * K, A, &ok, error);
  alloc_buffer(g, &g->da1, b * C, A, &ok, error);
  alloc_buffer(g, &g->dh1, b * C, A, &ok, error);
  alloc_buffer(g, &g->dpool, b * C, A, &ok, error);
  if (!ok) {
    free_buffers(g);
    return FALSE;
  }
  g->cap_B = cap_B;
  g->cap_n = cap_n;
  return TRUE;
}

void moelm_mean_pool_gate_free(MoelmGate *g)
{
  if (g == NULL)
    return;
  free_buffers(g);
  g_free(g);
}

int moelm_mean_pool_gate_experts(const MoelmGate *g) { return g->K; }

gboolean moelm_mean_pool_gate_forward(MoelmGate *g, const int32_t *ctx, const int *lens, int B, int G,
                                      const MoelmStepIds *ids, float *log_prior, GError **error)
{
  MoelmBackend *be = g->be;
  const struct moelm_backend_ops *o = be->ops;
  const int C = g->C, K = g->K;
  int n = 0;
  for (int b = 0; b < B; b++)
    n += lens[b];
  g->B = g->n = 0;
  if (!ensure_buffers(g, B, n, error))
    return FALSE;
  int32_t *tok = g_new(int32_t, n + 1), *row = g_new(int32_t, n + 1);
  float *wrow = g_new(float, n + 1);
  for (int b = 0, k = 0; b < B; b++)
    for (int t = 0; t < lens[b]; t++, k++) {
      tok[k] = ctx[(size_t)b * G + t];
      row[k] = b;
      wrow[k] = 1.0f / (float)lens[b];
    }
  g->B = B;
  g->n = n;
  g->dropout = ids != NULL;
  if (ids)
    g->ids = *ids;
  float *W = moelm_model_params(g->model);
  o->to_device(be, g->tok, tok, (size_t)n * sizeof(int32_t));
  o->to_device(be, g->row, row, (size_t)n * sizeof(int32_t));
  o->to_device(be, g->wrow, wrow, (size_t)n * sizeof(float));
  o->zero(be, g->pooled, moelm_act_bytes(be, (size_t)B * C));
  if (n > 0) {
    o->embedding_forward(be, g->emb, g->tok, NULL, W + g->wte, NULL, n, C, 1.0f);
    o->scatter_add_rows(be, g->pooled, g->emb, g->row, g->wrow, n, C);
  }
  o->linear_forward(be, g->h1, g->pooled, W + g->fc1_w, W + g->fc1_b, B, C, C);
  o->activation_forward(be, MOELM_ACT_TANH, g->a1, g->h1, (size_t)B * C);
  const float p = ids ? (float)moelm_model_get_config(g->model)->gate_dropout : 0.0f;
  MoelmDropoutIds d = {ids ? ids->seed : 0, ids ? ids->update : 0, GATE_DROPOUT_LAYER, 0};
  o->dropout_forward(be, g->a1, g->a1, (size_t)B * C, p, &d);
  o->linear_forward(be, g->z, g->a1, W + g->fc2_w, W + g->fc2_b, B, C, K);
  o->log_softmax_forward(be, g->lp, g->z, B, K);
  o->to_host(be, log_prior, g->lp, (size_t)B * K * sizeof(float));
  g_free(tok);
  g_free(row);
  g_free(wrow);
  return moelm_backend_check(be, NULL, error);
}

gboolean moelm_mean_pool_gate_backward(MoelmGate *g, const float *dlog_prior, GError **error)
{
  MoelmBackend *be = g->be;
  const struct moelm_backend_ops *o = be->ops;
  const int C = g->C, K = g->K, B = g->B, n = g->n;
  if (g->B == 0) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG, "gating network backward without a forward");
    return FALSE;
  }
  float *W = moelm_model_params(g->model), *dW = moelm_model_grads(g->model);
  const size_t BC = (size_t)B * C;
  o->to_device(be, g->dlp, dlog_prior, (size_t)B * K * sizeof(float));
  o->zero(be, g->dz, moelm_act_bytes(be, (size_t)B * K));
  o->log_softmax_backward(be, g->dz, g->lp, g->dlp, B, K);
  o->zero(be, g->da1, moelm_act_bytes(be, BC));
  o->linear_backward(be, g->da1, dW + g->fc2_w, dW + g->fc2_b, g->dz, g->a1, W + g->fc2_w, B, C, K);
  const float p = g->dropout ? (float)moelm_model_get_config(g->model)->gate_dropout : 0.0f;
  MoelmDropoutIds d = {g->ids.seed, g->ids.update, GATE_DROPOUT_LAYER, 0};
  o->zero(be, g->dh1, moelm_act_bytes(be, BC));
  o->dropout_backward(be, g->dh1, g->da1, BC, p, &d); /* dh1 temporarily holds d tanh-output */
  o->zero(be, g->da1, moelm_act_bytes(be, BC));
  o->activation_backward(be, MOELM_ACT_TANH, g->da1, g->h1, g->dh1, BC); /* da1 := d h1 */
  o->zero(be, g->dpool, moelm_act_bytes(be, BC));
  o->linear_backward(be, g->dpool, dW + g->fc1_w, dW + g->fc1_b, g->da1, g->pooled, W + g->fc1_w, B, C, C);
  if (n > 0) {
    o->zero(be, g->demb, moelm_act_bytes(be, (size_t)n * C));
    o->scatter_add_rows_backward(be, g->demb, NULL, g->dpool, g->emb, g->row, g->wrow, n, C);
    o->embedding_backward(be, dW + g->wte, NULL, g->demb, g->tok, NULL, n, C, 1.0f);
  }
  return TRUE;
}
