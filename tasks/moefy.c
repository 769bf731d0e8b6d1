/* moelm — MoEfication: building a moefied model from a dense one (see moefy.h). */
#include "config.h"

#include <math.h>
#include <string.h>

#include "moefy.h"
#include "moefy_split.h"
#include "moelm/checkpoint.h"
#include "moelm/dictionary.h"
#include "moelm/errors.h"
#include "moelm/log.h"
#include "moelm/timer.h"
#include "tasks/inference.h"

#define LOG "moelm.moefy"
/* Tokens per backend call when going over the collected FFN inputs. */
#define CHUNK ((int64_t)1024)

static const char *const split_names[] = {"param-cluster", "coactivation"};

gboolean moelm_moefy_split_parse(const char *name, MoelmMoefySplit *split, GError **error)
{
  for (gsize i = 0; i < G_N_ELEMENTS(split_names); i++)
    if (strcmp(name, split_names[i]) == 0) {
      *split = (MoelmMoefySplit)i;
      return TRUE;
    }
  g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG, "unknown --split '%s' (choose from param-cluster, coactivation)",
              name);
  return FALSE;
}

const char *moelm_moefy_split_name(MoelmMoefySplit split)
{
  return (unsigned)split < G_N_ELEMENTS(split_names) ? split_names[split] : "?";
}

void moelm_moefy_options_init(MoelmMoefyOptions *opt)
{
  memset(opt, 0, sizeof *opt);
  opt->split = MOELM_MOEFY_SPLIT_PARAM_CLUSTER;
  opt->select = MOELM_MOEFY_SELECT_MLP;
  opt->seed = 1;
  opt->kmeans_iters = 30;
  opt->router = (MoelmRouterOptions){.hidden = 64, .epochs = 10, .batch = 256, .lr = 1e-3, .seed = 1};
  opt->heldout_fraction = 0.1;
}

gboolean moelm_moefy_check(const MoelmModelConfig *dense, const MoelmMoefyOptions *opt, const char *what,
                           GError **error)
{
  const int E = opt->num_experts, F = dense->ffn_dim;
  char *problem = NULL;
  if (dense->moefy_experts > 0)
    problem = g_strdup_printf("is moefied already (%d experts per layer); moefy takes a dense checkpoint",
                              dense->moefy_experts);
  else if (dense->moe_freq > 0)
    problem = g_strdup_printf("has token-MoE layers (--moe-freq %d); moefy takes a dense checkpoint", dense->moe_freq);
  else if (E < 1)
    problem = g_strdup_printf("--num-experts must be at least 1 (got %d)", E);
  else if (F % E != 0)
    problem = g_strdup_printf("--num-experts %d does not divide the FFN width %d (--decoder-ffn-embed-dim): every "
                              "expert must get the same number of neurons",
                              E, F);
  else if (opt->top_k < 1 || opt->top_k > E)
    problem = g_strdup_printf("--top-k %d must be between 1 and --num-experts %d", opt->top_k, E);
  if (problem == NULL)
    return TRUE;
  g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG, "%s: %s", what, problem);
  g_free(problem);
  return FALSE;
}

gboolean moelm_moefy_needs_samples(const MoelmMoefyOptions *opt)
{
  return opt->split == MOELM_MOEFY_SPLIT_COACTIVATION || opt->select == MOELM_MOEFY_SELECT_MLP;
}

/* ---- the FFN inputs of real tokens --------------------------------------------------------- */

void moelm_ffn_samples_clear(MoelmFfnSamples *s)
{
  if (s->x)
    for (int l = 0; l < s->layers; l++)
      s->be->ops->free(s->be, s->x[l]);
  g_free(s->x);
  memset(s, 0, sizeof *s);
}

