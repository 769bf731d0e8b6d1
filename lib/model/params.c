/* moelm — the decoder's parameter arena: fairseq names, layout, initialisation. */
#include "config.h"

#include <math.h>
#include <string.h>

#include "model-private.h"
#include "moelm/dictionary.h"
#include "moelm/errors.h"
#include "moelm/rng.h"

static size_t add_param(MoelmModel *m, const char *name, int64_t d0, int64_t d1)
{
  MoelmParam *p = g_new0(MoelmParam, 1);
  p->name = g_strdup(name);
  p->offset = m->n_params;
  p->ndim = d1 > 0 ? 2 : 1;
  p->shape[0] = d0;
  p->shape[1] = d1 > 0 ? d1 : 0;
  p->numel = (size_t)d0 * (size_t)(d1 > 0 ? d1 : 1);
  p->expert = -1;
  m->n_params += p->numel;
  g_ptr_array_add(m->tensors, p);
  g_hash_table_insert(m->by_name, p->name, p);
  return p->offset;
}

static void free_param(gpointer data)
{
  MoelmParam *p = data;
  g_free(p->name);
  g_free(p);
}

/* fairseq's MoE layer in place of fc1/fc2: the gate, and (unless they go to the end of the
 * arena, expert parallel) the experts this rank holds, in order. */
static void layout_moe_gate(MoelmModel *m, int l, LayerParams *L)
{
  const MoelmModelConfig *c = &m->cfg;
  char name[160];
  L->moe = TRUE;
  L->moe_index = m->n_moe++;
  g_snprintf(name, sizeof name, "decoder.layers.%d.moe_layer.gate.wg.weight", l);
  L->gate_w = add_param(m, name, c->moe_experts, c->embed_dim);
}

static void layout_moe_experts(MoelmModel *m, int l, LayerParams *L)
{
  const MoelmModelConfig *c = &m->cfg;
  const int C = c->embed_dim, Fe = moelm_model_config_expert_ffn_dim(c);
  char name[160];
  for (int j = 0; j < m->local_experts; j++) {
    const int e = m->first_expert + j; /* fairseq's (global) expert number */
    static const char *const parts[] = {"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"};
    const int64_t shapes[4][2] = {{Fe, C}, {Fe, 0}, {C, Fe}, {C, 0}};
    for (int k = 0; k < 4; k++) {
      g_snprintf(name, sizeof name, "decoder.layers.%d.moe_layer.experts.%d.%s", l, e, parts[k]);
      const size_t off = add_param(m, name, shapes[k][0], shapes[k][1]);
      ((MoelmParam *)g_ptr_array_index(m->tensors, m->tensors->len - 1))->expert = e;
      if (j == 0 && k == 0)
        L->experts = off;
    }
  }
  L->expert_stride = (size_t)Fe * C + Fe + (size_t)C * Fe + C;
}

/* A moefied FFN (docs/moefy.md) in place of fc1/fc2: every expert's fc1 rows, then their
 * biases, then their fc2 blocks (so that fc1 over all experts is one (F, C) linear, for the
 * groundtruth selector), the one fc2 bias, and the selector's router. */
