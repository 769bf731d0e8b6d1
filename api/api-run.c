/* moelm — the inference API: scoring (tasks/choice_scorer.h), the experts' posterior
 * (tasks/mixture_scorer.h) and generation (tasks/generator.h). */
#include "config.h"

#include <math.h>
#include <string.h>

#include "api-internal.h"
#include "moelm/errors.h"
#include "tasks/choice_scorer.h"
#include "tasks/generator.h"
#include "tasks/mixture_scorer.h"

/* The sequence as the hub scores it: without </s> at either end (fairseq's
 * StripTokenDataset), at most max_positions tokens. */
static gboolean strip_eos(const MoelmLM *lm, const int32_t *tokens, size_t n, size_t *lo, size_t *hi, GError **error)
{
  *lo = 0;
  *hi = n;
  while (*hi > 0 && tokens[*hi - 1] == MOELM_EOS)
    (*hi)--;
  while (*lo < *hi && tokens[*lo] == MOELM_EOS)
    (*lo)++;
  const int max_pos = moelm_lm_max_positions(lm);
  if (*hi - *lo > (size_t)max_pos) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG, "%zu tokens exceed the model's %d positions", *hi - *lo,
                max_pos);
    return FALSE;
  }
  return TRUE;
}

int moelm_lm_score(MoelmLM *lm, const int32_t *tokens, size_t n, size_t n_context, int expert, MoelmLMScores **out)
{
  if (lm == NULL || out == NULL || (tokens == NULL && n > 0))
    return api_fail_invalid("moelm_lm_score: lm, tokens and out are required");
  *out = NULL;
  GError *error = NULL;
  size_t lo, hi;
  if (!api_check_tokens(lm, tokens, n, &error) || !api_check_expert(lm, expert, &error) ||
      !strip_eos(lm, tokens, n, &lo, &hi, &error))
    return api_fail(error);
  if (n_context > n)
    return api_fail_invalid("n_context %zu exceeds the %zu tokens", n_context, n);
  const MoelmInference *inf = lm->inf;
  const MoelmChoiceScorer scorer = {inf->model, inf->task.mixture ? &inf->task.mix : NULL, inf->gate, expert};
  MoelmChoiceScore c;
  if (!moelm_score_continuation(&scorer, tokens, (int)n, (int)n_context, &c, &error)) {
    moelm_choice_score_clear(&c);
    return api_fail(error);
  }
  MoelmLMScores *s = g_new0(MoelmLMScores, 1);
  *s = (MoelmLMScores){(size_t)c.n, c.tokens, c.lprobs, c.sum, c.expert}; /* the arrays change hands */
  *out = s;
  return MOELM_OK;
}

void moelm_lm_scores_free(MoelmLMScores *s)
{
  if (s == NULL)
    return;
  g_free(s->tokens);
  g_free(s->lprobs);
  g_free(s);
}

/* log π_k + log p(tokens | <expert_k>) of a mixture, for a sequence without </s> ends. */
static gboolean log_joint_of(MoelmLM *lm, const int32_t *t, size_t n, double *log_joint, GError **error)
{
  const MoelmInference *inf = lm->inf;
  return moelm_mixture_prompt_log_joint(inf->model, inf->gate, &inf->task.mix, t, (int)n, log_joint, error);
}

int moelm_lm_posterior(MoelmLM *lm, const int32_t *tokens, size_t n, double *posterior, double *log_joint)
{
  if (lm == NULL || (tokens == NULL && n > 0))
    return api_fail_invalid("moelm_lm_posterior: lm and tokens are required");
  const int K = moelm_lm_num_experts(lm);
  if (K == 0)
    return api_fail_invalid("%s is a %s checkpoint: only a sequence-level mixture (--task language_model_moe) has "
                            "experts to take a posterior over",
                            lm->checkpoint, moelm_lm_task(lm));
  GError *error = NULL;
  size_t lo, hi;
  double *lj = g_new(double, K);
  if (!api_check_tokens(lm, tokens, n, &error) || !strip_eos(lm, tokens, n, &lo, &hi, &error) ||
      !log_joint_of(lm, tokens + lo, hi - lo, lj, &error)) {
    g_free(lj);
    return api_fail(error);
  }
  double m = -INFINITY, z = 0;
  for (int k = 0; k < K; k++)
    m = fmax(m, lj[k]);
  for (int k = 0; k < K; k++)
    z += exp(lj[k] - m);
  for (int k = 0; k < K; k++) {
    if (posterior)
      posterior[k] = exp(lj[k] - m) / z;
    if (log_joint)
      log_joint[k] = lj[k];
  }
  g_free(lj);
  return MOELM_OK;
}

/* ---- generation ------------------------------------------------------------------------ */

