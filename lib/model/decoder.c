/* moelm — transformer_lm forward and backward (fairseq's TransformerDecoder, no encoder).
 * Backward mirrors the forward in reverse; parameter gradients accumulate (+=). */
#include "config.h"

#include <math.h>
#include <string.h>

#include "model-private.h"
#include "moelm/dictionary.h"
#include "moelm/errors.h"

void moelm_model_upload_batch(MoelmModel *m, const MoelmBatch *batch)
{
  const int B = batch->B, T = batch->T, N = B * T;
  int32_t *pos = g_new(int32_t, N);
  uint8_t *pad = g_new(uint8_t, N);
  gboolean any_pad = FALSE;
  for (int b = 0; b < B; b++) {
    int32_t count = 0;
    for (int t = 0; t < T; t++) {
      const int i = b * T + t;
      const gboolean is_pad = batch->src[i] == MOELM_PAD;
      pad[i] = is_pad;
      any_pad |= is_pad;
      if (!is_pad)
        count++;
      pos[i] = is_pad ? MOELM_PAD : MOELM_PAD + count;
    }
  }
  MoelmBackend *be = m->be;
  be->ops->to_device(be, m->d_src, batch->src, (size_t)N * sizeof(int32_t));
  be->ops->to_device(be, m->d_tgt, batch->tgt, (size_t)N * sizeof(int32_t));
  be->ops->to_device(be, m->d_pos, pos, (size_t)N * sizeof(int32_t));
  be->ops->to_device(be, m->d_pad, pad, (size_t)N);
  m->any_pad = any_pad;
  g_free(pos);
  g_free(pad);
}

void moelm_model_embed(MoelmModel *m, MoelmAct *x, const int32_t *d_tokens, const int32_t *d_pos, int N)
{
  const MoelmModelConfig *c = &m->cfg;
  const float scale = c->scale_embedding ? sqrtf((float)c->embed_dim) : 1.0f;
  const float *wpe = c->learned_pos ? W_PARAM(m, m->wpe) : m->sinusoid;
  m->be->ops->embedding_forward(m->be, x, d_tokens, d_pos, W_PARAM(m, m->wte), wpe, N, c->embed_dim, scale);
}

/* One layer forward; returns the layer output (N,C). training: MoE layers route with the
 * training capacity and noise. */
static const MoelmAct *layer_forward(MoelmModel *m, int l, const MoelmAct *x_in, int B, int T, const MoelmStepIds *ids,
                                  gboolean training)
{
  MoelmBackend *be = m->be;
  const struct moelm_backend_ops *o = be->ops;
  const MoelmModelConfig *c = &m->cfg;
  const LayerParams *L = &m->layers[l];
  LayerActs *a = &m->acts[l];
  const int N = B * T, C = c->embed_dim, F = c->ffn_dim;
  const float eps = 1e-5f;
  const float p = ids ? (float)c->dropout : 0.0f;
  const float pa = ids ? (float)c->attention_dropout : 0.0f;
  const float pact = ids ? (float)c->activation_dropout : 0.0f;
  MoelmDropoutIds d_att = moelm_drop_ids(ids, l, SITE_ATTN_PROBS), d_out = moelm_drop_ids(ids, l, SITE_ATTN_OUT),
                  d_act = moelm_drop_ids(ids, l, SITE_ACT), d_ffn = moelm_drop_ids(ids, l, SITE_FFN_OUT);
  const uint8_t *mask = m->any_pad ? m->d_pad : NULL;
  const gboolean pre = c->normalize_before;
  a->x_in = x_in;

  /* self-attention block */
  const MoelmAct *attn_in = x_in;
  if (pre) {
    o->layernorm_forward(be, a->n1, a->mean1, a->rstd1, x_in, W_PARAM(m, L->ln1_w), W_PARAM(m, L->ln1_b), N, C, eps);
    attn_in = a->n1;
  }
  o->linear_forward(be, a->qkv, attn_in, W_PARAM(m, L->qkv_w), W_PARAM(m, L->qkv_b), N, C, 3 * C);
  o->attention_forward(be, a->atty, a->att_saved, a->qkv, mask, B, T, C, c->heads, pa, &d_att);
  o->linear_forward(be, a->r1, a->atty, W_PARAM(m, L->out_w), W_PARAM(m, L->out_b), N, C, C);
  o->dropout_forward(be, a->r1, a->r1, (size_t)N * C, p, &d_out);
  o->add(be, a->r1, a->r1, x_in, (size_t)N * C);
  const MoelmAct *ffn_res = a->r1;
  if (!pre) {
    o->layernorm_forward(be, a->n1, a->mean1, a->rstd1, a->r1, W_PARAM(m, L->ln1_w), W_PARAM(m, L->ln1_b), N, C, eps);
    ffn_res = a->n1;
  }

  /* feed-forward block */
  const MoelmAct *ffn_in = ffn_res;
  if (pre) {
    o->layernorm_forward(be, a->n2, a->mean2, a->rstd2, a->r1, W_PARAM(m, L->ln2_w), W_PARAM(m, L->ln2_b), N, C, eps);
    ffn_in = a->n2;
  }
  if (L->moe) {
    moelm_moe_forward(m, l, a->moe, ffn_in, a->r2, N, training, ids, m->any_pad ? m->d_pad : NULL);
  } else if (L->moefied) { /* inference only: no dropout */
    moelm_moefied_forward(m, l, ffn_in, a->r2, N, m->any_pad ? m->d_pad : NULL);
  } else {
    o->linear_forward(be, a->fc1, ffn_in, W_PARAM(m, L->fc1_w), W_PARAM(m, L->fc1_b), N, C, F);
    o->activation_forward(be, c->activation, a->fcact, a->fc1, (size_t)N * F);
    o->dropout_forward(be, a->fcact, a->fcact, (size_t)N * F, pact, &d_act);
    o->linear_forward(be, a->r2, a->fcact, W_PARAM(m, L->fc2_w), W_PARAM(m, L->fc2_b), N, F, C);
    o->dropout_forward(be, a->r2, a->r2, (size_t)N * C, p, &d_ffn);
  }
  o->add(be, a->r2, a->r2, ffn_res, (size_t)N * C);
  if (!pre) {
    o->layernorm_forward(be, a->n2, a->mean2, a->rstd2, a->r2, W_PARAM(m, L->ln2_w), W_PARAM(m, L->ln2_b), N, C, eps);
    return a->n2;
  }
  return a->r2;
}

