/* moelm — the sequence-level mixture objective: E-step, hard/soft M-step, learned prior. */
#include "config.h"

#include <math.h>
#include <string.h>

#include "gating/mean_pool.h"
#include "mixture.h"
#include "mixture_assign.h"
#include "mixture_cluster.h"
#include "mixture_docs.h"
#include "moelm/errors.h"
#include "moelm/rng.h"

gboolean moelm_mixture_method_parse(const char *method, gboolean *hard, gboolean *learned, GError **error)
{
  static const char *const names[] = {"hMoEup", "hMoElp", "sMoEup", "sMoElp"};
  for (int i = 0; i < 4; i++)
    if (g_strcmp0(method, names[i]) == 0) {
      *hard = i < 2;
      *learned = i % 2 == 1;
      return TRUE;
    }
  g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG,
              "--method must be one of hMoEup, hMoElp, sMoEup, sMoElp (got '%s')", method ? method : "nothing");
  return FALSE;
}

int32_t moelm_mixture_add_expert_tokens(MoelmDictionary *dict, int K)
{
  int32_t first = -1;
  for (int k = 0; k < K; k++) {
    char name[32];
    g_snprintf(name, sizeof name, "<expert_%d>", k);
    int32_t id = moelm_dictionary_add_symbol(dict, name, 1, FALSE);
    if (k == 0)
      first = id;
  }
  return first;
}

void moelm_mixture_gather_context(const MoelmLmSplit *split, const MoelmBatchIndices *indices, int G, int32_t *ctx,
                                  int *lens)
{
  for (guint b = 0; b < indices->n; b++) {
    MoelmBlockSlice s = moelm_token_blocks_slice(split->blocks, indices->idx[b]);
    int64_t start = MAX(0, s.start - G);
    lens[b] = (int)(s.start - start);
    if (lens[b] > 0)
      moelm_token_blocks_stream(split->blocks, split->ds, start, s.start, ctx + (size_t)b * G);
  }
}

void moelm_mixture_expand_rows(const int32_t *src, const int32_t *tgt, int B, int T, int K, int32_t expert_token0,
                               int32_t *src_out, int32_t *tgt_out)
{
  for (int b = 0; b < B; b++)
    for (int k = 0; k < K; k++) {
      const size_t row = ((size_t)b * K + k) * T;
      memcpy(src_out + row, src + (size_t)b * T, (size_t)T * sizeof(int32_t));
      src_out[row] = expert_token0 + k;
      memcpy(tgt_out + row, tgt + (size_t)b * T, (size_t)T * sizeof(int32_t));
    }
}

static gboolean prior(struct MoelmGate *gate, const MoelmMixtureConfig *cfg, const MoelmLmBatch *b,
                      const MoelmStepIds *ids, float *log_prior, GError **error)
{
  const int B = b->batch.B, K = cfg->num_experts;
  if (gate == NULL) {
    for (int i = 0; i < B * K; i++)
      log_prior[i] = (float)-log((double)K);
    return TRUE;
  }
  const int G = MAX(cfg->gating_context, 1);
  int32_t *ctx = g_new0(int32_t, (size_t)B * G);
  int *lens = g_new0(int, B);
  if (cfg->gating_context > 0 && b->indices != NULL) /* an empty (padding) batch has no context */
    moelm_mixture_gather_context(b->split, b->indices, G, ctx, lens);
  gboolean ok = moelm_mean_pool_gate_forward(gate, ctx, lens, B, G, ids, log_prior, error);
  g_free(ctx);
  g_free(lens);
  return ok;
}

int64_t moelm_mixture_estep_logits_bytes = (int64_t)256 << 20;