static void layout_moefied(MoelmModel *m, int l, LayerParams *L)
{
  const MoelmModelConfig *c = &m->cfg;
  const int C = c->embed_dim, E = c->moefy_experts, Fe = c->ffn_dim / E, H = c->moefy_router_dim;
  char name[160];
  L->moefied = TRUE;
  static const char *const parts[] = {"fc1.weight", "fc1.bias", "fc2.weight"};
  const int64_t shapes[3][2] = {{Fe, C}, {Fe, 0}, {C, Fe}};
  size_t *first[3] = {&L->fc1_w, &L->fc1_b, &L->fc2_w};
  for (int k = 0; k < 3; k++)
    for (int e = 0; e < E; e++) {
      g_snprintf(name, sizeof name, "decoder.layers.%d.moefied.experts.%d.%s", l, e, parts[k]);
      const size_t off = add_param(m, name, shapes[k][0], shapes[k][1]);
      if (e == 0)
        *first[k] = off;
    }
  g_snprintf(name, sizeof name, "decoder.layers.%d.moefied.fc2.bias", l);
  L->fc2_b = add_param(m, name, C, 0);
  if (c->moefy_select == MOELM_MOEFY_SELECT_SIMILARITY) {
    g_snprintf(name, sizeof name, "decoder.layers.%d.moefied.router.weight", l);
    L->router_w = add_param(m, name, E, C);
  } else if (c->moefy_select == MOELM_MOEFY_SELECT_MLP) {
    const char *const rparts[] = {"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"};
    const int64_t rshapes[4][2] = {{H, C}, {H, 0}, {E, H}, {E, 0}};
    size_t *roff[4] = {&L->router_w, &L->router_b, &L->router2_w, &L->router2_b};
    for (int k = 0; k < 4; k++) {
      g_snprintf(name, sizeof name, "decoder.layers.%d.moefied.router.%s", l, rparts[k]);
      *roff[k] = add_param(m, name, rshapes[k][0], rshapes[k][1]);
    }
  }
}

static void layout(MoelmModel *m)
{
  const MoelmModelConfig *c = &m->cfg;
  const int C = c->embed_dim, F = c->ffn_dim, V = c->vocab_size;
  char name[128];
  m->wte = add_param(m, "decoder.embed_tokens.weight", V, C);
  if (c->learned_pos)
    m->wpe = add_param(m, "decoder.embed_positions.weight", c->max_positions + MOELM_PAD + 1, C);
  m->layers = g_new0(LayerParams, c->layers > 0 ? c->layers : 1);
  for (int l = 0; l < c->layers; l++) {
    LayerParams *L = &m->layers[l];
    L->begin = m->n_params;
#define P(field, suffix, d0, d1)                                                   \
  do {                                                                             \
    g_snprintf(name, sizeof name, "decoder.layers.%d.%s", l, suffix);              \
    L->field = add_param(m, name, d0, d1);                                         \
  } while (0)
    P(qkv_w, "self_attn.q_proj.weight", C, C);
    g_snprintf(name, sizeof name, "decoder.layers.%d.self_attn.k_proj.weight", l);
    add_param(m, name, C, C);
    g_snprintf(name, sizeof name, "decoder.layers.%d.self_attn.v_proj.weight", l);
    add_param(m, name, C, C);
    P(qkv_b, "self_attn.q_proj.bias", C, 0);
    g_snprintf(name, sizeof name, "decoder.layers.%d.self_attn.k_proj.bias", l);
    add_param(m, name, C, 0);
    g_snprintf(name, sizeof name, "decoder.layers.%d.self_attn.v_proj.bias", l);
    add_param(m, name, C, 0);
    P(out_w, "self_attn.out_proj.weight", C, C);
    P(out_b, "self_attn.out_proj.bias", C, 0);
    P(ln1_w, "self_attn_layer_norm.weight", C, 0);
    P(ln1_b, "self_attn_layer_norm.bias", C, 0);
    if (moelm_model_config_is_moe_layer(c, l)) {
      layout_moe_gate(m, l, L);
      if (m->expert_world <= 1)
        layout_moe_experts(m, l, L);
    } else if (c->moefy_experts > 0) {
      layout_moefied(m, l, L);
    } else {
      P(fc1_w, "fc1.weight", F, C);
      P(fc1_b, "fc1.bias", F, 0);
      P(fc2_w, "fc2.weight", C, F);
      P(fc2_b, "fc2.bias", C, 0);
    }
    P(ln2_w, "final_layer_norm.weight", C, 0);
    P(ln2_b, "final_layer_norm.bias", C, 0);
#undef P
    L->end = m->n_params;
  }
  m->has_final_norm = c->normalize_before && c->final_norm;
  if (m->has_final_norm) {
    m->lnf_w = add_param(m, "decoder.layer_norm.weight", C, 0);
    m->lnf_b = add_param(m, "decoder.layer_norm.bias", C, 0);
  }
  m->out_proj = c->share_embed ? m->wte : add_param(m, "decoder.output_projection.weight", V, C);
  if (c->gate_experts > 0) { /* fairseq's MeanPoolGatingNetwork, outside the decoder */
    m->gate_fc1_w = add_param(m, "gating_network.fc1.weight", C, C);
    m->gate_fc1_b = add_param(m, "gating_network.fc1.bias", C, 0);
    m->gate_fc2_w = add_param(m, "gating_network.fc2.weight", c->gate_experts, C);
    m->gate_fc2_b = add_param(m, "gating_network.fc2.bias", c->gate_experts, 0);
  }
  /* expert parallel: this rank's experts after everything the ranks share, so the gradient
   * all-reduce covers one range [0, n_shared) and leaves the experts alone */
  m->n_shared = m->n_params;
  if (m->expert_world > 1)
    for (int l = 0; l < c->layers; l++)
      if (m->layers[l].moe)
        layout_moe_experts(m, l, &m->layers[l]);
}

