/* moelm — incremental decoding with a per-layer key/value cache (generation). Forward
 * only, no dropout; MoE layers route with eval semantics. Matches a full forward over the
 * same prefix to rounding (for MoE layers: when eval routing is dropless, the default). */
#include "config.h"

#include <math.h>
#include <string.h>

#include "model-private.h"
#include "moelm/dictionary.h"
#include "moelm/errors.h"

struct MoelmKvCache {
  MoelmModel *m;
  int rows, capacity, len;
  MoelmAct **k, **v;     /* per layer (rows, capacity, C) backend memory */
  int scratch_tokens;    /* rows*Tq the scratch below holds */
  MoelmAct *x, *h, *q, *kv, *att, *tmp, *ffn; /* (n,C) ×6 and (n,F) */
  int32_t *d_tok, *d_pos;
  MoeActs moe;           /* MoE layers' routing scratch (forward only, shared by the layers) */
  MoelmAct *logits;      /* (rows, V) */
  float *lprobs;         /* (rows, V) fp32 log-probabilities */
  MoelmAct *reorder_tmp; /* (rows, capacity, C) beam reordering scratch, allocated once */
  int32_t *d_order;      /* (rows) */
  int32_t *row_first;    /* host (rows): each row's first token (sequence routing's expert) */
};

static void free_scratch(MoelmKvCache *kc)
{
  void *bufs[] = {&kc->x, &kc->h, &kc->q, &kc->kv, &kc->att, &kc->tmp, &kc->ffn, &kc->d_tok, &kc->d_pos};
  for (gsize i = 0; i < G_N_ELEMENTS(bufs); i++)
    moelm_model_release(kc->m, bufs[i]);
  moelm_moe_acts_free(kc->m, &kc->moe);
  kc->scratch_tokens = 0;
}

static gboolean ensure_scratch(MoelmKvCache *kc, int n, GError **error)
{
  if (n <= kc->scratch_tokens)
    return TRUE;
  free_scratch(kc);
  MoelmModel *m = kc->m;
  const size_t C = m->cfg.embed_dim, F = m->cfg.ffn_dim, A = m->be->act_size;
  gboolean ok = TRUE;
  MoelmAct **cbufs[] = {&kc->x, &kc->h, &kc->q, &kc->kv, &kc->att, &kc->tmp};
  for (gsize i = 0; i < G_N_ELEMENTS(cbufs); i++)
    moelm_model_alloc(m, cbufs[i], (size_t)n * C, A, &ok, error);
  moelm_model_alloc(m, &kc->ffn, (size_t)n * F, A, &ok, error);
  moelm_model_alloc(m, &kc->d_tok, (size_t)n, sizeof(int32_t), &ok, error);
  moelm_model_alloc(m, &kc->d_pos, (size_t)n, sizeof(int32_t), &ok, error);
  if (ok && m->n_moe > 0)
    ok = moelm_moe_acts_alloc(m, &kc->moe, n, error);
  if (!ok) {
    free_scratch(kc);
    return FALSE;
  }
  kc->scratch_tokens = n;
  return TRUE;
}

MoelmKvCache *moelm_kv_cache_new(MoelmModel *m, int rows, int capacity, GError **error)
{
  if (capacity > m->cfg.max_positions) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG,
                "a decoding length of %d exceeds the model's %d positions", capacity, m->cfg.max_positions);
    return NULL;
  }
  MoelmKvCache *kc = g_new0(MoelmKvCache, 1);
  kc->m = m;
  kc->rows = rows;
  kc->capacity = capacity;
  const int L = m->cfg.layers;
  kc->row_first = g_new0(int32_t, rows);
  kc->k = g_new0(MoelmAct *, L > 0 ? L : 1);
  kc->v = g_new0(MoelmAct *, L > 0 ? L : 1);
  const size_t elems = (size_t)rows * capacity * m->cfg.embed_dim, A = m->be->act_size;
  const size_t V = m->cfg.vocab_size;
  gboolean ok = TRUE;
  for (int l = 0; l < L; l++) {
    moelm_model_alloc(m, &kc->k[l], elems, A, &ok, error);
    moelm_model_alloc(m, &kc->v[l], elems, A, &ok, error);
  }
  moelm_model_alloc(m, &kc->logits, (size_t)rows * V, A, &ok, error);
  moelm_model_alloc(m, &kc->lprobs, (size_t)rows * V, sizeof(float), &ok, error);
  moelm_model_alloc(m, &kc->reorder_tmp, elems, A, &ok, error);
  moelm_model_alloc(m, &kc->d_order, (size_t)rows, sizeof(int32_t), &ok, error);
  if (!ok) {
    moelm_kv_cache_free(kc);
    return NULL;
  }
  return kc;
}

