/* moelm — one token-level MoE FFN (fairseq's MOELayer with FeedForwardNetwork experts):
 * route (the moe_gate_* backend ops) → permute the tokens by expert (gather_rows) → one
 * grouped GEMM pair over every expert's contiguous rows → dropout → un-permute with the
 * combine weights (scatter_add_rows). Backward mirrors it, the router getting gradient from
 * the combine weights and from l_aux. Everything stays in backend memory: the grouped GEMMs
 * read the expert offsets where routing wrote them, and the element-wise ops run over all
 * R = K*N dispatch rows (rows past the last dispatched one are zeros and point at no token),
 * so the host never waits for the routing. */
#include "config.h"

#include <string.h>

#include "model-private.h"

static MoelmRouteParams route_params(const MoelmModel *m, int l, int N, gboolean training, const MoelmStepIds *ids)
{
  const MoelmModelConfig *c = &m->cfg;
  return (MoelmRouteParams){
      .experts = c->moe_experts,
      .top_k = c->moe_top_k,
      .capacity = moelm_route_capacity(N, c->moe_experts, c->moe_top_k, c->moe_capacity_factor,
                                       c->moe_dropless || c->moe_route_token0 > 0, !training,
                                       c->moe_eval_capacity_token_fraction),
      .policy = c->moe_second_expert_policy,
      .normalize_before_dropping = c->moe_normalize_gate_prob_before_dropping,
      .batch_prioritized = c->moe_batch_prioritized_routing,
      .noise = training,
      .seed = ids ? ids->seed : 0,
      .update = ids ? ids->update : 0,
      .layer = (uint16_t)l,
  };
}

gboolean moelm_moe_acts_alloc(MoelmModel *m, MoeActs *a, int N, GError **error)
{
  const MoelmModelConfig *c = &m->cfg;
  const size_t E = c->moe_experts, KN = (size_t)c->moe_top_k * N, C = c->embed_dim, n = (size_t)N;
  const size_t Fe = moelm_model_config_expert_ffn_dim(c), A = m->be->act_size;
  MoelmRouteBuffers *r = &a->route;
  memset(a, 0, sizeof *a);
  gboolean ok = TRUE;
  moelm_model_alloc(m, &r->gates, n * E, sizeof(float), &ok, error);
  moelm_model_alloc(m, &r->choice, KN, sizeof(int32_t), &ok, error);
  moelm_model_alloc(m, &r->norm, KN, sizeof(float), &ok, error);
  moelm_model_alloc(m, &r->queued, KN, sizeof(uint8_t), &ok, error);
  moelm_model_alloc(m, &r->location, KN, sizeof(int32_t), &ok, error);
  moelm_model_alloc(m, &r->kept, KN, sizeof(uint8_t), &ok, error);
  moelm_model_alloc(m, &r->weight, KN, sizeof(float), &ok, error);
  moelm_model_alloc(m, &r->count1, E, sizeof(int32_t), &ok, error);
  moelm_model_alloc(m, &r->offsets, E + 1, sizeof(int32_t), &ok, error);
  moelm_model_alloc(m, &r->dispatch_token, KN, sizeof(int32_t), &ok, error);
  moelm_model_alloc(m, &r->dispatch_slot, KN, sizeof(int32_t), &ok, error);
  moelm_model_alloc(m, &r->dispatch_weight, KN, sizeof(float), &ok, error);
  moelm_model_alloc(m, &r->order, n, sizeof(int32_t), &ok, error);
  moelm_model_alloc(m, &a->stats, MOELM_ROUTE_N_STATS, sizeof(double), &ok, error);
  moelm_model_alloc(m, &a->logits, n * E, sizeof(float), &ok, error);
  moelm_model_alloc(m, &a->logits_act, n * E, A, &ok, error);
  moelm_model_alloc(m, &a->xin, KN * C, A, &ok, error);
  moelm_model_alloc(m, &a->fc1, KN * Fe, A, &ok, error);
  moelm_model_alloc(m, &a->fcact, KN * Fe, A, &ok, error);
  moelm_model_alloc(m, &a->y, KN * C, A, &ok, error);
  a->rows = N;
  if (!ok)
    moelm_moe_acts_free(m, a);
  return ok;
}

void moelm_moe_acts_free(MoelmModel *m, MoeActs *a)
{
  MoelmRouteBuffers *r = &a->route;
  void *bufs[] = {&r->gates,  &r->choice,        &r->norm,          &r->queued,          &r->location,
                  &r->kept,   &r->weight,        &r->count1,        &r->offsets,         &r->dispatch_token,
                  &r->dispatch_slot, &r->dispatch_weight, &r->order, &a->stats,          &a->logits,
                  &a->logits_act, &a->xin,       &a->fc1,           &a->fcact,           &a->y};
  for (gsize i = 0; i < G_N_ELEMENTS(bufs); i++)
    moelm_model_release(m, bufs[i]);
  moelm_moe_exchange_layer_free(m, a);
  a->rows = 0;
}