gboolean moelm_ffn_samples_collect(MoelmModel *m, const MoelmLmSplit *split, int64_t max_tokens,
                                   int64_t batch_tokens, uint64_t seed, MoelmFfnSamples *out, GError **error)
{
  const MoelmModelConfig *c = moelm_model_get_config(m);
  MoelmBackend *be = moelm_model_backend(m);
  memset(out, 0, sizeof *out);
  out->be = be;
  out->layers = c->layers;
  out->C = c->embed_dim;
  out->x = g_new0(MoelmAct *, MAX(c->layers, 1));
  const double t0 = moelm_time_now();
  GPtrArray *batches = moelm_lm_batches(split, batch_tokens, 0, 1, TRUE, seed, c->max_positions, TRUE, error);
  if (batches == NULL) {
    moelm_ffn_samples_clear(out);
    return FALSE;
  }
  moelm_shuffle_batches(batches, seed);
  gboolean ok = TRUE;
  for (int l = 0; ok && l < c->layers; l++)
    ok = (out->x[l] = be->ops->alloc(be, moelm_act_bytes(be, (size_t)max_tokens * out->C), error)) != NULL;
  int32_t *d_idx = ok ? be->ops->alloc(be, (size_t)batch_tokens * sizeof(int32_t), error) : NULL;
  ok = ok && d_idx != NULL;
  int32_t *idx = g_new(int32_t, batch_tokens);
  guint used = 0;
  for (; ok && used < batches->len && out->n < max_tokens; used++) {
    int32_t *src = NULL, *tgt = NULL;
    int B = 0, T = 0;
    moelm_lm_collate(split, g_ptr_array_index(batches, used), &src, &tgt, &B, &T);
    const MoelmBatch batch = {B, T, src, tgt};
    ok = moelm_model_score(m, &batch, NULL, NULL, NULL, error);
    if (ok && c->layers > 0 && moelm_model_ffn_input(m, 0) == NULL) {
      g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG, "the model does not keep its FFN inputs "
                                                               "(activation checkpointing is on)");
      ok = FALSE;
    }
    int take = 0; /* the real tokens, as many as still fit */
    for (int i = 0; i < B * T && out->n + take < max_tokens; i++)
      if (src[i] != MOELM_PAD)
        idx[take++] = i;
    if (ok && take > 0) {
      be->ops->to_device(be, d_idx, idx, (size_t)take * sizeof(int32_t));
      for (int l = 0; l < c->layers; l++)
        be->ops->gather_rows(be, moelm_act_at(be, out->x[l], (size_t)out->n * out->C), moelm_model_ffn_input(m, l),
                             d_idx, take, out->C);
      out->n += take;
    }
    g_free(src);
    g_free(tgt);
  }
  g_free(idx);
  be->ops->free(be, d_idx);
  g_ptr_array_unref(batches);
  ok = ok && moelm_backend_check(be, "collecting FFN inputs", error);
  if (ok && out->n == 0) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG, "%s: no tokens to collect FFN activations from",
                split->prefix);
    ok = FALSE;
  }
  if (!ok) {
    moelm_ffn_samples_clear(out);
    return FALSE;
  }
  moelm_info(LOG, "collected the FFN inputs of %" G_GINT64_FORMAT " tokens of %s (%u batches) in %.1fs", out->n,
             split->name, used, moelm_time_now() - t0);
  return TRUE;
}

/* ---- per-layer quantities on the backend ---------------------------------------------------- */

typedef struct {
  const float *fc1_w, *fc1_b, *fc2_w, *fc2_b; /* the dense layer's tensors (backend memory) */
  size_t o_fc1_w, o_fc1_b, o_fc2_w, o_fc2_b;  /* and their offsets in the dense arena */
} DenseFfn;

static gboolean dense_ffn(MoelmModel *dense, int l, DenseFfn *d, GError **error)
{
  static const char *const parts[] = {"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"};
  size_t *offs[] = {&d->o_fc1_w, &d->o_fc1_b, &d->o_fc2_w, &d->o_fc2_b};
  const float **ptrs[] = {&d->fc1_w, &d->fc1_b, &d->fc2_w, &d->fc2_b};
  for (int k = 0; k < 4; k++) {
    char *name = g_strdup_printf("decoder.layers.%d.%s", l, parts[k]);
    const MoelmParam *p = moelm_model_find(dense, name);
    g_free(name);
    if (p == NULL) {
      g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG, "decoder layer %d has no dense %s", l, parts[k]);
      return FALSE;
    }
    *offs[k] = p->offset;
    *ptrs[k] = moelm_model_params(dense) + p->offset;
  }
  return TRUE;
}