/* Backward of a dense FFN: dout (N,C) = dL/d dropout(fc2(...)); dffn_in (N,C) += dL/d ffn_in
 * (may alias dout: it is read first). */
static void dense_ffn_backward(MoelmModel *m, int l, int N, const MoelmStepIds *ids, const MoelmAct *ffn_in,
                               const MoelmAct *dout, MoelmAct *dffn_in)
{
  MoelmBackend *be = m->be;
  const struct moelm_backend_ops *o = be->ops;
  const MoelmModelConfig *c = &m->cfg;
  const LayerParams *L = &m->layers[l];
  const LayerActs *a = &m->acts[l];
  const int C = c->embed_dim, F = c->ffn_dim;
  const size_t NC = (size_t)N * C, NF = (size_t)N * F;
  const float p = ids ? (float)c->dropout : 0.0f;
  const float pact = ids ? (float)c->activation_dropout : 0.0f;
  MoelmDropoutIds d_act = moelm_drop_ids(ids, l, SITE_ACT), d_ffn = moelm_drop_ids(ids, l, SITE_FFN_OUT);
  MoelmAct *dy = m->datt; /* free until the attention backward */
  o->zero(be, dy, moelm_act_bytes(be, NC));
  o->dropout_backward(be, dy, dout, NC, p, &d_ffn);
  o->zero(be, m->dbig, moelm_act_bytes(be, NF));
  o->linear_backward(be, m->dbig, G_PARAM(m, L->fc2_w), G_PARAM(m, L->fc2_b), dy, a->fcact, W_PARAM(m, L->fc2_w), N, F,
                     C);
  o->zero(be, m->dbig2, moelm_act_bytes(be, NF));
  o->dropout_backward(be, m->dbig2, m->dbig, NF, pact, &d_act);
  o->zero(be, m->dbig, moelm_act_bytes(be, NF));
  o->activation_backward(be, c->activation, m->dbig, a->fc1, m->dbig2, NF);
  o->linear_backward(be, dffn_in, G_PARAM(m, L->fc1_w), G_PARAM(m, L->fc1_b), m->dbig, ffn_in, W_PARAM(m, L->fc1_w), N,
                     C, F);
}

/* Backward of one layer: on entry m->dx holds dL/d(layer output); on exit dL/d(x_in).
 * aux_coef: dL/d l_aux for an MoE layer. */