gboolean moelm_mixture_estep(MoelmModel *model, struct MoelmGate *gate, const MoelmMixtureConfig *cfg,
                             const MoelmLmBatch *b, float *log_prior, float *lprob, GError **error)
{
  const int B = b->batch.B, T = b->batch.T, K = cfg->num_experts;
  if (!prior(gate, cfg, b, NULL, log_prior, error))
    return FALSE;
  int32_t *src = g_new(int32_t, (size_t)B * K * T), *tgt = g_new(int32_t, (size_t)B * K * T);
  moelm_mixture_expand_rows(b->batch.src, b->batch.tgt, B, T, K, cfg->expert_token0, src, tgt);
  /* The B*K rows in model calls of at most moelm_mixture_estep_logits_bytes of logits: the model's
   * workspace (logits, attention, activations) grows with the rows of its largest call, and
   * all of them at once took 16 GB for 10 experts of 3,584 tokens over 50k words. Rows are
   * scored independently (no dropout here), so the chunks give the same numbers. */
  const int64_t V = moelm_model_get_config(model)->vocab_size;
  int rows = (int)CLAMP(moelm_mixture_estep_logits_bytes / ((int64_t)T * V * (int64_t)sizeof(float)), 1, (int64_t)B * K);
  if (moelm_model_expert_world(model) > 1) /* expert-parallel ranks make the same calls: one each */
    rows = B * K;
  gboolean ok = TRUE;
  for (int r0 = 0; ok && r0 < B * K; r0 += rows) {
    MoelmBatch part = {MIN(rows, B * K - r0), T, src + (size_t)r0 * T, tgt + (size_t)r0 * T};
    ok = moelm_model_score(model, &part, NULL, NULL, lprob + r0, error);
  }
  g_free(src);
  g_free(tgt);
  return ok;
}

/* log Σ_k exp(x_k) in double */
static double logsumexp(const double *x, int K)
{
  double mx = -INFINITY;
  for (int k = 0; k < K; k++)
    mx = fmax(mx, x[k]);
  if (!isfinite(mx))
    return mx;
  double s = 0;
  for (int k = 0; k < K; k++)
    s += exp(x[k] - mx);
  return mx + log(s);
}

gboolean moelm_mixture_discovery_on(const MoelmMixtureConfig *cfg)
{
  const MoelmDiscoveryConfig *d = &cfg->discovery;
  return d->doc_estep || d->balance >= 1 || d->temperature > 0 || d->init != MOELM_MIXTURE_INIT_NONE;
}

JsonNode *moelm_mixture_discovery_to_json(const MoelmDiscoveryConfig *d)
{
  JsonObject *o = json_object_new();
  json_object_set_string_member(o, "estep", d->doc_estep ? "document" : "block");
  json_object_set_double_member(o, "balance", d->balance);
  json_object_set_double_member(o, "temperature", d->temperature);
  json_object_set_int_member(o, "anneal_updates", d->anneal_updates);
  static const char *const inits[] = {"none", "tfidf", "labels", "unigram", "auto"};
  json_object_set_string_member(o, "init", inits[d->init]);
  json_object_set_int_member(o, "init_after", d->init_after);
  json_object_set_int_member(o, "init_updates", d->init_updates);
  JsonNode *n = json_node_new(JSON_NODE_OBJECT);
  json_node_take_object(n, o);
  return n;
}