GPtrArray *moelm_model_param_layout(const MoelmModelConfig *cfg, GError **error)
{
  if (!moelm_model_config_validate(cfg, error))
    return NULL;
  MoelmModel m = {0}; /* the layout alone: no backend, no arena, every expert */
  moelm_model_config_copy(&m.cfg, cfg);
  m.local_experts = cfg->moe_experts;
  m.first_expert = 0;
  m.tensors = g_ptr_array_new_with_free_func(free_param);
  m.by_name = g_hash_table_new(g_str_hash, g_str_equal);
  layout(&m);
  g_hash_table_destroy(m.by_name);
  g_free(m.layers);
  moelm_model_config_clear(&m.cfg);
  return m.tensors;
}

MoelmModel *moelm_model_new(const MoelmModelConfig *cfg, MoelmBackend *be, GError **error)
{
  return moelm_model_new_placed(cfg, be, NULL, error);
}

MoelmModel *moelm_model_new_placed(const MoelmModelConfig *cfg, MoelmBackend *be, MoelmComm *expert_comm,
                                   GError **error)
{
  if (!moelm_model_config_validate(cfg, error))
    return NULL;
  const int W = moelm_comm_size(expert_comm);
  if (W > 1 && cfg->moe_freq > 0 && cfg->moe_experts % W != 0) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG,
                "--moe-expert-parallel: %d experts cannot be split evenly over %d ranks (--moe-expert-count must be "
                "a multiple of the world size)",
                cfg->moe_experts, W);
    return NULL;
  }
  MoelmModel *m = g_new0(MoelmModel, 1);
  moelm_model_config_copy(&m->cfg, cfg);
  m->be = be;
  m->expert_comm = cfg->moe_freq > 0 && W > 1 ? expert_comm : NULL;
  m->expert_world = m->expert_comm ? W : 1;
  m->local_experts = cfg->moe_experts / m->expert_world;
  m->first_expert = moelm_comm_rank(m->expert_comm) * m->local_experts;
  m->tensors = g_ptr_array_new_with_free_func(free_param);
  m->by_name = g_hash_table_new(g_str_hash, g_str_equal);
  layout(m);
  m->moe_acc = g_new0(MoeStatsAcc, MAX(m->n_moe, 1));
  m->moe_stats_host = g_new0(double, (size_t)MAX(m->n_moe, 1) * MOELM_ROUTE_N_STATS);
  const size_t bytes = m->n_params * sizeof(float);
  m->params = be->ops->alloc(be, bytes, error);
  m->grads = m->params ? be->ops->alloc(be, bytes, error) : NULL;
  if (m->grads == NULL) {
    moelm_model_free(m);
    return NULL;
  }
  be->ops->zero(be, m->params, bytes);
  be->ops->zero(be, m->grads, bytes);
  if (!cfg->learned_pos) {
    const size_t table = ((size_t)cfg->max_positions + MOELM_PAD + 1) * (size_t)cfg->embed_dim; /* (P, C) */
    float *host = g_try_new(float, table);
    gboolean ok = host != NULL;
    if (!ok)
      g_set_error(error, MOELM_ERROR, MOELM_ERROR_NOMEM, "cannot allocate the %zu-float position table", table);
    ok = ok && moelm_sinusoidal_positions(host, cfg->max_positions, cfg->embed_dim, MOELM_PAD, error);
    m->sinusoid = ok ? be->ops->alloc(be, table * sizeof(float), error) : NULL;
    if (m->sinusoid)
      be->ops->to_device(be, m->sinusoid, host, table * sizeof(float));
    g_free(host);
    if (m->sinusoid == NULL) {
      moelm_model_free(m);
      return NULL;
    }
  }
  return m;
}