static void layer_backward(MoelmModel *m, int l, int B, int T, const MoelmStepIds *ids, double aux_coef)
{
  MoelmBackend *be = m->be;
  const struct moelm_backend_ops *o = be->ops;
  const MoelmModelConfig *c = &m->cfg;
  const LayerParams *L = &m->layers[l];
  const LayerActs *a = &m->acts[l];
  const int N = B * T, C = c->embed_dim;
  const size_t NC = (size_t)N * C;
  const float p = ids ? (float)c->dropout : 0.0f;
  const float pa = ids ? (float)c->attention_dropout : 0.0f;
  MoelmDropoutIds d_att = moelm_drop_ids(ids, l, SITE_ATTN_PROBS), d_out = moelm_drop_ids(ids, l, SITE_ATTN_OUT);
  const uint8_t *mask = m->any_pad ? m->d_pad : NULL;
  const gboolean pre = c->normalize_before;
  MoelmAct *dx = m->dx, *dtmp = m->dtmp;

  if (!pre) { /* out = LN2(r2): dx becomes dL/dr2 */
    o->zero(be, dtmp, moelm_act_bytes(be, NC));
    o->layernorm_backward(be, dtmp, G_PARAM(m, L->ln2_w), G_PARAM(m, L->ln2_b), dx, a->r2, W_PARAM(m, L->ln2_w),
                          a->mean2, a->rstd2, N, C);
    o->copy(be, dx, dtmp, moelm_act_bytes(be, NC));
  }
  /* r2 = ffn_res + ffn(ffn_in): dx (= dL/dr2) flows to ffn_res unchanged. Pre-norm: ffn_in =
   * LN2(r1), its gradient joins dx through LN2's backward. Post-norm: ffn_in = ffn_res = n1,
   * its gradient adds straight into dx = dL/dn1, then goes through LN1 to r1. */
  const MoelmAct *ffn_in = pre ? a->n2 : a->n1;
  MoelmAct *dffn_in = pre ? dtmp : dx;
  if (pre)
    o->zero(be, dtmp, moelm_act_bytes(be, NC));
  if (L->moe)
    moelm_moe_backward(m, l, a->moe, ffn_in, dx, dffn_in, N, ids, aux_coef);
  else
    dense_ffn_backward(m, l, N, ids, ffn_in, dx, dffn_in);
  if (pre) {
    o->layernorm_backward(be, dx, G_PARAM(m, L->ln2_w), G_PARAM(m, L->ln2_b), dtmp, a->r1, W_PARAM(m, L->ln2_w),
                          a->mean2, a->rstd2, N, C);
  } else {
    o->zero(be, dtmp, moelm_act_bytes(be, NC));
    o->layernorm_backward(be, dtmp, G_PARAM(m, L->ln1_w), G_PARAM(m, L->ln1_b), dx, a->r1, W_PARAM(m, L->ln1_w),
                          a->mean1, a->rstd1, N, C);
    o->copy(be, dx, dtmp, moelm_act_bytes(be, NC));
  }
  /* dx = dL/dr1; r1 = x_in + dropout(out_proj(atty)). */
  o->zero(be, dtmp, moelm_act_bytes(be, NC));
  o->dropout_backward(be, dtmp, dx, NC, p, &d_out);
  o->zero(be, m->datt, moelm_act_bytes(be, NC));
  o->linear_backward(be, m->datt, G_PARAM(m, L->out_w), G_PARAM(m, L->out_b), dtmp, a->atty, W_PARAM(m, L->out_w), N, C,
                     C);
  o->zero(be, m->dqkv, moelm_act_bytes(be, 3 * NC));
  o->attention_backward(be, m->dqkv, m->datt, a->qkv, a->att_saved, mask, B, T, C, c->heads, pa, &d_att);
  if (pre) {
    o->zero(be, dtmp, moelm_act_bytes(be, NC));
    o->linear_backward(be, dtmp, G_PARAM(m, L->qkv_w), G_PARAM(m, L->qkv_b), m->dqkv, a->n1, W_PARAM(m, L->qkv_w), N, C,
                       3 * C);
    o->layernorm_backward(be, dx, G_PARAM(m, L->ln1_w), G_PARAM(m, L->ln1_b), dtmp, a->x_in, W_PARAM(m, L->ln1_w),
                          a->mean1, a->rstd1, N, C);
  } else {
    o->linear_backward(be, dx, G_PARAM(m, L->qkv_w), G_PARAM(m, L->qkv_b), m->dqkv, a->x_in, W_PARAM(m, L->qkv_w), N, C,
                       3 * C);
  }
}