gboolean moelm_mixture_discovery_from_json(JsonObject *o, MoelmDiscoveryConfig *d, GError **error)
{
  memset(d, 0, sizeof *d);
  if (o == NULL)
    return TRUE;
  static const char *const strings[] = {"estep", "init"},
                           *const numbers[] = {"balance", "temperature", "anneal_updates", "init_after", "init_updates"};
  for (gsize i = 0; i < G_N_ELEMENTS(strings); i++)
    if (json_object_has_member(o, strings[i]) &&
        json_node_get_value_type(json_object_get_member(o, strings[i])) != G_TYPE_STRING)
      goto bad;
  for (gsize i = 0; i < G_N_ELEMENTS(numbers); i++) {
    if (!json_object_has_member(o, numbers[i]))
      continue;
    const GType ty = json_node_get_value_type(json_object_get_member(o, numbers[i]));
    if (ty != G_TYPE_DOUBLE && ty != G_TYPE_INT64)
      goto bad;
  }
  d->doc_estep = g_strcmp0(json_object_get_string_member_with_default(o, "estep", "block"), "document") == 0;
  d->balance = json_object_get_double_member_with_default(o, "balance", 0);
  d->temperature = json_object_get_double_member_with_default(o, "temperature", 0);
  d->anneal_updates = json_object_get_int_member_with_default(o, "anneal_updates", 0);
  const char *init = json_object_get_string_member_with_default(o, "init", "none");
  d->init = g_strcmp0(init, "tfidf") == 0     ? MOELM_MIXTURE_INIT_TFIDF
            : g_strcmp0(init, "labels") == 0  ? MOELM_MIXTURE_INIT_LABELS
            : g_strcmp0(init, "unigram") == 0 ? MOELM_MIXTURE_INIT_UNIGRAM
            : g_strcmp0(init, "auto") == 0    ? MOELM_MIXTURE_INIT_AUTO
                                              : MOELM_MIXTURE_INIT_NONE;
  d->init_after = json_object_get_int_member_with_default(o, "init_after", 0);
  d->init_updates = json_object_get_int_member_with_default(o, "init_updates", 0);
  return TRUE;
bad:
  g_set_error(error, MOELM_ERROR, MOELM_ERROR_FORMAT, "the task metadata's \"discovery\" member is malformed");
  return FALSE;
}

typedef struct {
  MoelmMixtureConfig cfg;
  MoelmModel *model; /* the model the gate was built for */
  struct MoelmGate *gate;
  double *mass;      /* (K) posterior mass since the last log line (summed over the ranks by all_reduce) */
  double rows;
  double *epoch_mass; /* (K) the same over the epoch's earlier log lines */
  double epoch_rows;
  MoelmDocMemory *memory;  /* document E-step: the training split's block log-likelihoods */
  const MoelmLmSplit *clustered; /* the split `clusters` belongs to */
  int *clusters;           /* (n_docs) --mixture-init: each training document's cluster */
  MoelmDocMap *cluster_map;
  gboolean equalised;      /* --mixture-temperature: the expert embeddings were made equal */
  MoelmDomainTally *tally; /* validation of tally_split */
  const MoelmLmSplit *tally_split;
} Mixture;

static gboolean ensure_gate(Mixture *mx, MoelmModel *model, GError **error)
{
  if (!mx->cfg.learned_prior || mx->model == model)
    return TRUE;
  moelm_mean_pool_gate_free(mx->gate);
  mx->gate = moelm_mean_pool_gate_new(model, error);
  mx->model = mx->gate ? model : NULL;
  return mx->gate != NULL;
}

/* The update a sub-batch belongs to (0-based). */
static int64_t update_of(const Mixture *mx, const MoelmStepIds *ids)
{
  return ids ? ids->update / (uint32_t)MAX(mx->cfg.discovery.update_freq, 1) : 0;
}