/* adj (F, F) host = over the samples x (n, C) of one layer, how many tokens had neurons i and
 * j both positive: B^T B with B (n, F) the 0/1 indicator of fc1(x) > 0 (the positive part of
 * relu and gelu alike), made by relu's backward of a gradient of ones. */
static gboolean coactivation_graph(const DenseFfn *d, const MoelmAct *x, int64_t n, int C, int F, MoelmBackend *be,
                                   float *adj_host, GError **error)
{
  const struct moelm_backend_ops *o = be->ops;
  const size_t chunkF = (size_t)CHUNK * F;
  MoelmMoefyBuffers bufs;
  moelm_moefy_buffers_init(&bufs, be);
  MoelmAct *h = moelm_moefy_buffers_alloc(&bufs, moelm_act_bytes(be, chunkF), error);
  MoelmAct *ind = moelm_moefy_buffers_alloc(&bufs, moelm_act_bytes(be, chunkF), error);
  MoelmAct *ones = moelm_moefy_buffers_alloc(&bufs, moelm_act_bytes(be, chunkF), error);
  float *indf = moelm_moefy_buffers_alloc(&bufs, chunkF * sizeof(float), error);
  float *adj = moelm_moefy_buffers_alloc(&bufs, (size_t)F * F * sizeof(float), error);
  if (bufs.ok) {
    o->fill(be, indf, 1.0f, chunkF);
    o->convert(be, ones, be->act_dtype, indf, MOELM_DT_F32, chunkF);
    o->zero(be, adj, (size_t)F * F * sizeof(float));
    for (int64_t s0 = 0; s0 < n; s0 += CHUNK) {
      const int b = (int)MIN(CHUNK, n - s0);
      const size_t bF = (size_t)b * F;
      o->linear_forward(be, h, moelm_act_at(be, x, (size_t)s0 * C), d->fc1_w, d->fc1_b, b, C, F);
      o->zero(be, ind, moelm_act_bytes(be, bF));
      o->activation_backward(be, MOELM_ACT_RELU, ind, h, ones, bF); /* ind += 1 * (h > 0) */
      o->convert(be, indf, MOELM_DT_F32, ind, be->act_dtype, bF);
      o->gemm(be, adj, indf, indf, F, F, b, TRUE, FALSE, 1.0f, 1.0f);
    }
    o->to_host(be, adj_host, adj, (size_t)F * F * sizeof(float));
  }
  gboolean ok = bufs.ok && moelm_backend_check(be, "co-activation graph", error);
  moelm_moefy_buffers_clear(&bufs);
  return ok;
}

/* targets (n, E) in the activation type: each expert's summed positive activations
 * relu(act(fc1(x))) (the indicator of expert_of sums them), divided by their mean over all
 * n*E entries so that the router's squared error is of order one whatever the model. */