/* fairseq's MoECriterion combination of the layers' l_aux (sum or average). */
static double combined_gate_loss(const MoelmModel *m)
{
  double sum = 0;
  for (int l = 0; l < m->cfg.layers; l++)
    if (m->layers[l].moe)
      sum += m->moe_stats_host[(size_t)m->layers[l].moe_index * MOELM_ROUTE_N_STATS + MOELM_ROUTE_STAT_L_AUX];
  return m->cfg.moe_gate_loss_sum || m->n_moe == 0 ? sum : sum / m->n_moe;
}

static void copy_moe_stats(MoelmModel *m, int l)
{
  m->be->ops->to_host(m->be, m->moe_stats_host + (size_t)m->layers[l].moe_index * MOELM_ROUTE_N_STATS,
                      m->acts[l].moe->stats, MOELM_ROUTE_N_STATS * sizeof(double));
}

/* Embedding → layers → final norm → logits. Leaves logits (N,V) in m->logits. training: MoE
 * layers use the training capacity and noise (else eval semantics). */
static gboolean forward(MoelmModel *m, const MoelmBatch *batch, const MoelmStepIds *ids, gboolean training,
                        GError **error)
{
  const MoelmModelConfig *c = &m->cfg;
  const int B = batch->B, T = batch->T, N = B * T, C = c->embed_dim;
  if (T > c->max_positions) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG,
                "sequence of %d tokens exceeds the model's %d positions (--tokens-per-sample/--max-target-positions)",
                T, c->max_positions);
    return FALSE;
  }
  if (!moelm_model_ensure_workspace(m, N, error) || !moelm_model_ensure_attention(m, B, T, error) ||
      !moelm_moefied_ensure(m, N, error))
    return FALSE;
  MoelmBackend *be = m->be;
  moelm_model_upload_batch(m, batch);
  if (m->cfg.moe_route_token0 > 0 && !moelm_moe_route_rows(m, batch->src, (size_t)T, B, T, error))
    return FALSE; /* sequence routing: each row by its first token */
  moelm_model_embed(m, m->x0, m->d_src, m->d_pos, N);
  MoelmDropoutIds d_emb = moelm_drop_ids(ids, EMBED_LAYER, 0);
  be->ops->dropout_forward(be, m->x0, m->x0, (size_t)N * C, ids ? (float)c->dropout : 0.0f, &d_emb);
  const MoelmAct *x = m->x0;
  for (int l = 0; l < c->layers; l++) {
    x = layer_forward(m, l, x, B, T, ids, training);
    if (m->checkpoint_activations) { /* the next layer overwrites these activations: keep the output */
      be->ops->copy(be, m->layer_out[l], x, moelm_act_bytes(be, (size_t)N * C));
      x = m->layer_out[l];
      if (m->layers[l].moe) /* the MoE layers share one set of buffers too */
        copy_moe_stats(m, l);
    }
  }
  /* the gate metadata of every MoE layer: one small copy each, after the whole forward */
  for (int l = 0; l < c->layers && !m->checkpoint_activations; l++)
    if (m->layers[l].moe)
      copy_moe_stats(m, l);
  m->last_gate_loss = combined_gate_loss(m);
  if (m->has_final_norm) {
    be->ops->layernorm_forward(be, m->xf, m->meanf, m->rstdf, x, W_PARAM(m, m->lnf_w), W_PARAM(m, m->lnf_b), N, C,
                               1e-5f);
  } else {
    be->ops->copy(be, m->xf, x, moelm_act_bytes(be, (size_t)N * C));
  }
  be->ops->linear_forward(be, m->logits, m->xf, W_PARAM(m, m->out_proj), NULL, N, C, c->vocab_size);
  return TRUE;
}

/* Turn per-token losses (backend, N) into host log-probs and row sums. */
static void collect(MoelmModel *m, const MoelmBatch *batch, float *tok_lprobs, float *row_lprobs)
{
  const int B = batch->B, T = batch->T, N = B * T;
  float *host = tok_lprobs ? tok_lprobs : g_new(float, N);
  m->be->ops->to_host(m->be, host, m->losses, (size_t)N * sizeof(float));
  for (int i = 0; i < N; i++)
    host[i] = batch->tgt[i] == MOELM_PAD ? 0.0f : -host[i];
  if (row_lprobs)
    for (int b = 0; b < B; b++) {
      double s = 0.0; /* row sums in double: long rows of small terms */
      for (int t = 0; t < T; t++)
        s += host[b * T + t];
      row_lprobs[b] = (float)s;
    }
  if (host != tok_lprobs)
    g_free(host);
}