/* --mixture-init: the clusters of the training split's documents (computed once per split). */
static gboolean ensure_clusters(Mixture *mx, const MoelmLmSplit *split, uint64_t seed, GError **error)
{
  if (mx->clustered == split)
    return TRUE;
  g_free(mx->clusters);
  moelm_doc_map_free(mx->cluster_map);
  mx->cluster_map = moelm_doc_map_new(split);
  mx->clusters = g_new0(int, MAX(mx->cluster_map->n_docs, 1));
  mx->clustered = NULL;
  if (mx->cfg.discovery.init == MOELM_MIXTURE_INIT_LABELS) { /* supervised: domain d is expert d */
    char *path = g_strconcat(split->prefix, ".domains", NULL);
    MoelmDomainLabels *l = moelm_domain_labels_load(path, mx->cluster_map->n_docs, error);
    g_free(path);
    if (l == NULL)
      return FALSE;
    const gboolean fits = l->n_domains <= mx->cfg.num_experts;
    if (fits)
      memcpy(mx->clusters, l->doc_domain, sizeof(int) * l->n_docs);
    else
      g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG,
                  "--mixture-init labels: %s.domains has %d domains, more than --num-experts %d", split->prefix,
                  l->n_domains, mx->cfg.num_experts);
    moelm_domain_labels_free(l);
    if (!fits)
      return FALSE;
  } else if (mx->cfg.discovery.init == MOELM_MIXTURE_INIT_UNIGRAM) {
    if (!moelm_mixture_cluster_documents_unigram(split, mx->cluster_map, mx->cfg.num_experts, seed, mx->clusters,
                                                 error))
      return FALSE;
  } else if (mx->cfg.discovery.init == MOELM_MIXTURE_INIT_AUTO) {
    if (!moelm_mixture_cluster_documents_auto(split, mx->cluster_map, mx->cfg.num_experts, seed, mx->clusters,
                                              error))
      return FALSE;
  } else if (!moelm_mixture_cluster_documents(split, mx->cluster_map, mx->cfg.num_experts, seed, mx->clusters,
                                              error)) {
    return FALSE;
  }
  mx->clustered = split;
  return TRUE;
}

/* --mixture-temperature: the experts start from one embedding (<expert_0>'s, the others with a
 * perturbation of 1e-4 drawn from Philox(seed)), so that annealing parts them along the data
 * rather than along their random initialisation. */
static gboolean equalise_expert_tokens(MoelmModel *model, const MoelmMixtureConfig *cfg, uint64_t seed, GError **error)
{
  const MoelmParam *p = moelm_model_find(model, "decoder.embed_tokens.weight");
  if (p == NULL) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG, "the model has no decoder.embed_tokens.weight");
    return FALSE;
  }
  MoelmBackend *be = moelm_model_backend(model);
  const int C = (int)p->shape[1];
  float *params = moelm_model_params(model), *row = g_new(float, C), *other = g_new(float, C);
  be->ops->to_host(be, row, params + p->offset + (size_t)cfg->expert_token0 * C, (size_t)C * sizeof(float));
  MoelmRng rng;
  moelm_rng_init(&rng, seed, 0x65716c7au /* "eqlz" */, 0);
  for (int k = 1; k < cfg->num_experts; k++) {
    for (int c = 0; c < C; c++)
      other[c] = row[c] + 1e-4f * moelm_rng_next_normal(&rng);
    be->ops->to_device(be, params + p->offset + (size_t)(cfg->expert_token0 + k) * C, other,
                       (size_t)C * sizeof(float));
  }
  g_free(row);
  g_free(other);
  return TRUE;
}

/* The E-step's decision with the domain-discovery options, as weights w (B, K): one-hot rows
 * for the hard rule, the posterior for the soft one, annealed weights while the temperature is
 * above 0. *weighted: a hard method must train several experts of a row (annealing). */