gboolean moelm_moe_workspace_alloc(MoelmModel *m, int N, GError **error)
{
  if (m->n_moe == 0)
    return TRUE;
  const MoelmModelConfig *c = &m->cfg;
  const size_t E = c->moe_experts, KN = (size_t)c->moe_top_k * N, C = c->embed_dim, A = m->be->act_size;
  gboolean ok = TRUE;
  moelm_model_alloc(m, &m->moe_d1, KN * C, A, &ok, error);
  moelm_model_alloc(m, &m->moe_d2, KN * C, A, &ok, error);
  moelm_model_alloc(m, &m->moe_dw, KN, sizeof(float), &ok, error);
  moelm_model_alloc(m, &m->moe_dlogits, (size_t)N * E, sizeof(float), &ok, error);
  moelm_model_alloc(m, &m->moe_dlogits_act, (size_t)N * E, A, &ok, error);
  if (!ok)
    moelm_moe_workspace_free(m);
  return ok;
}

void moelm_moe_workspace_free(MoelmModel *m)
{
  void *bufs[] = {&m->moe_d1, &m->moe_d2, &m->moe_dw, &m->moe_dlogits, &m->moe_dlogits_act, &m->route_logits};
  for (gsize i = 0; i < G_N_ELEMENTS(bufs); i++)
    moelm_model_release(m, bufs[i]);
  m->route_cap = 0;
  moelm_moe_exchange_free(m);
}

gboolean moelm_moe_route_rows(MoelmModel *m, const int32_t *first, size_t stride, int R, int Tq, GError **error)
{
  const int E = m->cfg.moe_experts;
  const size_t n = (size_t)R * Tq * E;
  if (n > m->route_cap) {
    gboolean ok = TRUE;
    moelm_model_release(m, &m->route_logits);
    m->route_cap = 0;
    moelm_model_alloc(m, &m->route_logits, n, sizeof(float), &ok, error);
    if (!ok)
      return FALSE;
    m->route_cap = n;
  }
  /* softmax of 0 against -1e30: a gate of exactly 1 for the row's expert and 0 elsewhere */
  float *x = g_new(float, n);
  for (size_t i = 0; i < n; i++)
    x[i] = -1e30f;
  for (int r = 0; r < R; r++) {
    const int64_t k = (int64_t)first[(size_t)r * stride] - m->cfg.moe_route_token0;
    const int expert = k >= 0 && k < E ? (int)k : 0;
    for (int t = 0; t < Tq; t++)
      x[((size_t)r * Tq + t) * E + expert] = 0.0f;
  }
  m->be->ops->to_device(m->be, m->route_logits, x, n * sizeof(float));
  g_free(x);
  return TRUE;
}

void moelm_moe_forward(MoelmModel *m, int l, MoeActs *a, const MoelmAct *inp, MoelmAct *out, int N,
                       gboolean training, const MoelmStepIds *ids, const uint8_t *pad)
{
  MoelmBackend *be = m->be;
  const struct moelm_backend_ops *o = be->ops;
  const MoelmModelConfig *c = &m->cfg;
  const LayerParams *L = &m->layers[l];
  const int E = c->moe_experts, C = c->embed_dim, Fe = moelm_model_config_expert_ffn_dim(c);
  const int R = c->moe_top_k * N; /* dispatch rows */
  const float p = ids ? (float)c->dropout : 0.0f;
  const float pact = ids ? (float)c->activation_dropout : 0.0f;
  MoelmDropoutIds d_act = moelm_drop_ids(ids, l, SITE_ACT), d_ffn = moelm_drop_ids(ids, l, SITE_FFN_OUT);
  const MoelmRouteParams rp = route_params(m, l, N, training, ids);
  const MoelmRouteBuffers *r = &a->route;
  const size_t expert_w = L->expert_stride; /* one expert's tensors to the next's */

  /* route: the router's linear in the activation type, gating in fp32; sequence routing
   * takes the logits moelm_moe_route_rows uploaded */
  const gboolean by_sequence = c->moe_route_token0 > 0;
  if (!by_sequence) {
    o->linear_forward(be, a->logits_act, inp, W_PARAM(m, L->gate_w), NULL, N, C, E);
    o->convert(be, a->logits, MOELM_DT_F32, a->logits_act, be->act_dtype, (size_t)N * E);
  }
  o->moe_gate_topk(be, &rp, by_sequence ? m->route_logits : a->logits, c->moe_pad_mask ? pad : NULL, N, r);
  o->moe_gate_dispatch(be, &rp, N, r);
  o->moe_gate_stats(be, &rp, N, r, a->stats);

  /* permute → experts (grouped GEMMs, here or on their ranks) → un-permute */
  o->gather_rows(be, a->xin, inp, r->dispatch_token, R, C);
  if (m->expert_world > 1) {
    moelm_moe_exchange_forward(m, l, a, ids, R);
  } else {
    o->grouped_linear_forward(be, a->fc1, a->xin, W_PARAM(m, EXPERT_FC1_W(L, 0)), expert_w,
                              W_PARAM(m, EXPERT_FC1_B(L, 0, C, Fe)), expert_w, r->offsets, E, R, C, Fe);
    o->activation_forward(be, c->activation, a->fcact, a->fc1, (size_t)R * Fe);
    o->dropout_forward(be, a->fcact, a->fcact, (size_t)R * Fe, pact, &d_act);
    o->grouped_linear_forward(be, a->y, a->fcact, W_PARAM(m, EXPERT_FC2_W(L, 0, C, Fe)), expert_w,
                              W_PARAM(m, EXPERT_FC2_B(L, 0, C, Fe)), expert_w, r->offsets, E, R, Fe, C);
  }
  o->dropout_forward(be, a->y, a->y, (size_t)R * C, p, &d_ffn);
  o->zero(be, out, moelm_act_bytes(be, (size_t)N * C));
  o->scatter_add_rows(be, out, a->y, r->dispatch_token, r->dispatch_weight, R, C);
}