gboolean moelm_model_score(MoelmModel *m, const MoelmBatch *batch, const MoelmStepIds *ids, float *tok_lprobs,
                           float *row_lprobs, GError **error)
{
  if (!forward(m, batch, ids, ids != NULL, error))
    return FALSE;
  const int N = batch->B * batch->T;
  m->be->ops->cross_entropy(m->be, m->losses, m->logits, m->d_tgt, NULL, N, m->cfg.vocab_size, MOELM_PAD);
  collect(m, batch, tok_lprobs, row_lprobs);
  return moelm_backend_check(m->be, NULL, error); /* a failed device op: the scores are garbage */
}

/* Add the last (training) forward's gate metadata to the running sums. */
static void accumulate_moe_stats(MoelmModel *m)
{
  for (int l = 0; l < m->cfg.layers; l++) {
    if (!m->layers[l].moe)
      continue;
    const double *st = m->moe_stats_host + (size_t)m->layers[l].moe_index * MOELM_ROUTE_N_STATS;
    MoeStatsAcc *acc = &m->moe_acc[m->layers[l].moe_index];
    acc->l_aux += st[MOELM_ROUTE_STAT_L_AUX];
    acc->entropy += st[MOELM_ROUTE_STAT_ENTROPY];
    acc->overflow1 += st[MOELM_ROUTE_STAT_OVERFLOW1];
    acc->overflow2 += st[MOELM_ROUTE_STAT_OVERFLOW2];
    acc->unused1 += st[MOELM_ROUTE_STAT_UNUSED1];
    acc->balance_top1 += st[MOELM_ROUTE_STAT_BALANCE_TOP1];
    acc->balance_bottom1 += st[MOELM_ROUTE_STAT_BALANCE_BOTTOM1];
    acc->n++;
  }
}

int moelm_model_moe_layers(const MoelmModel *m) { return m->n_moe; }

void moelm_model_set_grad_ready(MoelmModel *m, MoelmGradReadyFunc fn, void *data)
{
  m->grad_ready = fn;
  m->grad_ready_data = data;
}

void moelm_model_replay_grad_ready(const MoelmModel *m, MoelmGradReadyFunc fn, void *data)
{
  for (int l = m->cfg.layers - 1; l >= 0; l--)
    fn(data, m->layers[l].begin, m->layers[l].end - m->layers[l].begin);
}

double moelm_model_last_gate_loss(const MoelmModel *m) { return m->last_gate_loss; }

int64_t moelm_model_moe_stats_take(MoelmModel *m, MoelmMoeLayerStats *out)
{
  int64_t n = 0;
  for (int l = 0; l < m->cfg.layers; l++) {
    if (!m->layers[l].moe)
      continue;
    MoeStatsAcc *acc = &m->moe_acc[m->layers[l].moe_index];
    MoelmMoeLayerStats *st = &out[m->layers[l].moe_index];
    const double k = acc->n > 0 ? 1.0 / (double)acc->n : 0.0;
    st->layer = l;
    st->gate_loss = acc->l_aux * k;
    st->entropy = acc->entropy * k;
    st->overflow_expert1 = acc->overflow1 * k;
    st->overflow_expert2 = acc->overflow2 * k;
    st->unused_expert1 = acc->unused1 * k;
    st->expert1_balance_top = acc->balance_top1 * k;
    st->expert1_balance_bottom = acc->balance_bottom1 * k;
    n = acc->n;
    memset(acc, 0, sizeof *acc);
  }
  return n;
}

/* Keep row `row` of a gradient table untouched by the embedding lookup's backward (fairseq's
 * nn.Embedding(padding_idx) gives the pad row no gradient from the lookup). */
static void embedding_backward_skip_pad(MoelmModel *m, float *dwte, float *dwpe, int N, float scale)
{
  MoelmBackend *be = m->be;
  const int C = m->cfg.embed_dim;
  const size_t row = (size_t)MOELM_PAD * C, bytes = (size_t)C * sizeof(float);
  be->ops->copy(be, m->save_row, dwte + row, bytes);
  if (dwpe)
    be->ops->copy(be, m->save_row_pe, dwpe + row, bytes);
  be->ops->embedding_backward(be, dwte, dwpe, m->dx, m->d_src, m->d_pos, N, C, scale);
  be->ops->copy(be, dwte + row, m->save_row, bytes);
  if (dwpe)
    be->ops->copy(be, dwpe + row, m->save_row_pe, bytes);
}