static gboolean discovery_assign(Mixture *mx, MoelmModel *model, const MoelmLmBatch *b, const MoelmStepIds *ids,
                                 const float *lprob, const float *lp, double *w, gboolean *weighted, GError **error)
{
  const MoelmDiscoveryConfig *d = &mx->cfg.discovery;
  const int B = b->batch.B, K = mx->cfg.num_experts;
  const int64_t t = update_of(mx, ids);
  *weighted = FALSE;
  if (d->init != MOELM_MIXTURE_INIT_NONE && t >= d->init_after && t < d->init_after + d->init_updates) {
    if (!ensure_clusters(mx, b->split, ids ? ids->seed : 1, error))
      return FALSE;
    for (int r = 0; r < B; r++) {
      const int c = mx->clusters[mx->cluster_map->block_doc[b->indices->idx[r]]];
      for (int k = 0; k < K; k++)
        w[r * K + k] = k == c;
    }
    return TRUE;
  }
  double *s = g_new(double, (gsize)B * K), *ntok = g_new(double, MAX(B, 1));
  if (d->doc_estep) {
    if (mx->memory == NULL || mx->memory->split != b->split) {
      moelm_doc_memory_free(mx->memory);
      mx->memory = moelm_doc_memory_new(b->split, K);
    }
    moelm_doc_memory_scores(mx->memory, b->indices, lprob, lp, s, ntok);
  } else {
    for (int i = 0; i < B * K; i++)
      s[i] = (double)lprob[i] + lp[i];
    for (int r = 0; r < B; r++)
      ntok[r] = (double)moelm_token_blocks_size(b->split->blocks, b->indices->idx[r]);
  }
  const double tau = moelm_mixture_temperature(d->temperature, 0.0, d->anneal_updates, t);
  if (!mx->cfg.hard) {
    moelm_mixture_annealed_weights(s, ntok, B, K, tau, 1.0, w);
  } else if (tau > 0) {
    moelm_mixture_annealed_weights(s, ntok, B, K, tau, 0.0, w);
    *weighted = TRUE;
  } else {
    int *win = g_new(int, MAX(B, 1));
    moelm_mixture_assign(s, B, K, d->balance, win);
    for (int r = 0; r < B; r++)
      for (int k = 0; k < K; k++)
        w[r * K + k] = k == win[r];
    g_free(win);
  }
  g_free(s);
  g_free(ntok);
  return TRUE;
}

/* The hard M-step over weighted (row, expert) pairs: every pair whose weight is at least 1e-3,
 * the weights renormalised per row. Loss -Σ w (lprob + log π), the gate's gradient -w. */
static gboolean weighted_hard_mstep(Mixture *mx, MoelmModel *model, const MoelmLmBatch *b, const MoelmStepIds *ids,
                                    const double *w, const float *lp_m, float *dlogpi, double *loss, GError **error)
{
  const int B = b->batch.B, T = b->batch.T, K = mx->cfg.num_experts;
  GArray *pick = g_array_new(FALSE, FALSE, sizeof(int));
  float *wk = g_new(float, (size_t)MAX(B, 1) * K);
  for (int r = 0; r < B; r++) {
    double z = 0;
    for (int k = 0; k < K; k++)
      z += w[r * K + k] >= 1e-3 ? w[r * K + k] : 0.0;
    for (int k = 0; k < K; k++)
      if (w[r * K + k] >= 1e-3) {
        const int i = r * K + k;
        g_array_append_val(pick, i);
        wk[i] = (float)(w[i] / z);
        dlogpi[i] = -wk[i];
      }
  }
  const int R = (int)pick->len;
  int32_t *src = g_new(int32_t, (size_t)MAX(R, 1) * T), *tgt = g_new(int32_t, (size_t)MAX(R, 1) * T);
  float *rw = g_new(float, MAX(R, 1)), *rows = g_new(float, MAX(R, 1));
  for (int j = 0; j < R; j++) {
    const int i = g_array_index(pick, int, j), r = i / K, k = i % K;
    memcpy(src + (size_t)j * T, b->batch.src + (size_t)r * T, sizeof(int32_t) * T);
    memcpy(tgt + (size_t)j * T, b->batch.tgt + (size_t)r * T, sizeof(int32_t) * T);
    src[(size_t)j * T] = mx->cfg.expert_token0 + k;
    rw[j] = wk[i];
  }
  const MoelmBatch all = {R, T, src, tgt};
  gboolean ok = moelm_model_train_step(model, &all, ids, rw, NULL, rows, error);
  for (int j = 0; ok && j < R; j++) {
    const int i = g_array_index(pick, int, j);
    *loss -= rw[j] * ((double)rows[j] + lp_m[i]);
  }
  g_array_unref(pick);
  g_free(wk);
  g_free(src);
  g_free(tgt);
  g_free(rw);
  g_free(rows);
  return ok;
}