static void free_layer_acts(MoelmModel *m, LayerActs *a)
{
  void *bufs[] = {&a->n1, &a->mean1, &a->rstd1, &a->qkv, &a->att_saved, &a->atty, &a->r1,
                  &a->n2, &a->mean2, &a->rstd2, &a->fc1, &a->fcact, &a->r2};
  for (gsize i = 0; i < G_N_ELEMENTS(bufs); i++)
    moelm_model_release(m, bufs[i]);
  if (a->moe) {
    moelm_moe_acts_free(m, a->moe);
    g_clear_pointer(&a->moe, g_free);
  }
}

static void free_workspace(MoelmModel *m)
{
  if (m->acts) {
    /* checkpointing: every layer's entry points at layer 0's buffers */
    const int owners = m->checkpoint_activations ? MIN(m->cfg.layers, 1) : m->cfg.layers;
    for (int l = 0; l < owners; l++)
      free_layer_acts(m, &m->acts[l]);
    g_clear_pointer(&m->acts, g_free);
  }
  if (m->layer_out) {
    for (int l = 0; l < m->cfg.layers; l++)
      moelm_model_release(m, &m->layer_out[l]);
    g_clear_pointer(&m->layer_out, g_free);
  }
  void *bufs[] = {&m->d_src, &m->d_tgt,  &m->d_pos, &m->d_pad, &m->x0,   &m->xf,    &m->meanf,    &m->rstdf,
                  &m->logits, &m->losses, &m->dloss, &m->dx,    &m->dtmp, &m->dbig,  &m->dbig2,    &m->dqkv,
                  &m->datt,  &m->save_row, &m->save_row_pe};
  for (gsize i = 0; i < G_N_ELEMENTS(bufs); i++)
    moelm_model_release(m, bufs[i]);
  moelm_moe_workspace_free(m);
  moelm_moefied_free(m);
  m->max_rows = 0;
  m->att_cap = 0;
}

void moelm_model_free(MoelmModel *m)
{
  if (m == NULL)
    return;
  free_workspace(m);
  if (m->be) {
    m->be->ops->free(m->be, m->params);
    m->be->ops->free(m->be, m->grads);
    m->be->ops->free(m->be, m->sinusoid);
  }
  g_free(m->layers);
  g_free(m->moe_acc);
  g_free(m->moe_stats_host);
  if (m->by_name)
    g_hash_table_destroy(m->by_name);
  if (m->tensors)
    g_ptr_array_free(m->tensors, TRUE);
  moelm_model_config_clear(&m->cfg);
  g_free(m);
}