gboolean moelm_model_train_step(MoelmModel *m, const MoelmBatch *batch, const MoelmStepIds *ids,
                                const float *row_weights, float *tok_lprobs, float *row_lprobs, GError **error)
{
  if (m->cfg.moefy_experts > 0) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_UNSUPPORTED,
                "a moefied model (moelm moefy) is for inference only: train the dense model instead");
    return FALSE;
  }
  if (!forward(m, batch, ids, TRUE, error))
    return FALSE;
  accumulate_moe_stats(m);
  MoelmBackend *be = m->be;
  const struct moelm_backend_ops *o = be->ops;
  const MoelmModelConfig *c = &m->cfg;
  const int B = batch->B, T = batch->T, N = B * T, C = c->embed_dim, V = c->vocab_size;

  /* dL/dlogp(token) = -w_row; the fused op wants dL/dloss = +w_row (loss = -logp). The
   * weighted token count is the sample size the gate loss is scaled by. */
  float *dloss = g_new(float, N);
  double sample_size = 0;
  for (int b = 0; b < B; b++)
    for (int t = 0; t < T; t++) {
      const gboolean pad = batch->tgt[b * T + t] == MOELM_PAD;
      dloss[b * T + t] = pad ? 0.0f : row_weights[b];
      sample_size += pad ? 0.0 : row_weights[b];
    }
  o->to_device(be, m->dloss, dloss, (size_t)N * sizeof(float));
  g_free(dloss);
  o->cross_entropy(be, m->losses, m->logits, m->d_tgt, m->dloss, N, V, MOELM_PAD); /* logits := dlogits */
  collect(m, batch, tok_lprobs, row_lprobs);

  const size_t NC = (size_t)N * C;
  o->zero(be, m->dx, moelm_act_bytes(be, NC));
  o->linear_backward(be, m->dx, G_PARAM(m, m->out_proj), NULL, m->logits, m->xf, W_PARAM(m, m->out_proj), N, C, V);
  const MoelmAct *x_last = c->layers > 0 ? (c->normalize_before ? m->acts[c->layers - 1].r2 : m->acts[c->layers - 1].n2)
                                      : m->x0;
  if (m->has_final_norm) {
    o->zero(be, m->dtmp, moelm_act_bytes(be, NC));
    o->layernorm_backward(be, m->dtmp, G_PARAM(m, m->lnf_w), G_PARAM(m, m->lnf_b), m->dx, x_last, W_PARAM(m, m->lnf_w),
                          m->meanf, m->rstdf, N, C);
    o->copy(be, m->dx, m->dtmp, moelm_act_bytes(be, NC));
  }
  /* fairseq's MoECriterion: loss += wt * sample_size * (sum | average of the layers' l_aux) */
  const double aux_coef = c->moe_gate_loss_wt * sample_size / (c->moe_gate_loss_sum || m->n_moe == 0 ? 1 : m->n_moe);
  for (int l = c->layers - 1; l >= 0; l--) {
    /* checkpointing: the shared activations hold the last layer's; the others are recomputed
     * (same inputs, same dropout streams: the same values) */
    if (m->checkpoint_activations && l < c->layers - 1)
      layer_forward(m, l, l == 0 ? m->x0 : m->layer_out[l - 1], B, T, ids, TRUE);
    layer_backward(m, l, B, T, ids, aux_coef);
    if (m->grad_ready)
      m->grad_ready(m->grad_ready_data, m->layers[l].begin, m->layers[l].end - m->layers[l].begin);
  }
  /* embedding dropout, then the lookup */
  MoelmDropoutIds d_emb = moelm_drop_ids(ids, EMBED_LAYER, 0);
  o->zero(be, m->dtmp, moelm_act_bytes(be, NC));
  o->dropout_backward(be, m->dtmp, m->dx, NC, ids ? (float)c->dropout : 0.0f, &d_emb);
  o->copy(be, m->dx, m->dtmp, moelm_act_bytes(be, NC));
  const float scale = c->scale_embedding ? sqrtf((float)C) : 1.0f;
  embedding_backward_skip_pad(m, G_PARAM(m, m->wte), c->learned_pos ? G_PARAM(m, m->wpe) : NULL, N, scale);
  return moelm_backend_check(be, NULL, error);
}