static gboolean expert_targets(const DenseFfn *d, const MoelmAct *x, int64_t n, int C, int F, int E,
                               MoelmActivation act, const int32_t *expert_of, MoelmBackend *be, MoelmAct *targets,
                               GError **error)
{
  const struct moelm_backend_ops *o = be->ops;
  MoelmMoefyBuffers bufs;
  moelm_moefy_buffers_init(&bufs, be);
  MoelmAct *h = moelm_moefy_buffers_alloc(&bufs, moelm_act_bytes(be, (size_t)CHUNK * F), error);
  MoelmAct *t = moelm_moefy_buffers_alloc(&bufs, moelm_act_bytes(be, (size_t)CHUNK * E), error);
  float *ind = moelm_moefy_buffers_alloc(&bufs, (size_t)E * F * sizeof(float), error);
  float *tf = moelm_moefy_buffers_alloc(&bufs, (size_t)n * E * sizeof(float), error);
  gboolean ok = bufs.ok;
  if (ok) {
    float *host = g_new0(float, (size_t)E * F);
    for (int i = 0; i < F; i++)
      host[(size_t)expert_of[i] * F + i] = 1.0f;
    o->to_device(be, ind, host, (size_t)E * F * sizeof(float));
    g_free(host);
    for (int64_t s0 = 0; s0 < n; s0 += CHUNK) {
      const int b = (int)MIN(CHUNK, n - s0);
      o->linear_forward(be, h, moelm_act_at(be, x, (size_t)s0 * C), d->fc1_w, d->fc1_b, b, C, F);
      o->activation_forward(be, act, h, h, (size_t)b * F);
      if (act != MOELM_ACT_RELU) /* gelu's positive part */
        o->activation_forward(be, MOELM_ACT_RELU, h, h, (size_t)b * F);
      o->linear_forward(be, t, h, ind, NULL, b, F, E);
      o->convert(be, tf + (size_t)s0 * E, MOELM_DT_F32, t, be->act_dtype, (size_t)b * E);
    }
    float *all = g_new(float, (size_t)n * E);
    o->to_host(be, all, tf, (size_t)n * E * sizeof(float));
    double sum = 0;
    for (size_t k = 0; k < (size_t)n * E; k++)
      sum += all[k];
    g_free(all);
    const double mean = sum / ((double)n * E);
    o->scale(be, tf, mean > 0 ? (float)(1.0 / mean) : 1.0f, (size_t)n * E);
    o->convert(be, targets, be->act_dtype, tf, MOELM_DT_F32, (size_t)n * E);
    ok = moelm_backend_check(be, "router targets", error);
  }
  moelm_moefy_buffers_clear(&bufs);
  return ok;
}

/* ---- building the moefied model ------------------------------------------------------------ */

void moelm_moefy_report_clear(MoelmMoefyReport *r)
{
  if (r->router)
    for (int l = 0; l < r->layers; l++)
      moelm_router_report_clear(&r->router[l]);
  g_free(r->router);
  g_free(r->neurons);
  memset(r, 0, sizeof *r);
}

/* The offset of a moefied model's tensor (the layout guarantees it exists). */
static size_t offset_of(MoelmModel *m, const char *fmt, int l)
{
  char *name = g_strdup_printf(fmt, l);
  const MoelmParam *p = moelm_model_find(m, name);
  g_assert(p != NULL);
  g_free(name);
  return p->offset;
}

/* Write layer l's experts into the moefied host arena hm from the dense host arena hd:
 * position p of the expert order is dense neuron perm[p]. */
static void write_experts(MoelmModel *mf, int l, const DenseFfn *d, const float *hd, float *hm, const int32_t *perm,
                          int C, int F, int E)
{
  const int Fe = F / E;
  float *w1 = hm + offset_of(mf, "decoder.layers.%d.moefied.experts.0.fc1.weight", l);
  float *b1 = hm + offset_of(mf, "decoder.layers.%d.moefied.experts.0.fc1.bias", l);
  float *w2 = hm + offset_of(mf, "decoder.layers.%d.moefied.experts.0.fc2.weight", l);
  float *b2 = hm + offset_of(mf, "decoder.layers.%d.moefied.fc2.bias", l);
  const float *dw1 = hd + d->o_fc1_w, *db1 = hd + d->o_fc1_b, *dw2 = hd + d->o_fc2_w, *db2 = hd + d->o_fc2_b;
  for (int p = 0; p < F; p++) { /* fc1 rows and biases: one (F, C) matrix in expert order */
    memcpy(w1 + (size_t)p * C, dw1 + (size_t)perm[p] * C, (size_t)C * sizeof(float));
    b1[p] = db1[perm[p]];
  }
  for (int e = 0; e < E; e++) /* fc2 (C, F) columns → expert e's (C, Fe) block */
    for (int c = 0; c < C; c++)
      for (int j = 0; j < Fe; j++)
        w2[((size_t)e * C + c) * Fe + j] = dw2[(size_t)c * F + perm[e * Fe + j]];
  memcpy(b2, db2, (size_t)C * sizeof(float));
}