gboolean moelm_model_ensure_workspace(MoelmModel *m, int N, GError **error)
{
  if (N <= m->max_rows)
    return TRUE;
  free_workspace(m);
  const MoelmModelConfig *c = &m->cfg;
  const size_t C = c->embed_dim, F = c->ffn_dim, V = c->vocab_size, n = (size_t)N, A = m->be->act_size;
  /* the FFN backward scratch also holds the dispatched rows of an MoE layer (K*N, Fe) */
  const size_t big = m->n_moe > 0 ? MAX(n * F, (size_t)c->moe_top_k * n * moelm_model_config_expert_ffn_dim(c)) : n * F;
  gboolean ok = TRUE;
  moelm_model_alloc(m, &m->d_src, n, sizeof(int32_t), &ok, error);
  moelm_model_alloc(m, &m->d_tgt, n, sizeof(int32_t), &ok, error);
  moelm_model_alloc(m, &m->d_pos, n, sizeof(int32_t), &ok, error);
  moelm_model_alloc(m, &m->d_pad, n, sizeof(uint8_t), &ok, error);
  moelm_model_alloc(m, &m->x0, n * C, A, &ok, error);
  moelm_model_alloc(m, &m->xf, n * C, A, &ok, error);
  moelm_model_alloc(m, &m->meanf, n, sizeof(float), &ok, error);
  moelm_model_alloc(m, &m->rstdf, n, sizeof(float), &ok, error);
  moelm_model_alloc(m, &m->logits, n * V, A, &ok, error);
  moelm_model_alloc(m, &m->losses, n, sizeof(float), &ok, error);
  moelm_model_alloc(m, &m->dloss, n, sizeof(float), &ok, error);
  moelm_model_alloc(m, &m->dx, n * C, A, &ok, error);
  moelm_model_alloc(m, &m->dtmp, n * C, A, &ok, error);
  moelm_model_alloc(m, &m->dbig, big, A, &ok, error);
  moelm_model_alloc(m, &m->dbig2, big, A, &ok, error);
  moelm_model_alloc(m, &m->dqkv, n * 3 * C, A, &ok, error);
  moelm_model_alloc(m, &m->datt, n * C, A, &ok, error);
  moelm_model_alloc(m, &m->save_row, C, sizeof(float), &ok, error);
  moelm_model_alloc(m, &m->save_row_pe, C, sizeof(float), &ok, error);
  m->acts = g_new0(LayerActs, c->layers > 0 ? c->layers : 1); /* att_saved: ensure_attention */
  /* checkpointing: one set of activations (with the dense FFN's and the MoE's buffers, as the
   * layers need) that every layer uses in turn, and each layer's output */
  const gboolean shared = m->checkpoint_activations;
  if (shared) {
    m->layer_out = g_new0(MoelmAct *, c->layers > 0 ? c->layers : 1);
    for (int l = 0; l < c->layers; l++)
      moelm_model_alloc(m, &m->layer_out[l], n * C, A, &ok, error);
  }
  for (int l = 0; l < (shared ? MIN(c->layers, 1) : c->layers); l++) {
    LayerActs *a = &m->acts[l];
    moelm_model_alloc(m, &a->n1, n * C, A, &ok, error);
    moelm_model_alloc(m, &a->mean1, n, sizeof(float), &ok, error);
    moelm_model_alloc(m, &a->rstd1, n, sizeof(float), &ok, error);
    moelm_model_alloc(m, &a->qkv, n * 3 * C, A, &ok, error);
    moelm_model_alloc(m, &a->atty, n * C, A, &ok, error);
    moelm_model_alloc(m, &a->r1, n * C, A, &ok, error);
    moelm_model_alloc(m, &a->n2, n * C, A, &ok, error);
    moelm_model_alloc(m, &a->mean2, n, sizeof(float), &ok, error);
    moelm_model_alloc(m, &a->rstd2, n, sizeof(float), &ok, error);
    moelm_model_alloc(m, &a->r2, n * C, A, &ok, error);
    if (m->layers[l].moe || (shared && m->n_moe > 0)) {
      a->moe = g_new0(MoeActs, 1);
      ok = ok && moelm_moe_acts_alloc(m, a->moe, N, error);
    }
    if (!m->layers[l].moefied && (!m->layers[l].moe || (shared && m->n_moe < c->layers))) {
      /* (moefied layers use the shared m->mf) */
      moelm_model_alloc(m, &a->fc1, n * F, A, &ok, error);
      moelm_model_alloc(m, &a->fcact, n * F, A, &ok, error);
    }
  }
  for (int l = 1; shared && l < c->layers; l++)
    m->acts[l] = m->acts[0];
  ok = ok && moelm_moe_workspace_alloc(m, N, error) && moelm_moefied_ensure(m, N, error);
  if (!ok) {
    free_workspace(m);
    return FALSE;
  }
  m->max_rows = N;
  return TRUE;
}

