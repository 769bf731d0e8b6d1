/* moelm — one token-level MoE FFN (fairseq's MOELayer with FeedForwardNetwork experts):
 * route (gating/token_gate) → permute the tokens by expert (gather_rows) → one GEMM pair
 * per expert over its contiguous rows → dropout → un-permute with the combine weights
 * (scatter_add_rows). Backward mirrors it, the router getting gradient from the combine
 * weights and from l_aux. Routing runs on the host over the (N, E) logits. */
#include "config.h"

#include <string.h>

#include "model-private.h"

#define W(off) (m->params + (off))
#define G(off) (m->grads + (off))

gboolean moelm_moe_acts_alloc(MoelmModel *m, MoeActs *a, int N, GError **error)
{
  MoelmBackend *be = m->be;
  const MoelmModelConfig *c = &m->cfg;
  const size_t E = c->moe_experts, KN = (size_t)c->moe_top_k * N, C = c->embed_dim;
  const size_t Fe = moelm_model_config_expert_ffn_dim(c);
  memset(a, 0, sizeof *a);
  a->route = moelm_routing_new();
  a->h_logits = g_new(float, (size_t)N * E);
  gboolean ok = TRUE;
#define ALLOC(ptr, count)                                                          \
  do {                                                                             \
    if (ok) {                                                                      \
      (ptr) = be->ops->alloc(be, (count) * sizeof(*(ptr)), error);                 \
      ok = (ptr) != NULL;                                                          \
    }                                                                              \
  } while (0)
  ALLOC(a->logits, (size_t)N * E);
  ALLOC(a->token, KN);
  ALLOC(a->weight, KN);
  ALLOC(a->xin, KN * C);
  ALLOC(a->fc1, KN * Fe);
  ALLOC(a->fcact, KN * Fe);
  ALLOC(a->y, KN * C);
#undef ALLOC
  a->rows = N;
  if (!ok)
    moelm_moe_acts_free(m, a);
  return ok;
}

void moelm_moe_acts_free(MoelmModel *m, MoeActs *a)
{
  MoelmBackend *be = m->be;
  void *bufs[] = {a->logits, a->token, a->weight, a->xin, a->fc1, a->fcact, a->y};
  for (gsize i = 0; i < G_N_ELEMENTS(bufs); i++)
    be->ops->free(be, bufs[i]);
  moelm_routing_free(a->route);
  g_free(a->h_logits);
  memset(a, 0, sizeof *a);
}

gboolean moelm_moe_workspace_alloc(MoelmModel *m, int N, GError **error)
{
  if (m->n_moe == 0)
    return TRUE;
  MoelmBackend *be = m->be;
  const MoelmModelConfig *c = &m->cfg;
  const size_t E = c->moe_experts, KN = (size_t)c->moe_top_k * N, C = c->embed_dim;
  m->h_pad = g_new0(uint8_t, N);
  m->h_dw = g_new(float, KN);
  m->h_dslot = g_new(float, KN);
  m->h_dlogits = g_new(float, (size_t)N * E);
  if ((m->moe_d1 = be->ops->alloc(be, KN * C * sizeof(float), error)) == NULL ||
      (m->moe_d2 = be->ops->alloc(be, KN * C * sizeof(float), error)) == NULL ||
      (m->moe_dw = be->ops->alloc(be, KN * sizeof(float), error)) == NULL ||
      (m->moe_dlogits = be->ops->alloc(be, (size_t)N * E * sizeof(float), error)) == NULL) {
    moelm_moe_workspace_free(m);
    return FALSE;
  }
  return TRUE;
}