/* The similarity selector: centre e = the mean of expert e's L2-normalised fc1 rows. */
static void similarity_centres(const float *hd, const DenseFfn *d, const int32_t *expert_of, int C, int F, int E,
                               float *centres)
{
  double *acc = g_new0(double, (size_t)E * C);
  const float *w1 = hd + d->o_fc1_w;
  for (int i = 0; i < F; i++) {
    double nrm = 0;
    for (int c = 0; c < C; c++)
      nrm += (double)w1[(size_t)i * C + c] * w1[(size_t)i * C + c];
    const double inv = nrm > 0 ? 1.0 / sqrt(nrm) : 0.0;
    for (int c = 0; c < C; c++)
      acc[(size_t)expert_of[i] * C + c] += w1[(size_t)i * C + c] * inv;
  }
  for (size_t k = 0; k < (size_t)E * C; k++)
    centres[k] = (float)(acc[k] / (F / E));
  g_free(acc);
}

/* The MLP selector of layer l, trained on the samples, written into the host arena hm. */
static gboolean mlp_selector(MoelmModel *mf, int l, const DenseFfn *d, const MoelmFfnSamples *s,
                             const int32_t *expert_of, const MoelmMoefyOptions *opt, float *hm,
                             MoelmRouterReport *rep, GError **error)
{
  MoelmBackend *be = s->be;
  const MoelmModelConfig *c = moelm_model_get_config(mf);
  const int C = c->embed_dim, F = c->ffn_dim, E = c->moefy_experts, H = c->moefy_router_dim;
  MoelmAct *targets = be->ops->alloc(be, moelm_act_bytes(be, (size_t)s->n * E), error);
  if (targets == NULL)
    return FALSE;
  const int64_t held = (int64_t)floor(opt->heldout_fraction * (double)s->n);
  MoelmRouterOptions ro = opt->router;
  ro.seed = opt->router.seed + (uint64_t)l;
  float *params = g_new(float, (size_t)H * C + H + (size_t)E * H + E);
  gboolean ok = expert_targets(d, s->x[l], s->n, C, F, E, c->activation, expert_of, be, targets, error) &&
                moelm_moefy_train_router(be, s->x[l], targets, s->n, held, C, E, c->moefy_top_k, &ro, l, params, rep,
                                         error);
  if (ok) {
    static const char *const fmts[] = {"decoder.layers.%d.moefied.router.fc1.weight", "decoder.layers.%d.moefied.router.fc1.bias",
                                       "decoder.layers.%d.moefied.router.fc2.weight", "decoder.layers.%d.moefied.router.fc2.bias"};
    const size_t sizes[] = {(size_t)H * C, (size_t)H, (size_t)E * H, (size_t)E};
    const float *src = params;
    for (int k = 0; k < 4; k++) {
      memcpy(hm + offset_of(mf, fmts[k], l), src, sizes[k] * sizeof(float));
      src += sizes[k];
    }
  }
  g_free(params);
  be->ops->free(be, targets);
  return ok;
}

/* expert_of (F) for layer l by the chosen split. */
static gboolean split_layer(const DenseFfn *d, const float *hd, int l, const MoelmFfnSamples *s, int C, int F,
                            const MoelmMoefyOptions *opt, MoelmBackend *be, int32_t *expert_of, GError **error)
{
  const int E = opt->num_experts;
  if (opt->split == MOELM_MOEFY_SPLIT_PARAM_CLUSTER)
    return moelm_moefy_param_cluster(hd + d->o_fc1_w, F, C, E, opt->kmeans_iters, opt->seed + (uint64_t)l, expert_of,
                                     error);
  if (!moelm_moefy_require_metis(error)) /* before collecting a graph METIS cannot use */
    return FALSE;
  float *adj = g_try_new(float, (size_t)F * F);
  if (adj == NULL) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_NOMEM, "no memory for a co-activation graph of %d neurons", F);
    return FALSE;
  }
  gboolean ok = coactivation_graph(d, s->x[l], s->n, C, F, be, adj, error) &&
                moelm_moefy_coactivation_split(adj, F, E, opt->seed + (uint64_t)l, expert_of, error);
  g_free(adj);
  return ok;
}