void moelm_moe_backward(MoelmModel *m, int l, MoeActs *a, const MoelmAct *inp, const MoelmAct *dout,
                        MoelmAct *dinp, int N, const MoelmStepIds *ids, double aux_coef)
{
  MoelmBackend *be = m->be;
  const struct moelm_backend_ops *o = be->ops;
  const MoelmModelConfig *c = &m->cfg;
  const LayerParams *L = &m->layers[l];
  const MoelmRouteBuffers *r = &a->route;
  const int E = c->moe_experts, C = c->embed_dim, Fe = moelm_model_config_expert_ffn_dim(c);
  const int R = c->moe_top_k * N;
  const float p = ids ? (float)c->dropout : 0.0f;
  const float pact = ids ? (float)c->activation_dropout : 0.0f;
  MoelmDropoutIds d_act = moelm_drop_ids(ids, l, SITE_ACT), d_ffn = moelm_drop_ids(ids, l, SITE_FFN_OUT);
  const size_t RC = (size_t)R * C, RF = (size_t)R * Fe, expert_w = L->expert_stride;
  /* the same routing parameters as the forward: the backward needs E, K and the normalisation */
  const MoelmRouteParams rp = route_params(m, l, N, TRUE, ids);

  /* out[token] += w * y: dy = w * dout[token] (d1), dw = dout[token] . y */
  o->zero(be, m->moe_d1, moelm_act_bytes(be, RC));
  o->zero(be, m->moe_dw, (size_t)R * sizeof(float));
  o->scatter_add_rows_backward(be, m->moe_d1, m->moe_dw, dout, a->y, r->dispatch_token, r->dispatch_weight, R, C);
  o->zero(be, m->moe_d2, moelm_act_bytes(be, RC));
  o->dropout_backward(be, m->moe_d2, m->moe_d1, RC, p, &d_ffn);
  if (m->expert_world > 1) {
    moelm_moe_exchange_backward(m, l, a, ids, m->moe_d2, m->moe_d1, R);
  } else {
    o->zero(be, m->dbig, moelm_act_bytes(be, RF));
    o->grouped_linear_backward(be, m->dbig, G_PARAM(m, EXPERT_FC2_W(L, 0, C, Fe)),
                               G_PARAM(m, EXPERT_FC2_B(L, 0, C, Fe)), m->moe_d2, a->fcact,
                               W_PARAM(m, EXPERT_FC2_W(L, 0, C, Fe)), expert_w, expert_w, r->offsets, E, R, Fe, C);
    o->zero(be, m->dbig2, moelm_act_bytes(be, RF));
    o->dropout_backward(be, m->dbig2, m->dbig, RF, pact, &d_act);
    o->zero(be, m->dbig, moelm_act_bytes(be, RF));
    o->activation_backward(be, c->activation, m->dbig, a->fc1, m->dbig2, RF);
    o->zero(be, m->moe_d1, moelm_act_bytes(be, RC));
    o->grouped_linear_backward(be, m->moe_d1, G_PARAM(m, EXPERT_FC1_W(L, 0)), G_PARAM(m, EXPERT_FC1_B(L, 0, C, Fe)),
                               m->dbig, a->xin, W_PARAM(m, EXPERT_FC1_W(L, 0)), expert_w, expert_w, r->offsets, E, R,
                               C, Fe);
  }
  /* every read of dout is done: dinp may alias it */
  o->scatter_add_rows(be, dinp, m->moe_d1, r->dispatch_token, NULL, R, C);

  /* the router: combine weights and l_aux → gates → logits = inp wg^T (a sequence-routed
   * layer's gate is not used) */
  if (c->moe_route_token0 > 0)
    return;
  o->moe_gate_backward(be, &rp, N, r, m->moe_dw, aux_coef, m->moe_dlogits);
  o->convert(be, m->moe_dlogits_act, be->act_dtype, m->moe_dlogits, MOELM_DT_F32, (size_t)N * E);
  o->linear_backward(be, dinp, G_PARAM(m, L->gate_w), NULL, m->moe_dlogits_act, inp, W_PARAM(m, L->gate_w), N, C, E);
}
