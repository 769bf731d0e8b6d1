/* moelm — the sequence-level mixture's exact marginal for eval-lm, and expert posteriors of
 * prompts for generation. */
#include "config.h"

#include <math.h>
#include <string.h>

#include "mixture_scorer.h"
#include "moelm/errors.h"

void moelm_mixture_report_init(MoelmMixtureReport *r, int K)
{
  memset(r, 0, sizeof *r);
  r->K = K;
  r->expert_nll = g_new0(double, K);
  r->post_mass = g_new0(double, K);
  r->best_rows = g_new0(int64_t, K);
  r->assigned = g_new0(int64_t, K);
}

void moelm_mixture_report_clear(MoelmMixtureReport *r)
{
  g_free(r->expert_nll);
  g_free(r->post_mass);
  g_free(r->best_rows);
  g_free(r->assigned);
  g_strfreev(r->domain_names);
  g_free(r->domain_counts);
  moelm_domain_tally_free(r->tally);
  memset(r, 0, sizeof *r);
}

/* log Σ_k exp(a_k + b_k) in double (b may be NULL). */
static double lse(const double *a, const double *b, int K)
{
  double mx = -INFINITY;
  for (int k = 0; k < K; k++)
    mx = fmax(mx, a[k] + (b ? b[k] : 0.0));
  if (!isfinite(mx))
    return mx;
  double s = 0;
  for (int k = 0; k < K; k++)
    s += exp(a[k] + (b ? b[k] : 0.0) - mx);
  return mx + log(s);
}

/* log π (B, K): uniform, or the gate (no dropout) on the G stream tokens before stream
 * offset ends[b]. */
static gboolean row_prior(MoelmGate *gate, const MoelmMixtureConfig *cfg, const MoelmLmSplit *split,
                          const int64_t *ends, int B, float *log_prior, GError **error)
{
  const int K = cfg->num_experts;
  if (gate == NULL) {
    for (int i = 0; i < B * K; i++)
      log_prior[i] = (float)-log((double)K);
    return TRUE;
  }
  const int G = MAX(cfg->gating_context, 1);
  int32_t *ctx = g_new0(int32_t, (gsize)B * G);
  int *lens = g_new0(int, B);
  for (int b = 0; b < B && cfg->gating_context > 0; b++) {
    const int64_t end = MAX(ends[b], 0), begin = MAX(end - cfg->gating_context, 0);
    lens[b] = (int)(end - begin);
    if (lens[b] > 0)
      moelm_token_blocks_stream(split->blocks, split->ds, begin, end, ctx + (gsize)b * G);
  }
  gboolean ok = moelm_mean_pool_gate_forward(gate, ctx, lens, B, G, NULL, log_prior, error);
  g_free(ctx);
  g_free(lens);
  return ok;
}

/* Score rows (R, T) in model calls of at most `call_logits` logits: tok (R, T). */
static gboolean score_in_calls(MoelmModel *m, const int32_t *src, const int32_t *tgt, int R, int T,
                               int64_t call_logits, float *tok, GError **error)
{
  const int64_t V = moelm_model_get_config(m)->vocab_size;
  int per_call = R;
  if (call_logits > 0)
    per_call = (int)MAX(1, MIN((int64_t)R, call_logits / ((int64_t)T * V)));
  for (int r0 = 0; r0 < R; r0 += per_call) {
    const int n = MIN(per_call, R - r0);
    const gsize off = (gsize)r0 * T;
    const MoelmBatch b = {.B = n, .T = T, .src = src + off, .tgt = tgt + off};
    if (!moelm_model_score(m, &b, NULL, tok + off, NULL, error))
      return FALSE;
  }
  return TRUE;
}

typedef struct {
  MoelmModel *model;
  MoelmGate *gate;
  const MoelmMixtureConfig *cfg;
  const MoelmLmSplit *split;
  int64_t call_logits;
  MoelmMixtureReport *report;
} MixRows;

/* The block of `split` whose first target is at stream offset `start`. */
static gsize block_at(const MoelmLmSplit *split, int64_t start)
{
  gsize lo = 0, hi = moelm_lm_split_n_blocks(split);
  while (hi - lo > 1) {
    const gsize mid = lo + (hi - lo) / 2;
    if (moelm_token_blocks_slice(split->blocks, mid).start <= start)
      lo = mid;
    else
      hi = mid;
  }
  return lo;
}