void moelm_moe_workspace_free(MoelmModel *m)
{
  MoelmBackend *be = m->be;
  void *bufs[] = {m->moe_d1, m->moe_d2, m->moe_dw, m->moe_dlogits};
  for (gsize i = 0; i < G_N_ELEMENTS(bufs); i++)
    be->ops->free(be, bufs[i]);
  m->moe_d1 = m->moe_d2 = m->moe_dw = m->moe_dlogits = NULL;
  g_free(m->h_pad);
  g_free(m->h_dw);
  g_free(m->h_dslot);
  g_free(m->h_dlogits);
  m->h_pad = NULL;
  m->h_dw = m->h_dslot = m->h_dlogits = NULL;
}

void moelm_moe_forward(MoelmModel *m, int l, MoeActs *a, const float *inp, float *out, int N, gboolean training,
                       const MoelmStepIds *ids, const uint8_t *pad)
{
  MoelmBackend *be = m->be;
  const struct moelm_backend_ops *o = be->ops;
  const MoelmModelConfig *c = &m->cfg;
  const LayerParams *L = &m->layers[l];
  const int E = c->moe_experts, C = c->embed_dim, Fe = moelm_model_config_expert_ffn_dim(c);
  const float p = ids ? (float)c->dropout : 0.0f;
  const float pact = ids ? (float)c->activation_dropout : 0.0f;
  MoelmDropoutIds d_act = moelm_drop_ids(ids, l, SITE_ACT), d_ffn = moelm_drop_ids(ids, l, SITE_FFN_OUT);

  /* route */
  o->linear_forward(be, a->logits, inp, W(L->gate_w), NULL, N, C, E);
  o->to_host(be, a->h_logits, a->logits, (size_t)N * E * sizeof(float));
  MoelmTokenGateParams gp = {
      .experts = E,
      .top_k = c->moe_top_k,
      .capacity = moelm_token_gate_capacity(N, E, c->moe_top_k, c->moe_capacity_factor, c->moe_dropless, !training,
                                            c->moe_eval_capacity_token_fraction),
      .policy = c->moe_second_expert_policy,
      .normalize_before_dropping = c->moe_normalize_gate_prob_before_dropping,
      .batch_prioritized = c->moe_batch_prioritized_routing,
      .noise = training,
      .seed = ids ? ids->seed : 0,
      .update = ids ? ids->update : 0,
      .layer = (uint16_t)l,
  };
  MoelmRouting *r = a->route;
  moelm_token_gate_route(&gp, a->h_logits, c->moe_pad_mask ? pad : NULL, N, r);
  const int A = r->n_dispatch;
  o->zero(be, out, (size_t)N * C * sizeof(float));
  if (A == 0)
    return;
  o->to_device(be, a->token, r->dispatch_token, (size_t)A * sizeof(int32_t));
  o->to_device(be, a->weight, r->dispatch_weight, (size_t)A * sizeof(float));

  /* permute → experts → un-permute */
  o->gather_rows(be, a->xin, inp, a->token, A, C);
  for (int e = 0; e < E; e++) {
    const int off = r->offsets[e], n = r->offsets[e + 1] - off;
    if (n > 0)
      o->linear_forward(be, a->fc1 + (size_t)off * Fe, a->xin + (size_t)off * C, W(EXPERT_FC1_W(L, e)),
                        W(EXPERT_FC1_B(L, e, C, Fe)), n, C, Fe);
  }
  o->activation_forward(be, c->activation, a->fcact, a->fc1, (size_t)A * Fe);
  o->dropout_forward(be, a->fcact, a->fcact, (size_t)A * Fe, pact, &d_act);
  for (int e = 0; e < E; e++) {
    const int off = r->offsets[e], n = r->offsets[e + 1] - off;
    if (n > 0)
      o->linear_forward(be, a->y + (size_t)off * C, a->fcact + (size_t)off * Fe, W(EXPERT_FC2_W(L, e, C, Fe)),
                        W(EXPERT_FC2_B(L, e, C, Fe)), n, Fe, C);
  }
  o->dropout_forward(be, a->y, a->y, (size_t)A * C, p, &d_ffn);
  o->scatter_add_rows(be, out, a->y, a->token, a->weight, A, C);
}