/* ---- accessors ---------------------------------------------------------------------- */
const MoelmModelConfig *moelm_model_get_config(const MoelmModel *m) { return &m->cfg; }
MoelmBackend *moelm_model_backend(const MoelmModel *m) { return m->be; }
size_t moelm_model_num_params(const MoelmModel *m) { return m->n_params; }
guint moelm_model_n_tensors(const MoelmModel *m) { return m->tensors->len; }
const MoelmParam *moelm_model_tensor(const MoelmModel *m, guint i) { return g_ptr_array_index(m->tensors, i); }
const MoelmParam *moelm_model_find(const MoelmModel *m, const char *name)
{
  return g_hash_table_lookup(m->by_name, name);
}
float *moelm_model_params(MoelmModel *m) { return m->params; }
float *moelm_model_grads(MoelmModel *m) { return m->grads; }
size_t moelm_model_shared_params(const MoelmModel *m) { return m->n_shared; }

void moelm_model_set_checkpoint_activations(MoelmModel *m, gboolean on)
{
  if (on == m->checkpoint_activations)
    return;
  free_workspace(m); /* laid out again at the next call */
  m->checkpoint_activations = on;
}
int moelm_model_expert_world(const MoelmModel *m) { return m->expert_world; }
int moelm_model_local_experts(const MoelmModel *m) { return m->local_experts; }
int moelm_model_first_expert(const MoelmModel *m) { return m->first_expert; }

void moelm_model_zero_grad(MoelmModel *m) { m->be->ops->zero(m->be, m->grads, m->n_params * sizeof(float)); }

/* ---- initialisation (fairseq's, with Philox draws) ----------------------------------- */
static void init_normal(float *w, size_t n, float std, MoelmRng *rng)
{
  for (size_t i = 0; i < n; i++)
    w[i] = std * moelm_rng_next_normal(rng);
}

static void init_uniform(float *w, size_t n, float bound, MoelmRng *rng)
{
  for (size_t i = 0; i < n; i++)
    w[i] = bound * (2.0f * moelm_rng_next_float(rng) - 1.0f);
}

static void init_xavier(float *w, int fan_out, int fan_in, float gain, MoelmRng *rng)
{
  init_uniform(w, (size_t)fan_out * fan_in, gain * sqrtf(6.0f / (float)(fan_in + fan_out)), rng);
}