MoelmModel *moelm_moefy_build(MoelmModel *dense, const MoelmMoefyOptions *opt, const MoelmFfnSamples *samples,
                              MoelmMoefyReport *report, GError **error)
{
  const MoelmModelConfig *dc = moelm_model_get_config(dense);
  MoelmBackend *be = moelm_model_backend(dense);
  memset(report, 0, sizeof *report);
  if (!moelm_moefy_check(dc, opt, "the model", error))
    return NULL;
  if (moelm_moefy_needs_samples(opt) && (samples == NULL || samples->n < 1 || samples->layers != dc->layers)) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG,
                "--split %s --select %s need the FFN inputs of real tokens, and none were collected",
                moelm_moefy_split_name(opt->split), moelm_moefy_select_name(opt->select));
    return NULL;
  }
  const int L = dc->layers, C = dc->embed_dim, F = dc->ffn_dim, E = opt->num_experts;
  MoelmModelConfig mc;
  moelm_model_config_copy(&mc, dc);
  mc.moefy_experts = E;
  mc.moefy_top_k = opt->top_k;
  mc.moefy_select = opt->select;
  mc.moefy_router_dim = opt->select == MOELM_MOEFY_SELECT_MLP ? opt->router.hidden : 0;
  MoelmModel *mf = moelm_model_new(&mc, be, error);
  moelm_model_config_clear(&mc);
  if (mf == NULL)
    return NULL;

  /* host copies of both arenas: everything but the FFNs keeps its name and values */
  const size_t nd = moelm_model_num_params(dense), nm = moelm_model_num_params(mf);
  float *hd = g_try_new(float, nd), *hm = g_try_new0(float, nm);
  gboolean ok = hd && hm;
  if (!ok)
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_NOMEM, "no memory to stage %zu + %zu parameters", nd, nm);
  else
    be->ops->to_host(be, hd, moelm_model_params(dense), nd * sizeof(float));
  for (guint i = 0; ok && i < moelm_model_n_tensors(mf); i++) {
    const MoelmParam *p = moelm_model_tensor(mf, i), *q = moelm_model_find(dense, p->name);
    if (q && q->numel == p->numel)
      memcpy(hm + p->offset, hd + q->offset, p->numel * sizeof(float));
  }
  report->layers = L;
  report->F = F;
  report->E = E;
  report->neurons = g_new(int32_t, (size_t)MAX(L, 1) * F);
  if (opt->select == MOELM_MOEFY_SELECT_MLP)
    report->router = g_new0(MoelmRouterReport, MAX(L, 1));
  int32_t *expert_of = g_new(int32_t, F);
  float *centres = g_new(float, (size_t)E * C);
  for (int l = 0; ok && l < L; l++) {
    const double t0 = moelm_time_now();
    DenseFfn d;
    ok = dense_ffn(dense, l, &d, error) && split_layer(&d, hd, l, samples, C, F, opt, be, expert_of, error);
    if (!ok)
      break;
    int32_t *perm = report->neurons + (size_t)l * F;
    moelm_moefy_partition_order(expert_of, F, E, perm);
    write_experts(mf, l, &d, hd, hm, perm, C, F, E);
    if (opt->select == MOELM_MOEFY_SELECT_SIMILARITY) {
      similarity_centres(hd, &d, expert_of, C, F, E, centres);
      memcpy(hm + offset_of(mf, "decoder.layers.%d.moefied.router.weight", l), centres, (size_t)E * C * sizeof(float));
    } else if (opt->select == MOELM_MOEFY_SELECT_MLP) {
      ok = mlp_selector(mf, l, &d, samples, expert_of, opt, hm, &report->router[l], error);
    }
    if (ok)
      moelm_info(LOG, "layer %d: %d neurons split into %d experts of %d (%s) in %.1fs", l, F, E, F / E,
                 moelm_moefy_split_name(opt->split), moelm_time_now() - t0);
  }
  if (ok) {
    be->ops->to_device(be, moelm_model_params(mf), hm, nm * sizeof(float));
    ok = moelm_backend_check(be, "moefy", error);
  }
  g_free(centres);
  g_free(expert_of);
  g_free(hm);
  g_free(hd);
  if (!ok) {
    moelm_model_free(mf);
    moelm_moefy_report_clear(report);
    return NULL;
  }
  return mf;
}