void moelm_moe_backward(MoelmModel *m, int l, MoeActs *a, const float *inp, const float *dout, float *dinp, int N,
                        const MoelmStepIds *ids, double aux_coef)
{
  MoelmBackend *be = m->be;
  const struct moelm_backend_ops *o = be->ops;
  const MoelmModelConfig *c = &m->cfg;
  const LayerParams *L = &m->layers[l];
  const MoelmRouting *r = a->route;
  const int E = c->moe_experts, K = c->moe_top_k, C = c->embed_dim, Fe = moelm_model_config_expert_ffn_dim(c);
  const int A = r->n_dispatch;
  const float p = ids ? (float)c->dropout : 0.0f;
  const float pact = ids ? (float)c->activation_dropout : 0.0f;
  MoelmDropoutIds d_act = moelm_drop_ids(ids, l, SITE_ACT), d_ffn = moelm_drop_ids(ids, l, SITE_FFN_OUT);
  const size_t AC = (size_t)A * C, AF = (size_t)A * Fe;

  memset(m->h_dslot, 0, (size_t)N * K * sizeof(float));
  if (A > 0) {
    /* out[token] += w * y: dy = w * dout[token] (d1), dw = dout[token] . y */
    o->zero(be, m->moe_d1, AC * sizeof(float));
    o->zero(be, m->moe_dw, (size_t)A * sizeof(float));
    o->scatter_add_rows_backward(be, m->moe_d1, m->moe_dw, dout, a->y, a->token, a->weight, A, C);
    o->to_host(be, m->h_dw, m->moe_dw, (size_t)A * sizeof(float));
    for (int i = 0; i < A; i++)
      m->h_dslot[r->dispatch_slot[i]] = m->h_dw[i];
    o->zero(be, m->moe_d2, AC * sizeof(float));
    o->dropout_backward(be, m->moe_d2, m->moe_d1, AC, p, &d_ffn);
    o->zero(be, m->dbig, AF * sizeof(float));
    for (int e = 0; e < E; e++) {
      const int off = r->offsets[e], n = r->offsets[e + 1] - off;
      if (n > 0)
        o->linear_backward(be, m->dbig + (size_t)off * Fe, G(EXPERT_FC2_W(L, e, C, Fe)), G(EXPERT_FC2_B(L, e, C, Fe)),
                           m->moe_d2 + (size_t)off * C, a->fcact + (size_t)off * Fe, W(EXPERT_FC2_W(L, e, C, Fe)), n,
                           Fe, C);
    }
    o->zero(be, m->dbig2, AF * sizeof(float));
    o->dropout_backward(be, m->dbig2, m->dbig, AF, pact, &d_act);
    o->zero(be, m->dbig, AF * sizeof(float));
    o->activation_backward(be, c->activation, m->dbig, a->fc1, m->dbig2, AF);
    o->zero(be, m->moe_d1, AC * sizeof(float));
    for (int e = 0; e < E; e++) {
      const int off = r->offsets[e], n = r->offsets[e + 1] - off;
      if (n > 0)
        o->linear_backward(be, m->moe_d1 + (size_t)off * C, G(EXPERT_FC1_W(L, e)), G(EXPERT_FC1_B(L, e, C, Fe)),
                           m->dbig + (size_t)off * Fe, a->xin + (size_t)off * C, W(EXPERT_FC1_W(L, e)), n, C, Fe);
    }
    /* every read of dout is done: dinp may alias it */
    o->scatter_add_rows(be, dinp, m->moe_d1, a->token, NULL, A, C);
  }
  /* the router: combine weights and l_aux → gates → logits = inp wg^T */
  moelm_token_gate_backward(r, m->h_dslot, aux_coef, m->h_dlogits);
  o->to_device(be, m->moe_dlogits, m->h_dlogits, (size_t)N * E * sizeof(float));
  o->linear_backward(be, dinp, G(L->gate_w), NULL, m->moe_dlogits, inp, W(L->gate_w), N, C, E);
}