/* One row's scores from its experts' per-position log-probs tok_k (K rows of width W). */
static void row_scores(const float *tok, int W, int K, const float *log_prior, int ctx, int64_t len, float *lprobs,
                       MoelmMixtureReport *report, gsize block)
{
  double *lp = g_new(double, K), *c = g_new0(double, K), *c_ctx = g_new0(double, K);
  for (int k = 0; k < K; k++)
    lp[k] = log_prior[k];
  double before = lse(lp, NULL, K);
  for (int64_t t = 0; t < ctx + len; t++) {
    for (int k = 0; k < K; k++)
      c[k] += tok[(gsize)k * W + t];
    const double now = lse(lp, c, K);
    if (t >= ctx)
      lprobs[t] = isinf(now) && now < 0 ? -INFINITY : (float)(now - before);
    before = now;
    if (t + 1 == ctx)
      memcpy(c_ctx, c, (gsize)K * sizeof(double));
  }
  if (report) {
    int best = 0;
    for (int k = 0; k < K; k++) {
      const double scored = c[k] - c_ctx[k];
      report->expert_nll[k] -= scored;
      report->post_mass[k] += exp(lp[k] + c[k] - before);
      if (scored > c[best] - c_ctx[best])
        best = k;
    }
    report->oracle_nll -= c[best] - c_ctx[best];
    report->best_rows[best]++;
    report->rows++;
    /* training's rule on the scored tokens */
    float *scored = g_new(float, K);
    int pick = 0;
    for (int k = 0; k < K; k++) {
      scored[k] = (float)(c[k] - c_ctx[k]);
      if (lp[k] + c[k] - c_ctx[k] > lp[pick] + c[pick] - c_ctx[pick])
        pick = k;
    }
    if (!report->by_document)
      report->assigned[pick]++;
    if (report->tally)
      moelm_domain_tally_add(report->tally, block, scored, log_prior);
    g_free(scored);
  }
  g_free(lp);
  g_free(c);
  g_free(c_ctx);
}

static gboolean mix_score_rows(const MoelmScoreRows *rows, float *lprobs, gpointer data, GError **error)
{
  MixRows *mr = data;
  const int B = rows->B, W = rows->W, K = mr->cfg->num_experts;
  float *log_prior = g_new(float, (gsize)B * K);
  int64_t *ends = g_new(int64_t, B);
  for (int b = 0; b < B; b++)
    ends[b] = rows->start[b] - rows->ctx[b];
  gboolean ok = row_prior(mr->gate, mr->cfg, mr->split, ends, B, log_prior, error);
  /* the rows' own next tokens as targets over the context, then the block's targets */
  int32_t *tgt = g_memdup2(rows->tgt, (gsize)B * W * sizeof(int32_t));
  for (int b = 0; b < B; b++)
    for (int t = 0; t < rows->ctx[b]; t++)
      tgt[(gsize)b * W + t] = rows->src[(gsize)b * W + t + 1];
  const gsize cells = (gsize)B * K * W;
  int32_t *src_k = g_new(int32_t, cells), *tgt_k = g_new(int32_t, cells);
  float *tok = g_new(float, cells);
  moelm_mixture_expand_rows(rows->src, tgt, B, W, K, mr->cfg->expert_token0, src_k, tgt_k);
  if (ok)
    ok = score_in_calls(mr->model, src_k, tgt_k, B * K, W, mr->call_logits, tok, error);
  for (int b = 0; ok && b < B; b++)
    row_scores(tok + (gsize)b * K * W, W, K, log_prior + (gsize)b * K, rows->ctx[b], rows->len[b],
               lprobs + (gsize)b * W, mr->report, mr->report ? block_at(mr->split, rows->start[b]) : 0);
  g_free(log_prior);
  g_free(ends);
  g_free(tgt);
  g_free(src_k);
  g_free(tgt_k);
  g_free(tok);
  return ok;
}

static gboolean check_config(MoelmModel *m, MoelmGate *gate, const MoelmMixtureConfig *cfg, GError **error)
{
  const int V = moelm_model_get_config(m)->vocab_size;
  if (cfg->num_experts < 1 || cfg->expert_token0 < MOELM_NSPECIAL || cfg->expert_token0 + cfg->num_experts > V ||
      (gate && moelm_mean_pool_gate_experts(gate) != cfg->num_experts)) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG,
                "mixture of %d experts from token %d does not fit the model (vocabulary %d, gate of %d experts)",
                cfg->num_experts, cfg->expert_token0, V, gate ? moelm_mean_pool_gate_experts(gate) : 0);
    return FALSE;
  }
  return TRUE;
}