/* ---- the report as metadata ---------------------------------------------------------------- */

static void add_doubles(JsonBuilder *b, const char *key, const double *v, int n)
{
  json_builder_set_member_name(b, key);
  json_builder_begin_array(b);
  for (int i = 0; i < n; i++)
    json_builder_add_double_value(b, v[i]);
  json_builder_end_array(b);
}

JsonNode *moelm_moefy_report_to_json(const MoelmMoefyReport *r, const MoelmMoefyOptions *opt)
{
  JsonBuilder *b = json_builder_new();
  json_builder_begin_object(b);
  json_builder_set_member_name(b, "split");
  json_builder_add_string_value(b, moelm_moefy_split_name(opt->split));
  json_builder_set_member_name(b, "select");
  json_builder_add_string_value(b, moelm_moefy_select_name(opt->select));
  json_builder_set_member_name(b, "num_experts");
  json_builder_add_int_value(b, r->E);
  json_builder_set_member_name(b, "top_k");
  json_builder_add_int_value(b, opt->top_k);
  json_builder_set_member_name(b, "layers");
  json_builder_begin_array(b);
  for (int l = 0; l < r->layers; l++) {
    json_builder_begin_object(b);
    json_builder_set_member_name(b, "layer");
    json_builder_add_int_value(b, l);
    json_builder_set_member_name(b, "neurons");
    json_builder_begin_array(b);
    for (int p = 0; p < r->F; p++)
      json_builder_add_int_value(b, r->neurons[(size_t)l * r->F + p]);
    json_builder_end_array(b);
    if (r->router) {
      const MoelmRouterReport *rr = &r->router[l];
      json_builder_set_member_name(b, "router");
      json_builder_begin_object(b);
      add_doubles(b, "train_mse", rr->train_loss, rr->epochs);
      add_doubles(b, "heldout_mse", rr->heldout_loss, isnan(rr->heldout_recall) ? 0 : rr->epochs);
      json_builder_set_member_name(b, "heldout_recall");
      json_builder_add_double_value(b, isnan(rr->heldout_recall) ? -1.0 : rr->heldout_recall);
      json_builder_end_object(b);
    }
    json_builder_end_object(b);
  }
  json_builder_end_array(b);
  json_builder_end_object(b);
  JsonNode *root = json_builder_get_root(b);
  g_object_unref(b);
  return root;
}

gboolean moelm_moefy_inference_setup(MoelmModel *m, int top_k, char **summary, GError **error)
{
  *summary = NULL;
  if (top_k >= 0 && !moelm_model_set_moefy_top_k(m, top_k, error))
    return FALSE;
  const MoelmModelConfig *c = moelm_model_get_config(m);
  if (c->moefy_experts <= 0)
    return TRUE;
  const gboolean truth = c->moefy_select == MOELM_MOEFY_SELECT_GROUNDTRUTH;
  *summary = g_strdup_printf("moefied FFNs: %d experts of %d neurons per layer, top-%d computed per token (%.1f%% of "
                             "each FFN), selection %s%s",
                             c->moefy_experts, c->ffn_dim / c->moefy_experts, c->moefy_top_k,
                             100.0 * c->moefy_top_k / c->moefy_experts, moelm_moefy_select_name(c->moefy_select),
                             truth ? " (an UPPER BOUND, not a real selector: it computes every expert's activations "
                                     "to choose)"
                                   : "");
  return TRUE;
}