static gboolean mix_train(MoelmObjective *obj, MoelmModel *model, const MoelmLmBatch *b, const MoelmStepIds *ids,
                          double *loss_sum, double *sample_size, GError **error)
{
  Mixture *mx = obj->priv;
  if (!ensure_gate(mx, model, error))
    return FALSE;
  const int B = b->batch.B, T = b->batch.T, K = mx->cfg.num_experts;
  const gboolean discovery = moelm_mixture_discovery_on(&mx->cfg);
  float *lp_e = g_new(float, (size_t)B * K), *lprob = g_new(float, (size_t)B * K);
  float *lp_m = g_new(float, (size_t)B * K);
  double *post = g_new(double, (size_t)B * K), *tmp = g_new(double, K);
  int *win = g_new(int, MAX(B, 1));
  gboolean ok = TRUE;
  if (mx->cfg.discovery.temperature > 0 && ids && update_of(mx, ids) == 0 && !mx->equalised) {
    ok = equalise_expert_tokens(model, &mx->cfg, ids->seed, error); /* the run's first sub-batch */
    mx->equalised = TRUE;
  }
  ok = ok && moelm_mixture_estep(model, mx->gate, &mx->cfg, b, lp_e, lprob, error);
  for (int r = 0; ok && r < B; r++) { /* posterior = softmax(lprob + log π) */
    for (int k = 0; k < K; k++)
      tmp[k] = (double)lprob[r * K + k] + lp_e[r * K + k];
    const double z = logsumexp(tmp, K);
    for (int k = 0; k < K; k++) {
      post[r * K + k] = exp(tmp[k] - z);
      mx->mass[k] += post[r * K + k];
    }
    mx->rows++;
    int best = 0; /* fairseq's hard rule: the argmax of the posterior */
    for (int k = 1; k < K; k++)
      if (post[r * K + k] > post[r * K + best])
        best = k;
    win[r] = best;
  }
  /* the domain-discovery options replace the decision (never the losses) */
  gboolean weighted = FALSE;
  if (ok && discovery) {
    double *w = g_new(double, (size_t)MAX(B, 1) * K);
    ok = discovery_assign(mx, model, b, ids, lprob, lp_e, w, &weighted, error);
    for (int r = 0; ok && r < B; r++)
      for (int k = 0; k < K; k++) {
        if (mx->cfg.hard && w[r * K + k] == 1.0)
          win[r] = k;
        if (!mx->cfg.hard)
          post[r * K + k] = w[r * K + k];
      }
    if (weighted)
      memcpy(post, w, sizeof(double) * B * K);
    g_free(w);
  }
  /* the prior of the M-step (with the gate's dropout) */
  if (ok)
    ok = prior(mx->gate, &mx->cfg, b, ids, lp_m, error);
  float *dlogpi = g_new0(float, (size_t)B * K);
  double loss = 0;
  if (ok && weighted) {
    ok = weighted_hard_mstep(mx, model, b, ids, post, lp_m, dlogpi, &loss, error);
  } else if (ok && mx->cfg.hard) {
    int32_t *src = g_memdup2(b->batch.src, (size_t)B * T * sizeof(int32_t));
    float *w = g_new(float, B), *rows = g_new(float, B);
    for (int r = 0; r < B; r++) {
      src[(size_t)r * T] = mx->cfg.expert_token0 + win[r];
      w[r] = 1.0f;
      dlogpi[r * K + win[r]] = -1.0f;
    }
    MoelmBatch one = {B, T, src, b->batch.tgt};
    ok = moelm_model_train_step(model, &one, ids, w, NULL, rows, error);
    for (int r = 0; ok && r < B; r++)
      loss -= (double)rows[r] + lp_m[r * K + win[r]];
    g_free(src);
    g_free(w);
    g_free(rows);
  } else if (ok) {
    int32_t *src = g_new(int32_t, (size_t)B * K * T), *tgt = g_new(int32_t, (size_t)B * K * T);
    moelm_mixture_expand_rows(b->batch.src, b->batch.tgt, B, T, K, mx->cfg.expert_token0, src, tgt);
    float *w = g_new(float, (size_t)B * K), *rows = g_new(float, (size_t)B * K);
    for (int i = 0; i < B * K; i++) {
      w[i] = (float)post[i];
      dlogpi[i] = (float)-post[i];
    }
    MoelmBatch all = {B * K, T, src, tgt};
    ok = moelm_model_train_step(model, &all, ids, w, NULL, rows, error);
    for (int r = 0; ok && r < B; r++) {
      for (int k = 0; k < K; k++)
        tmp[k] = (double)rows[r * K + k] + lp_m[r * K + k];
      loss -= logsumexp(tmp, K);
    }
    g_free(src);
    g_free(tgt);
    g_free(w);
    g_free(rows);
  }
  if (ok && mx->gate)
    ok = moelm_mean_pool_gate_backward(mx->gate, dlogpi, error);
  *loss_sum = loss;
  *sample_size = (double)b->ntokens;
  g_free(dlogpi);
  g_free(lp_e);
  g_free(lp_m);
  g_free(lprob);
  g_free(post);
  g_free(tmp);
  g_free(win);
  return ok;
}