void moelm_kv_cache_free(MoelmKvCache *kc)
{
  if (kc == NULL)
    return;
  for (int l = 0; l < kc->m->cfg.layers; l++) {
    moelm_model_release(kc->m, &kc->k[l]);
    moelm_model_release(kc->m, &kc->v[l]);
  }
  g_free(kc->k);
  g_free(kc->v);
  g_free(kc->row_first);
  void *bufs[] = {&kc->logits, &kc->lprobs, &kc->reorder_tmp, &kc->d_order};
  for (gsize i = 0; i < G_N_ELEMENTS(bufs); i++)
    moelm_model_release(kc->m, bufs[i]);
  free_scratch(kc);
  g_free(kc);
}

int moelm_kv_cache_len(const MoelmKvCache *kc) { return kc->len; }
void moelm_kv_cache_reset(MoelmKvCache *kc) { kc->len = 0; }

gboolean moelm_kv_cache_reorder(MoelmKvCache *kc, const int32_t *order, GError **error)
{
  MoelmBackend *be = kc->m->be;
  const int row_elems = kc->capacity * kc->m->cfg.embed_dim;
  be->ops->to_device(be, kc->d_order, order, (size_t)kc->rows * sizeof(int32_t));
  if (kc->m->cfg.moe_route_token0 > 0) { /* each row keeps its expert */
    int32_t *first = g_memdup2(kc->row_first, (gsize)kc->rows * sizeof(int32_t));
    for (int r = 0; r < kc->rows; r++)
      kc->row_first[r] = first[order[r]];
    g_free(first);
  }
  for (int l = 0; l < kc->m->cfg.layers; l++) {
    MoelmAct **caches[2] = {&kc->k[l], &kc->v[l]};
    for (int i = 0; i < 2; i++) { /* gather into the scratch, then swap: no copy back */
      be->ops->gather_rows(be, kc->reorder_tmp, *caches[i], kc->d_order, kc->rows, row_elems);
      MoelmAct *t = *caches[i];
      *caches[i] = kc->reorder_tmp;
      kc->reorder_tmp = t;
    }
  }
  return TRUE;
}

/* Copy rows×Tq new keys or values (n,C) into the cache at positions [len, len+Tq). */
static void append(MoelmKvCache *kc, MoelmAct *cache, const MoelmAct *src, int Tq)
{
  MoelmBackend *be = kc->m->be;
  const int C = kc->m->cfg.embed_dim;
  for (int r = 0; r < kc->rows; r++)
    be->ops->copy(be, moelm_act_at(be, cache, ((size_t)r * kc->capacity + kc->len) * C),
                  moelm_act_at(be, src, (size_t)r * Tq * C), moelm_act_bytes(be, (size_t)Tq * C));
}