/* ---- the command ------------------------------------------------------------------------------ */

gboolean moelm_moefy_run(const MoelmMoefyRun *run, GError **error)
{
  const MoelmMoefyOptions *opt = &run->opt;
  if (opt->split == MOELM_MOEFY_SPLIT_COACTIVATION && !moelm_moefy_require_metis(error))
    return FALSE;
  MoelmInference *inf = moelm_inference_open(run->path, run->data_dir, &run->backend, error);
  if (inf == NULL)
    return FALSE;
  moelm_info(LOG, "running on %s: %s", inf->be->description, inf->be->reason);
  MoelmLmSplit *split = NULL;
  MoelmFfnSamples samples = {0};
  MoelmMoefyReport report = {0};
  MoelmModel *mf = NULL;
  gboolean ok = FALSE;
  const MoelmModelConfig *dc = moelm_model_get_config(inf->model);
  if (inf->task.mixture) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG,
                "%s: is a sequence-level mixture (--task %s); moefy takes a dense language_modeling checkpoint",
                run->path, inf->task.name);
    goto out;
  }
  if (!moelm_moefy_check(dc, opt, run->path, error))
    goto out;
  moelm_info(LOG, "%s: %d layers, FFN %d wide (%s): %d experts of %d neurons, top-%d (%.0f%% of the FFN), split %s, "
                  "selection %s%s",
             run->path, dc->layers, dc->ffn_dim, moelm_activation_name(dc->activation), opt->num_experts,
             dc->ffn_dim / opt->num_experts, opt->top_k, 100.0 * opt->top_k / opt->num_experts,
             moelm_moefy_split_name(opt->split), moelm_moefy_select_name(opt->select),
             opt->select == MOELM_MOEFY_SELECT_GROUNDTRUTH
                 ? " (an upper bound: it computes every expert's activations to choose)"
                 : "");
  if (moelm_moefy_needs_samples(opt)) {
    const int64_t tps = inf->task.tokens_per_sample > 0 ? inf->task.tokens_per_sample : dc->max_positions;
    split = moelm_lm_split_open(run->data_dir, run->subset, MIN(tps, dc->max_positions), inf->task.break_mode,
                                moelm_dictionary_size(inf->dict), error);
    if (split == NULL ||
        !moelm_ffn_samples_collect(inf->model, split, run->collect_tokens, run->batch_tokens, opt->seed, &samples,
                                   error))
      goto out;
  }
  mf = moelm_moefy_build(inf->model, opt, &samples, &report, error);
  if (mf == NULL)
    goto out;
  JsonObject *meta = json_object_new();
  JsonNode *task = moelm_checkpoint_meta(inf->ckpt, "task");
  if (task)
    json_object_set_member(meta, "task", json_node_copy(task));
  json_object_set_member(meta, "dictionary", moelm_dictionary_fingerprint(inf->dict));
  JsonNode *rep = moelm_moefy_report_to_json(&report, opt);
  json_object_set_string_member(json_node_get_object(rep), "source", run->path);
  if (samples.n > 0) {
    json_object_set_string_member(json_node_get_object(rep), "subset", run->subset);
    json_object_set_int_member(json_node_get_object(rep), "tokens", samples.n);
  }
  json_object_set_member(meta, "moefy", rep);
  ok = moelm_checkpoint_save(run->save, mf, NULL, NULL, meta, error);
  json_object_unref(meta);
  if (ok)
    moelm_info(LOG, "saved the moefied model to %s (%zu parameters)", run->save, moelm_model_num_params(mf));
out:
  moelm_model_free(mf);
  moelm_moefy_report_clear(&report);
  moelm_ffn_samples_clear(&samples);
  moelm_lm_split_free(split);
  moelm_inference_free(inf);
  return ok;
}