static gboolean mix_valid(MoelmObjective *obj, MoelmModel *model, const MoelmLmBatch *b, double *loss_sum,
                          GError **error)
{
  Mixture *mx = obj->priv;
  if (!ensure_gate(mx, model, error))
    return FALSE;
  const int B = b->batch.B, K = mx->cfg.num_experts;
  float *lp = g_new(float, (size_t)B * K), *lprob = g_new(float, (size_t)B * K);
  double *tmp = g_new(double, K);
  gboolean ok = moelm_mixture_estep(model, mx->gate, &mx->cfg, b, lp, lprob, error);
  if (ok && mx->tally_split != b->split) { /* a new split: what the log reports about it */
    moelm_domain_tally_free(mx->tally);
    mx->tally = moelm_domain_tally_new(b->split, K, error);
    mx->tally_split = mx->tally ? b->split : NULL;
    ok = mx->tally != NULL;
  }
  double loss = 0;
  for (int r = 0; ok && r < B; r++) {
    for (int k = 0; k < K; k++)
      tmp[k] = (double)lprob[r * K + k] + lp[r * K + k];
    loss -= logsumexp(tmp, K);
    moelm_domain_tally_add(mx->tally, b->indices->idx[r], lprob + r * K, lp + r * K);
  }
  *loss_sum = loss;
  g_free(lp);
  g_free(lprob);
  g_free(tmp);
  return ok;
}

static void mix_log_fields(MoelmObjective *obj, GString *line, const MoelmLogStyle *style, gboolean epoch)
{
  Mixture *mx = obj->priv;
  const int K = mx->cfg.num_experts;
  for (int k = 0; k < K; k++) /* the interval joins the epoch's sums once it is reported */
    mx->epoch_mass[k] += mx->mass[k];
  mx->epoch_rows += mx->rows;
  const double *mass = epoch ? mx->epoch_mass : mx->mass, rows = epoch ? mx->epoch_rows : mx->rows;
  GString *v = g_string_new(NULL);
  for (int k = 0; k < K; k++)
    g_string_append_printf(v, "%s%.3f", k ? "," : "", rows > 0 ? mass[k] / rows : 0.0);
  moelm_log_field_text(line, style, "expert_mass", v->str);
  g_string_free(v, TRUE);
  memset(mx->mass, 0, (size_t)K * sizeof(double));
  mx->rows = 0;
  if (epoch) {
    memset(mx->epoch_mass, 0, (size_t)K * sizeof(double));
    mx->epoch_rows = 0;
  }
}