static gboolean generator_options(const char *const *options, MoelmGeneratorConfig *cfg, GError **error)
{
  moelm_generator_config_init(cfg);
  gboolean unnormalized = FALSE;
  gint64 seed = (gint64)cfg->seed;
  const ApiOption table[] = {
    {"beam", API_OPT_INT, &cfg->beam},
    {"sampling", API_OPT_BOOL, &cfg->sampling},
    {"sampling_topk", API_OPT_INT, &cfg->sampling_topk},
    {"sampling_topp", API_OPT_DOUBLE, &cfg->sampling_topp},
    {"temperature", API_OPT_DOUBLE, &cfg->temperature},
    {"max_len_a", API_OPT_DOUBLE, &cfg->max_len_a},
    {"max_len_b", API_OPT_INT, &cfg->max_len_b},
    {"min_len", API_OPT_INT, &cfg->min_len},
    {"lenpen", API_OPT_DOUBLE, &cfg->lenpen},
    {"unnormalized", API_OPT_BOOL, &unnormalized},
    {"unkpen", API_OPT_DOUBLE, &cfg->unkpen},
    {"no_repeat_ngram_size", API_OPT_INT, &cfg->no_repeat_ngram_size},
    {"seed", API_OPT_INT64, &seed},
    {NULL, 0, NULL},
  };
  if (!api_options_parse(options, table, error))
    return FALSE;
  cfg->normalize_scores = !unnormalized;
  cfg->seed = (uint64_t)seed; /* as `moelm generate --seed` takes it */
  return moelm_generator_config_check(cfg, error);
}

/* The expert to generate from: a fixed one, the best given the prompt (auto), or expert 0
 * for a mixture asked for nothing (fairseq's --gen-expert default); -1 for a plain LM. */
static gboolean choose_expert(MoelmLM *lm, const int32_t *prompt, size_t n, int expert, int *chosen, GError **error)
{
  const int K = moelm_lm_num_experts(lm);
  *chosen = K == 0 ? -1 : expert >= 0 ? expert : 0;
  if (K == 0 || expert != MOELM_EXPERT_AUTO)
    return TRUE;
  double *joint = g_new(double, K);
  const gboolean ok = log_joint_of(lm, prompt, n, joint, error);
  for (int k = 1; ok && k < K; k++) /* ties go to the lower k */
    if (joint[k] > joint[*chosen])
      *chosen = k;
  g_free(joint);
  return ok;
}

static MoelmLMHypotheses *hypotheses_from(GPtrArray *hyps, int expert)
{
  MoelmLMHypotheses *h = g_new0(MoelmLMHypotheses, 1);
  h->n = hyps->len;
  h->hyps = g_new0(MoelmLMHypothesis, MAX(hyps->len, 1));
  h->expert = expert;
  for (guint i = 0; i < hyps->len; i++) {
    const MoelmHypothesis *src = g_ptr_array_index(hyps, i);
    MoelmLMHypothesis *dst = &h->hyps[i];
    dst->n = (size_t)src->len;
    dst->tokens = g_memdup2(src->tokens, (gsize)MAX(src->len, 1) * sizeof(int32_t));
    dst->positional_scores = g_memdup2(src->positional_scores, (gsize)MAX(src->len, 1) * sizeof(float));
    dst->score = src->score;
  }
  return h;
}

int moelm_lm_generate(MoelmLM *lm, const int32_t *prompt, size_t n, int expert, uint64_t stream,
                      const char *const *options, MoelmLMHypotheses **out)
{
  if (lm == NULL || out == NULL || (prompt == NULL && n > 0))
    return api_fail_invalid("moelm_lm_generate: lm, prompt and out are required");
  *out = NULL;
  GError *error = NULL;
  MoelmGeneratorConfig cfg;
  int chosen = -1;
  if (!generator_options(options, &cfg, &error) || !api_check_tokens(lm, prompt, n, &error) ||
      !api_check_expert(lm, expert, &error))
    return api_fail(error);
  const int max_pos = moelm_lm_max_positions(lm);
  if (n + 1 > (size_t)max_pos)
    return api_fail_invalid("a prompt of %zu tokens is too long: the model has %d positions (BOS included)", n,
                            max_pos);
  if (!choose_expert(lm, prompt, n, expert, &chosen, &error))
    return api_fail(error);
  const MoelmInference *inf = lm->inf;
  const int K = moelm_lm_num_experts(lm);
  if (chosen >= 0)
    cfg.bos = inf->task.mix.expert_token0 + chosen;
  MoelmGenerator *gen = moelm_generator_new(inf->model, &cfg, &error);
  GPtrArray *hyps = NULL;
  for (int k = 0; gen && k < K; k++) /* expert tokens are never generated */
    if (!moelm_generator_ban_token(gen, inf->task.mix.expert_token0 + k, &error))
      goto out;
  if (gen)
    hyps = moelm_generator_generate(gen, prompt, (int)n, stream, &error);
out:
  moelm_generator_free(gen);
  if (hyps == NULL)
    return api_fail(error);
  *out = hypotheses_from(hyps, chosen);
  g_ptr_array_unref(hyps);
  return MOELM_OK;
}

void moelm_lm_hypotheses_free(MoelmLMHypotheses *h)
{
  if (h == NULL)
    return;
  for (size_t i = 0; i < h->n; i++) {
    g_free(h->hyps[i].tokens);
    g_free(h->hyps[i].positional_scores);
  }
  g_free(h->hyps);
  g_free(h);
}