/* The document rule's assignments and, with labels, the domain accuracy. */
static void report_documents(MoelmMixtureReport *r)
{
  const MoelmDomainTally *t = r->tally;
  const int K = r->K;
  for (guint d = 0; r->by_document && d < t->map->n_docs; d++) {
    if (!t->doc_seen[d])
      continue;
    int best = 0;
    for (int k = 1; k < K; k++)
      if (t->doc_score[(gsize)d * K + k] > t->doc_score[(gsize)d * K + best])
        best = k;
    r->assigned[best]++;
  }
  r->has_accuracy = t->labels != NULL;
  if (r->has_accuracy) {
    int64_t *counts = g_new(int64_t, (gsize)MAX(t->labels->n_domains, 1) * K);
    moelm_domain_tally_counts(t, counts);
    moelm_domain_accuracy(counts, t->labels->n_domains, K, &r->accuracy, &r->per_domain, NULL);
    g_free(r->domain_counts);
    g_strfreev(r->domain_names);
    r->n_domains = t->labels->n_domains;
    r->domain_counts = counts;
    r->domain_names = g_new0(char *, (gsize)r->n_domains + 1);
    for (int d = 0; d < r->n_domains; d++)
      r->domain_names[d] = g_strdup(t->labels->names[d]);
  }
}

gboolean moelm_mixture_score_split(MoelmModel *m, MoelmGate *gate, const MoelmMixtureConfig *cfg,
                                   const MoelmLmSplit *split, const MoelmScoreOptions *opt, int64_t call_logits,
                                   MoelmScoredRowFunc cb, gpointer cb_data, MoelmScoreResult *out,
                                   MoelmMixtureReport *report, GError **error)
{
  if (!check_config(m, gate, cfg, error))
    return FALSE;
  MoelmScoreOptions o = *opt;
  if (o.max_positions <= 0)
    o.max_positions = moelm_model_get_config(m)->max_positions;
  MixRows mr = {m, gate, cfg, split, call_logits, report};
  if (report) {
    report->by_document = cfg->discovery.doc_estep;
    moelm_domain_tally_free(report->tally);
    report->tally = moelm_domain_tally_new(split, cfg->num_experts, error);
    if (report->tally == NULL)
      return FALSE;
  }
  if (!moelm_score_split_with(mix_score_rows, &mr, split, &o, cb, cb_data, out, error))
    return FALSE;
  if (report)
    report_documents(report);
  return TRUE;
}

gboolean moelm_mixture_prompt_log_joint(MoelmModel *m, MoelmGate *gate, const MoelmMixtureConfig *cfg,
                                        const int32_t *prompt, int n, double *log_joint, GError **error)
{
  if (!check_config(m, gate, cfg, error))
    return FALSE;
  const int K = cfg->num_experts;
  float *log_prior = g_new(float, K), *lp = g_new0(float, K);
  const int64_t none = 0;
  gboolean ok = row_prior(gate, cfg, NULL, &none, 1, log_prior, error);
  if (ok && n > 0) {
    /* row k: [<expert_k>, prompt[0..n-2]] predicting prompt[0..n-1] */
    int32_t *src = g_new(int32_t, n), *src_k = g_new(int32_t, (gsize)K * n), *tgt_k = g_new(int32_t, (gsize)K * n);
    src[0] = MOELM_EOS;
    memcpy(src + 1, prompt, (gsize)(n - 1) * sizeof(int32_t));
    moelm_mixture_expand_rows(src, prompt, 1, n, K, cfg->expert_token0, src_k, tgt_k);
    const MoelmBatch b = {.B = K, .T = n, .src = src_k, .tgt = tgt_k};
    ok = moelm_model_score(m, &b, NULL, NULL, lp, error);
    g_free(src);
    g_free(src_k);
    g_free(tgt_k);
  }
  for (int k = 0; ok && k < K; k++)
    log_joint[k] = (double)log_prior[k] + (double)lp[k];
  g_free(log_prior);
  g_free(lp);
  return ok;
}