static gboolean mix_all_reduce(MoelmObjective *obj, MoelmComm *comm, GError **error)
{
  Mixture *mx = obj->priv;
  const int K = mx->cfg.num_experts;
  double *v = g_new(double, (size_t)K + 1);
  memcpy(v, mx->mass, (size_t)K * sizeof(double));
  v[K] = mx->rows;
  gboolean ok = moelm_comm_allreduce_f64(comm, v, (size_t)K + 1, error);
  if (ok) {
    memcpy(mx->mass, v, (size_t)K * sizeof(double));
    mx->rows = v[K];
  }
  g_free(v);
  return ok;
}

/* Validation: expert_mass (the mean posterior of each expert over the split's blocks) and,
 * with DATA/{split}.domains, domain_acc and domain_acc_per_domain (documents assigned by their
 * whole-document posterior, experts matched one to one to the domains). */
static gboolean mix_valid_log_fields(MoelmObjective *obj, const MoelmLmSplit *split, MoelmComm *comm, GString *line,
                                     const MoelmLogStyle *style, GError **error)
{
  Mixture *mx = obj->priv;
  const int K = mx->cfg.num_experts;
  if (mx->tally_split != split) { /* this rank scored none of the split's batches */
    moelm_domain_tally_free(mx->tally);
    mx->tally = moelm_domain_tally_new(split, K, error);
    mx->tally_split = mx->tally ? split : NULL;
    if (mx->tally == NULL)
      return FALSE;
  }
  MoelmDomainTally *t = mx->tally;
  if (moelm_comm_size(comm) > 1 && !moelm_domain_tally_all_reduce(t, comm, error))
    return FALSE;
  GString *v = g_string_new(NULL);
  for (int k = 0; k < K; k++)
    g_string_append_printf(v, "%s%.3f", k ? "," : "", t->blocks > 0 ? t->mass[k] / t->blocks : 0.0);
  moelm_log_field_text(line, style, "expert_mass", v->str);
  g_string_free(v, TRUE);
  if (t->labels) {
    const int D = t->labels->n_domains;
    int64_t *counts = g_new(int64_t, (gsize)MAX(D, 1) * K);
    double acc, per;
    moelm_domain_tally_counts(t, counts);
    moelm_domain_accuracy(counts, D, K, &acc, &per, NULL);
    moelm_log_field(line, style, "domain_acc", acc, 3);
    moelm_log_field(line, style, "domain_acc_per_domain", per, 3);
    g_free(counts);
  }
  moelm_domain_tally_reset(t);
  return TRUE;
}

static void mix_detach(MoelmObjective *obj)
{
  Mixture *mx = obj->priv;
  /* the splits these point into go with the run */
  moelm_doc_memory_free(mx->memory);
  mx->memory = NULL;
  g_free(mx->clusters);
  mx->clusters = NULL;
  moelm_doc_map_free(mx->cluster_map);
  mx->cluster_map = NULL;
  mx->clustered = NULL;
  moelm_domain_tally_free(mx->tally);
  mx->tally = NULL;
  mx->tally_split = NULL;
  moelm_mean_pool_gate_free(mx->gate);
  mx->gate = NULL;
  mx->model = NULL;
}

static void mix_free(MoelmObjective *obj)
{
  Mixture *mx = obj->priv;
  g_free(mx->mass);
  g_free(mx->epoch_mass);
  g_free(mx);
}

MoelmObjective *moelm_mixture_objective_new(const MoelmMixtureConfig *cfg)
{
  Mixture *mx = g_new0(Mixture, 1);
  mx->cfg = *cfg;
  mx->mass = g_new0(double, cfg->num_experts);
  mx->epoch_mass = g_new0(double, cfg->num_experts);
  MoelmObjective *obj = g_new0(MoelmObjective, 1);
  obj->name = "language_model_moe";
  obj->train_batch = mix_train;
  obj->valid_batch = mix_valid;
  obj->log_fields = mix_log_fields;
  obj->all_reduce = mix_all_reduce;
  obj->valid_log_fields = mix_valid_log_fields;
  obj->detach = mix_detach;
  obj->free = mix_free;
  obj->priv = mx;
  return obj;
}