gboolean moelm_model_decode(MoelmModel *m, MoelmKvCache *kc, const int32_t *tokens, int Tq, float *lprobs,
                            GError **error)
{
  if (kc->len + Tq > kc->capacity) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG, "decoding past the cache's %d positions",
                kc->capacity);
    return FALSE;
  }
  const int R = kc->rows, n = R * Tq;
  if (!ensure_scratch(kc, n, error) || !moelm_moefied_ensure(m, n, error))
    return FALSE;
  MoelmBackend *be = m->be;
  const struct moelm_backend_ops *o = be->ops;
  const MoelmModelConfig *c = &m->cfg;
  const int C = c->embed_dim, F = c->ffn_dim, V = c->vocab_size, Tk = kc->len + Tq;
  const size_t nC = (size_t)n * C;

  int32_t *pos = g_new(int32_t, n);
  for (int r = 0; r < R; r++)
    for (int t = 0; t < Tq; t++)
      pos[r * Tq + t] = MOELM_PAD + 1 + kc->len + t;
  o->to_device(be, kc->d_tok, tokens, (size_t)n * sizeof(int32_t));
  o->to_device(be, kc->d_pos, pos, (size_t)n * sizeof(int32_t));
  g_free(pos);
  moelm_model_embed(m, kc->x, kc->d_tok, kc->d_pos, n);
  if (c->moe_route_token0 > 0) { /* sequence routing: a row's expert is set by its first token */
    if (kc->len == 0)
      for (int r = 0; r < R; r++)
        kc->row_first[r] = tokens[(size_t)r * Tq];
    if (!moelm_moe_route_rows(m, kc->row_first, 1, R, Tq, error))
      return FALSE;
  }

  const gboolean pre = c->normalize_before;
  for (int l = 0; l < c->layers; l++) {
    const LayerParams *L = &m->layers[l];
    const MoelmAct *in = kc->x;
    if (pre) {
      o->layernorm_forward(be, kc->h, NULL, NULL, kc->x, W_PARAM(m, L->ln1_w), W_PARAM(m, L->ln1_b), n, C, 1e-5f);
      in = kc->h;
    }
    o->linear_forward(be, kc->q, in, W_PARAM(m, L->qkv_w), W_PARAM(m, L->qkv_b), n, C, C);
    o->linear_forward(be, kc->kv, in, W_PARAM(m, L->qkv_w) + (size_t)C * C, W_PARAM(m, L->qkv_b) + C, n, C, C);
    append(kc, kc->k[l], kc->kv, Tq);
    o->linear_forward(be, kc->kv, in, W_PARAM(m, L->qkv_w) + (size_t)2 * C * C, W_PARAM(m, L->qkv_b) + 2 * C, n, C, C);
    append(kc, kc->v[l], kc->kv, Tq);
    o->attention_decode(be, kc->att, kc->q, kc->k[l], kc->v[l], NULL, R, Tq, Tk, kc->capacity, C, c->heads);
    o->linear_forward(be, kc->tmp, kc->att, W_PARAM(m, L->out_w), W_PARAM(m, L->out_b), n, C, C);
    o->add(be, kc->x, kc->x, kc->tmp, nC);
    if (!pre)
      o->layernorm_forward(be, kc->x, NULL, NULL, kc->x, W_PARAM(m, L->ln1_w), W_PARAM(m, L->ln1_b), n, C, 1e-5f);
    in = kc->x;
    if (pre) {
      o->layernorm_forward(be, kc->h, NULL, NULL, kc->x, W_PARAM(m, L->ln2_w), W_PARAM(m, L->ln2_b), n, C, 1e-5f);
      in = kc->h;
    }
    if (L->moe) { /* eval routing over the n new tokens (dropless unless an eval capacity is set) */
      moelm_moe_forward(m, l, &kc->moe, in, kc->tmp, n, FALSE, NULL, NULL);
    } else if (L->moefied) {
      moelm_moefied_forward(m, l, in, kc->tmp, n, NULL);
    } else {
      o->linear_forward(be, kc->ffn, in, W_PARAM(m, L->fc1_w), W_PARAM(m, L->fc1_b), n, C, F);
      o->activation_forward(be, c->activation, kc->ffn, kc->ffn, (size_t)n * F);
      o->linear_forward(be, kc->tmp, kc->ffn, W_PARAM(m, L->fc2_w), W_PARAM(m, L->fc2_b), n, F, C);
    }
    o->add(be, kc->x, kc->x, kc->tmp, nC);
    if (!pre)
      o->layernorm_forward(be, kc->x, NULL, NULL, kc->x, W_PARAM(m, L->ln2_w), W_PARAM(m, L->ln2_b), n, C, 1e-5f);
  }
  kc->len = Tk;
  /* only the last position of each row is projected to the vocabulary */
  for (int r = 0; r < R; r++)
    o->copy(be, moelm_act_at(be, kc->h, (size_t)r * C), moelm_act_at(be, kc->x, ((size_t)r * Tq + Tq - 1) * C),
            moelm_act_bytes(be, (size_t)C));
  if (m->has_final_norm)
    o->layernorm_forward(be, kc->h, NULL, NULL, kc->h, W_PARAM(m, m->lnf_w), W_PARAM(m, m->lnf_b), R, C, 1e-5f);
  o->linear_forward(be, kc->logits, kc->h, W_PARAM(m, m->out_proj), NULL, R, C, V);
  o->log_softmax_forward(be, kc->lprobs, kc->logits, R, V);
  o->to_host(be, lprobs, kc->lprobs, (size_t)R * V * sizeof(float));
  return moelm_backend_check(be, NULL, error);
}