void moelm_model_init_params(MoelmModel *m, uint64_t seed)
{
  const MoelmModelConfig *c = &m->cfg;
  const int C = c->embed_dim, F = c->ffn_dim, V = c->vocab_size;
  float *h = g_new0(float, m->n_params); /* host staging, uploaded once */
  MoelmRng rng;
  moelm_rng_init(&rng, seed, 0x696e6974u /* "init" */, 0);
  const float emb_std = 1.0f / sqrtf((float)C);
  init_normal(h + m->wte, (size_t)V * C, emb_std, &rng);
  memset(h + m->wte + (size_t)MOELM_PAD * C, 0, C * sizeof(float));
  if (c->learned_pos) {
    init_normal(h + m->wpe, (size_t)(c->max_positions + MOELM_PAD + 1) * C, emb_std, &rng);
    memset(h + m->wpe + (size_t)MOELM_PAD * C, 0, C * sizeof(float));
  }
  for (int l = 0; l < c->layers; l++) {
    const LayerParams *L = &m->layers[l];
    for (int k = 0; k < 3; k++) /* q, k, v: xavier with gain 1/sqrt(2) (fairseq qkv_same_dim) */
      init_xavier(h + L->qkv_w + (size_t)k * C * C, C, C, (float)M_SQRT1_2, &rng);
    init_uniform(h + L->qkv_b, 3 * (size_t)C, 1.0f / sqrtf((float)C), &rng); /* nn.Linear default */
    init_xavier(h + L->out_w, C, C, 1.0f, &rng);
    if (L->moe) {
      /* wg: nn.Linear's default (fairseq.modules.linear.Linear); experts as the dense FFN */
      const int E = c->moe_experts, Fe = moelm_model_config_expert_ffn_dim(c);
      init_uniform(h + L->gate_w, (size_t)E * C, 1.0f / sqrtf((float)C), &rng);
      /* every expert is drawn in order, so each rank's experts get the values a single
       * process would give them; other ranks' experts are drawn into a scratch */
      float *other = m->expert_world > 1 ? g_new(float, (size_t)Fe * C) : NULL;
      for (int e = 0; e < E; e++) {
        const int j = e - m->first_expert;
        const gboolean mine = j >= 0 && j < m->local_experts;
        init_xavier(mine ? h + EXPERT_FC1_W(L, j) : other, Fe, C, 1.0f, &rng);
        init_xavier(mine ? h + EXPERT_FC2_W(L, j, C, Fe) : other, C, Fe, 1.0f, &rng);
      }
      g_free(other);
    } else {
      init_xavier(h + L->fc1_w, F, C, 1.0f, &rng);
      init_xavier(h + L->fc2_w, C, F, 1.0f, &rng);
    }
    for (int i = 0; i < C; i++)
      h[L->ln1_w + i] = h[L->ln2_w + i] = 1.0f;
  }
  if (m->has_final_norm)
    for (int i = 0; i < C; i++)
      h[m->lnf_w + i] = 1.0f;
  if (!c->share_embed)
    init_normal(h + m->out_proj, (size_t)V * C, emb_std, &rng);
  if (c->gate_experts > 0) { /* nn.Linear's default init: uniform(+-1/sqrt(fan_in)) */
    const float bound = 1.0f / sqrtf((float)C);
    init_uniform(h + m->gate_fc1_w, (size_t)C * C, bound, &rng);
    init_uniform(h + m->gate_fc1_b, (size_t)C, bound, &rng);
    init_uniform(h + m->gate_fc2_w, (size_t)c->gate_experts * C, bound, &rng);
    init_uniform(h + m->gate_fc2_b, (size_t)c->gate_experts, bound, &rng);
  }
  m->be->ops->to_device(m->be, m->params, h, m->n_params * sizeof(float));
  g_free(h);
}

gboolean moelm_model_ensure_attention(MoelmModel *m, int B, int T, GError **error)
{
  MoelmBackend *be = m->be;
  size_t need = be->ops->attention_saved_bytes(be, B, T, m->cfg.embed_dim, m->cfg.heads);
  if (need <= m->att_cap)
    return TRUE;
  gboolean ok = TRUE;
  const int owners = m->checkpoint_activations ? MIN(m->cfg.layers, 1) : m->cfg.layers;
  for (int l = 0; l < owners; l++) {
    moelm_model_release(m, &m->acts[l].att_saved);
    moelm_model_alloc(m, &m->acts[l].att_saved, need, 1, &ok, error);
  }
  if (!ok) {
    for (int l = 0; l < owners; l++)
      moelm_model_release(m, &m->acts[l].att_saved);
    m->att_cap = 0;
    return FALSE;
  }
  for (int l = owners; l < m->cfg.layers; l++)
    m->acts[l].att_saved = m->acts[0].att_saved;
  m->att_cap = need;
  return TRUE;
}
