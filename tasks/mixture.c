/* moelm — the sequence-level mixture objective: E-step, hard/soft M-step, learned prior. */
#include "config.h"

#include <math.h>
#include <string.h>

#include "gating/mean_pool.h"
#include "mixture.h"
#include "moelm/errors.h"

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

gboolean moelm_mixture_estep(MoelmModel *model, struct MoelmGate *gate, const MoelmMixtureConfig *cfg,
                             const MoelmLmBatch *b, float *log_prior, float *lprob, GError **error)
{
  const int B = b->batch.B, T = b->batch.T, K = cfg->num_experts;
  if (!prior(gate, cfg, b, NULL, log_prior, error))
    return FALSE;
  int32_t *src = g_new(int32_t, (size_t)B * K * T), *tgt = g_new(int32_t, (size_t)B * K * T);
  moelm_mixture_expand_rows(b->batch.src, b->batch.tgt, B, T, K, cfg->expert_token0, src, tgt);
  MoelmBatch all = {B * K, T, src, tgt};
  gboolean ok = moelm_model_score(model, &all, NULL, NULL, lprob, error);
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

typedef struct {
  MoelmMixtureConfig cfg;
  MoelmModel *model; /* the model the gate was built for */
  struct MoelmGate *gate;
  double *mass;      /* (K) posterior mass since the last log line */
  double rows;
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

static gboolean mix_train(MoelmObjective *obj, MoelmModel *model, const MoelmLmBatch *b, const MoelmStepIds *ids,
                          double *loss_sum, double *sample_size, GError **error)
{
  Mixture *mx = obj->priv;
  if (!ensure_gate(mx, model, error))
    return FALSE;
  const int B = b->batch.B, T = b->batch.T, K = mx->cfg.num_experts;
  float *lp_e = g_new(float, (size_t)B * K), *lprob = g_new(float, (size_t)B * K);
  float *lp_m = g_new(float, (size_t)B * K);
  double *post = g_new(double, (size_t)B * K), *tmp = g_new(double, K);
  gboolean ok = moelm_mixture_estep(model, mx->gate, &mx->cfg, b, lp_e, lprob, error);
  for (int r = 0; ok && r < B; r++) { /* posterior = softmax(lprob + log π) */
    for (int k = 0; k < K; k++)
      tmp[k] = (double)lprob[r * K + k] + lp_e[r * K + k];
    const double z = logsumexp(tmp, K);
    for (int k = 0; k < K; k++) {
      post[r * K + k] = exp(tmp[k] - z);
      mx->mass[k] += post[r * K + k];
    }
    mx->rows++;
  }
  /* the prior of the M-step (with the gate's dropout) */
  if (ok)
    ok = prior(mx->gate, &mx->cfg, b, ids, lp_m, error);
  float *dlogpi = g_new0(float, (size_t)B * K);
  double loss = 0;
  if (ok && mx->cfg.hard) {
    int32_t *src = g_memdup2(b->batch.src, (size_t)B * T * sizeof(int32_t));
    float *w = g_new(float, B), *rows = g_new(float, B);
    int *win = g_new(int, B);
    for (int r = 0; r < B; r++) {
      int best = 0;
      for (int k = 1; k < K; k++)
        if (post[r * K + k] > post[r * K + best])
          best = k;
      win[r] = best;
      src[(size_t)r * T] = mx->cfg.expert_token0 + best;
      w[r] = 1.0f;
      dlogpi[r * K + best] = -1.0f;
    }
    MoelmBatch one = {B, T, src, b->batch.tgt};
    ok = moelm_model_train_step(model, &one, ids, w, NULL, rows, error);
    for (int r = 0; ok && r < B; r++)
      loss -= (double)rows[r] + lp_m[r * K + win[r]];
    g_free(src);
    g_free(w);
    g_free(rows);
    g_free(win);
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
  double loss = 0;
  for (int r = 0; ok && r < B; r++) {
    for (int k = 0; k < K; k++)
      tmp[k] = (double)lprob[r * K + k] + lp[r * K + k];
    loss -= logsumexp(tmp, K);
  }
  *loss_sum = loss;
  g_free(lp);
  g_free(lprob);
  g_free(tmp);
  return ok;
}

static void mix_log_fields(MoelmObjective *obj, GString *line, const MoelmLogStyle *style)
{
  Mixture *mx = obj->priv;
  GString *v = g_string_new(NULL);
  for (int k = 0; k < mx->cfg.num_experts; k++)
    g_string_append_printf(v, "%s%.3f", k ? "," : "", mx->rows > 0 ? mx->mass[k] / mx->rows : 0.0);
  moelm_log_field_text(line, style, "expert_mass", v->str);
  g_string_free(v, TRUE);
  memset(mx->mass, 0, (size_t)mx->cfg.num_experts * sizeof(double));
  mx->rows = 0;
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

static void mix_detach(MoelmObjective *obj)
{
  Mixture *mx = obj->priv;
  moelm_mean_pool_gate_free(mx->gate);
  mx->gate = NULL;
  mx->model = NULL;
}

static void mix_free(MoelmObjective *obj)
{
  Mixture *mx = obj->priv;
  g_free(mx->mass);
  g_free(mx);
}

MoelmObjective *moelm_mixture_objective_new(const MoelmMixtureConfig *cfg)
{
  Mixture *mx = g_new0(Mixture, 1);
  mx->cfg = *cfg;
  mx->mass = g_new0(double, cfg->num_experts);
  MoelmObjective *obj = g_new0(MoelmObjective, 1);
  obj->name = "language_model_moe";
  obj->train_batch = mix_train;
  obj->valid_batch = mix_valid;
  obj->log_fields = mix_log_fields;
  obj->all_reduce = mix_all_reduce;
  obj->detach = mix_detach;
  obj->free = mix_free;
  obj->priv = mx;
  return obj;
}
