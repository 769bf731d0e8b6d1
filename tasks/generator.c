/* moelm — fairseq's SequenceGenerator for one prompt of the language_modeling task: the
 * step loop, the bookkeeping of beams (tokens, cumulative scores, finished and ignored
 * candidates) and the incremental decoder's cache, which follows the beams by reordering. */
#include "config.h"

#include <math.h>
#include <string.h>

#include "generator.h"
#include "generator_search.h"
#include "moelm/dictionary.h"
#include "moelm/errors.h"

/* The Philox stream words of generation (the other word is the prompt's stream number). */
#define GEN_RNG_STREAM 0x67656e31u /* "gen1" */

struct MoelmGenerator {
  MoelmModel *model;
  MoelmGeneratorConfig cfg;
  int V, beam, max_positions;
  gboolean *banned; /* (V) */
  GenScratch scratch;
};

void moelm_generator_config_init(MoelmGeneratorConfig *cfg)
{
  memset(cfg, 0, sizeof *cfg);
  cfg->beam = 5;
  cfg->sampling_topk = -1;
  cfg->sampling_topp = -1.0;
  cfg->temperature = 1.0;
  cfg->max_len_a = 0.0;
  cfg->max_len_b = 200;
  cfg->min_len = 1;
  cfg->normalize_scores = TRUE;
  cfg->lenpen = 1.0;
  cfg->unkpen = 0.0;
  cfg->bos = MOELM_EOS;
  cfg->seed = 1;
}

void moelm_hypothesis_free(MoelmHypothesis *hyp)
{
  if (hyp == NULL)
    return;
  g_free(hyp->tokens);
  g_free(hyp->positional_scores);
  g_free(hyp);
}

gboolean moelm_generator_config_check(const MoelmGeneratorConfig *c, GError **error)
{
  const char *problem = NULL;
  if (c->beam < 1)
    problem = "--beam must be at least 1";
  else if (!(c->temperature > 0))
    problem = "--temperature must be greater than 0";
  else if (c->sampling_topk >= 0 && !c->sampling)
    problem = "--sampling-topk requires --sampling";
  else if (c->sampling_topp >= 0 && !c->sampling)
    problem = "--sampling-topp requires --sampling";
  else if (c->no_repeat_ngram_size < 0)
    problem = "--no-repeat-ngram-size must not be negative";
  if (problem) {
    g_set_error_literal(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG, problem);
    return FALSE;
  }
  return TRUE;
}

MoelmGenerator *moelm_generator_new(MoelmModel *model, const MoelmGeneratorConfig *cfg, GError **error)
{
  const MoelmModelConfig *mc = moelm_model_get_config(model);
  if (!moelm_generator_config_check(cfg, error))
    return NULL;
  if (mc->vocab_size < MOELM_NSPECIAL || cfg->bos < 0 || cfg->bos >= mc->vocab_size) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG,
                "cannot generate from a vocabulary of %d with BOS token %d", mc->vocab_size, cfg->bos);
    return NULL;
  }
  MoelmGenerator *gen = g_new0(MoelmGenerator, 1);
  gen->model = model;
  gen->cfg = *cfg;
  gen->V = mc->vocab_size;
  gen->max_positions = mc->max_positions;
  /* the beam can hold at most V - 1 hypotheses, since <pad> is never chosen */
  gen->beam = cfg->beam < gen->V - 1 ? cfg->beam : gen->V - 1;
  gen->banned = g_new0(gboolean, gen->V);
  gen_scratch_init(&gen->scratch, gen->V, gen->beam);
  return gen;
}

void moelm_generator_free(MoelmGenerator *gen)
{
  if (gen == NULL)
    return;
  gen_scratch_clear(&gen->scratch);
  g_free(gen->banned);
  g_free(gen);
}

gboolean moelm_generator_ban_token(MoelmGenerator *gen, int32_t token, GError **error)
{
  if (token < 0 || token >= gen->V || token == MOELM_EOS) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG, "cannot ban token %d (vocabulary of %d, </s> = %d)",
                token, gen->V, MOELM_EOS);
    return FALSE;
  }
  gen->banned[token] = TRUE;
  return TRUE;
}

gboolean moelm_generator_set_bos(MoelmGenerator *gen, int32_t bos, GError **error)
{
  if (bos < 0 || bos >= gen->V) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG, "cannot start from token %d (vocabulary of %d)", bos,
                gen->V);
    return FALSE;
  }
  gen->cfg.bos = bos;
  return TRUE;
}

/* fairseq's max_len: min(int(a·src_len + b), max positions - 1), src_len counting the BOS. */
static int max_len_for(const MoelmGenerator *gen, int prompt_len)
{
  const double want = gen->cfg.max_len_a * (prompt_len + 1) + gen->cfg.max_len_b;
  const int cap = gen->max_positions - 1;
  return want >= cap ? cap : (int)want;
}

int moelm_generator_max_tokens(const MoelmGenerator *gen, int prompt_len) { return max_len_for(gen, prompt_len) + 1; }

/* One prompt's search state; rows are the K beams (or samples). */
typedef struct {
  MoelmGenerator *gen;
  const int32_t *prompt;
  int prompt_len;
  int K, V, max_len;
  int tw, sw;                  /* row widths of tokens (max_len + 2) and scores (max_len + 1) */
  int32_t *tokens, *tokens2;   /* (K, tw): BOS, then one token per step */
  float *scores, *scores2;     /* (K, sw): cumulative log-prob after each step */
  float *lprobs;               /* (K, V) */
  float *prev;                 /* (K) each row's cumulative score before this step */
  int32_t *feed, *order;       /* (K) */
  gboolean *ignore, *ignore2;  /* (K) rows whose candidate may not finish (fairseq's cands_to_ignore) */
  gboolean *eos_mask;          /* (2K) */
  int *active;                 /* (K) */
  GenCandidates cand;          /* (2K) */
  MoelmRng rng;
  MoelmKvCache *cache;
  GPtrArray *finalized;
} Search;

static void search_clear(Search *s)
{
  g_free(s->tokens);
  g_free(s->tokens2);
  g_free(s->scores);
  g_free(s->scores2);
  g_free(s->lprobs);
  g_free(s->prev);
  g_free(s->feed);
  g_free(s->order);
  g_free(s->ignore);
  g_free(s->ignore2);
  g_free(s->eos_mask);
  g_free(s->active);
  g_free(s->cand.score);
  g_free(s->cand.token);
  g_free(s->cand.beam);
  moelm_kv_cache_free(s->cache);
}

/* Make every row a copy of row 0 (fairseq's replicate_first_beam, when the prompt holds </s>). */
static void replicate_first_row(Search *s)
{
  for (int r = 1; r < s->K; r++) {
    memcpy(s->tokens + (size_t)r * s->tw, s->tokens, (size_t)s->tw * sizeof(int32_t));
    memcpy(s->scores + (size_t)r * s->sw, s->scores, (size_t)s->sw * sizeof(float));
    memcpy(s->lprobs + (size_t)r * s->V, s->lprobs, (size_t)s->V * sizeof(float));
  }
}

/* SequenceGenerator's shaping of the step's log-probs, in its order. */
static void shape_lprobs(Search *s, int step)
{
  const MoelmGeneratorConfig *c = &s->gen->cfg;
  const int V = s->V;
  const gboolean prompt_step = step < s->prompt_len && step < s->max_len;
  const int32_t forced = prompt_step ? s->prompt[step] : -1;
  for (int r = 0; r < s->K; r++) {
    float *lp = s->lprobs + (size_t)r * V;
    if (c->temperature != 1.0)
      gen_apply_temperature(lp, V, c->temperature);
    for (int v = 0; v < V; v++)
      if (isnan(lp[v]))
        lp[v] = -INFINITY;
    lp[MOELM_PAD] = -INFINITY;
    lp[MOELM_UNK] -= (float)c->unkpen;
    if (step >= s->max_len)
      for (int v = 0; v < V; v++)
        if (v != MOELM_EOS)
          lp[v] = -INFINITY;
    if (prompt_step && forced != MOELM_PAD) { /* fairseq leaves a <pad> prompt position free */
      const float keep = lp[forced];
      for (int v = 0; v < V; v++)
        lp[v] = -INFINITY;
      lp[forced] = keep;
      continue;
    }
    if (!prompt_step && step < c->min_len) /* the minimum length does not apply to prompt steps */
      lp[MOELM_EOS] = -INFINITY;
    for (int v = 0; v < V; v++)
      if (s->gen->banned[v])
        lp[v] = -INFINITY;
    if (c->no_repeat_ngram_size > 0 && step < s->max_len && step >= c->no_repeat_ngram_size - 1)
      gen_block_ngrams(lp, s->tokens + (size_t)r * s->tw + 1, step, c->no_repeat_ngram_size);
  }
  if (forced == MOELM_EOS)
    replicate_first_row(s);
}

/* A finished hypothesis: row `row`'s tokens after the BOS, then </s> with cumulative score
 * `eos_score` at `step`. */
static MoelmHypothesis *make_hypothesis(const Search *s, int row, int step, float eos_score)
{
  MoelmHypothesis *h = g_new0(MoelmHypothesis, 1);
  h->len = step + 1;
  h->tokens = g_new(int32_t, h->len);
  h->positional_scores = g_new(float, h->len);
  memcpy(h->tokens, s->tokens + (size_t)row * s->tw + 1, (size_t)step * sizeof(int32_t));
  h->tokens[step] = MOELM_EOS;
  /* per-position scores are differences of the cumulative ones, as fairseq computes them */
  const float *cum = s->scores + (size_t)row * s->sw;
  float before = 0.0f;
  for (int i = 0; i <= step; i++) {
    const float now = i < step ? cum[i] : eos_score;
    h->positional_scores[i] = i == 0 ? now : now - before;
    before = now;
  }
  h->score = eos_score;
  if (s->gen->cfg.normalize_scores)
    h->score = eos_score / (float)pow(step + 1, s->gen->cfg.lenpen);
  return h;
}

/* Finish the hypotheses whose candidate among the first K is a possible </s>. */
static void finalize_eos(Search *s, int step)
{
  for (int j = 0; j < s->cand.n; j++) {
    s->eos_mask[j] = s->cand.token[j] == MOELM_EOS && s->cand.score[j] != -INFINITY;
    if (j < s->K && s->ignore[j])
      s->eos_mask[j] = FALSE;
    if (j < s->K && s->eos_mask[j] && (int)s->finalized->len < s->K)
      g_ptr_array_add(s->finalized, make_hypothesis(s, s->cand.beam[j], step, s->cand.score[j]));
  }
}

/* Keep K candidates, those that did not finish first (fairseq's active_mask and topk), and
 * move tokens, scores and the decoder cache to follow them. */
static gboolean advance(Search *s, int step, GError **error)
{
  int k = 0;
  for (int pass = 0; pass < 2; pass++)
    for (int j = 0; j < s->cand.n && k < s->K; j++) {
      const gboolean out = s->eos_mask[j] || (j < s->K && s->ignore[j]);
      if (out == (pass == 1)) {
        s->active[k] = j;
        s->ignore2[k++] = out;
      }
    }
  gboolean identity = TRUE;
  for (int i = 0; i < s->K; i++) {
    const int j = s->active[i], from = s->cand.beam[j];
    s->order[i] = from;
    identity = identity && from == i;
    memcpy(s->tokens2 + (size_t)i * s->tw, s->tokens + (size_t)from * s->tw, (size_t)(step + 1) * sizeof(int32_t));
    s->tokens2[(size_t)i * s->tw + step + 1] = s->cand.token[j];
    memcpy(s->scores2 + (size_t)i * s->sw, s->scores + (size_t)from * s->sw, (size_t)step * sizeof(float));
    s->scores2[(size_t)i * s->sw + step] = s->cand.score[j];
  }
  int32_t *t = s->tokens;
  s->tokens = s->tokens2;
  s->tokens2 = t;
  float *f = s->scores;
  s->scores = s->scores2;
  s->scores2 = f;
  gboolean *g = s->ignore;
  s->ignore = s->ignore2;
  s->ignore2 = g;
  return identity || moelm_kv_cache_reorder(s->cache, s->order, error);
}

static gint compare_score_desc(gconstpointer a, gconstpointer b)
{
  const MoelmHypothesis *x = *(MoelmHypothesis *const *)a, *y = *(MoelmHypothesis *const *)b;
  return (x->score < y->score) - (x->score > y->score);
}

static gboolean run_search(Search *s, GError **error)
{
  const MoelmGeneratorConfig *c = &s->gen->cfg;
  for (int step = 0; step <= s->max_len; step++) {
    for (int r = 0; r < s->K; r++)
      s->feed[r] = s->tokens[(size_t)r * s->tw + step];
    if (!moelm_model_decode(s->gen->model, s->cache, s->feed, 1, s->lprobs, error))
      return FALSE;
    shape_lprobs(s, step);
    /* the previous cumulative scores, one per row (none on the first step) */
    for (int r = 0; r < s->K && step > 0; r++)
      s->prev[r] = s->scores[(size_t)r * s->sw + step - 1];
    const float *prev = step > 0 ? s->prev : NULL;
    if (c->sampling)
      gen_sampling_step(s->lprobs, prev, s->K, s->V, c->sampling_topk, c->sampling_topp, &s->rng, &s->gen->scratch,
                        &s->cand);
    else
      gen_beam_step(s->lprobs, prev, s->K, s->V, &s->gen->scratch, &s->cand);
    finalize_eos(s, step);
    if ((int)s->finalized->len >= s->K || step == s->max_len)
      break;
    if (!advance(s, step, error))
      return FALSE;
  }
  /* stable: equal scores keep the order in which they finished */
  g_ptr_array_sort(s->finalized, compare_score_desc);
  return TRUE;
}

GPtrArray *moelm_generator_generate(MoelmGenerator *gen, const int32_t *prompt, int prompt_len, uint64_t stream,
                                    GError **error)
{
  const MoelmGeneratorConfig *c = &gen->cfg;
  const int max_len = max_len_for(gen, prompt_len);
  if (max_len < 0 || c->min_len > max_len) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG,
                "min_len cannot be larger than max_len, please adjust these! (--min-len %d, max_len %d)", c->min_len,
                max_len);
    return NULL;
  }
  for (int i = 0; i < prompt_len; i++)
    if (prompt[i] < 0 || prompt[i] >= gen->V) {
      g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG, "prompt token %d is outside the vocabulary of %d",
                  prompt[i], gen->V);
      return NULL;
    }
  Search s = {0};
  s.gen = gen;
  s.prompt = prompt;
  s.prompt_len = prompt_len;
  s.K = gen->beam;
  s.V = gen->V;
  s.max_len = max_len;
  s.tw = max_len + 2;
  s.sw = max_len + 1;
  const size_t K = (size_t)s.K;
  s.tokens = g_new(int32_t, K * s.tw);
  s.tokens2 = g_new(int32_t, K * s.tw);
  s.scores = g_new0(float, K * s.sw);
  s.scores2 = g_new0(float, K * s.sw);
  s.lprobs = g_new(float, K * s.V);
  s.prev = g_new(float, K);
  s.feed = g_new(int32_t, K);
  s.order = g_new(int32_t, K);
  s.ignore = g_new0(gboolean, K);
  s.ignore2 = g_new0(gboolean, K);
  s.eos_mask = g_new0(gboolean, 2 * K);
  s.active = g_new(int, K);
  s.cand.score = g_new(float, 2 * K);
  s.cand.token = g_new(int32_t, 2 * K);
  s.cand.beam = g_new(int32_t, 2 * K);
  for (size_t i = 0; i < K * s.tw; i++)
    s.tokens[i] = MOELM_PAD;
  for (size_t r = 0; r < K; r++)
    s.tokens[r * s.tw] = c->bos;
  moelm_rng_init(&s.rng, c->seed, GEN_RNG_STREAM ^ (uint32_t)(stream >> 32), (uint32_t)stream);
  s.finalized = g_ptr_array_new_with_free_func((GDestroyNotify)moelm_hypothesis_free);
  s.cache = moelm_kv_cache_new(gen->model, s.K, max_len + 1, error);
  if (s.cache == NULL || !run_search(&s, error)) {
    g_ptr_array_unref(s.finalized);
    search_clear(&s);
    return NULL;
  }
  search_clear(&s);
  return s.finalized;
}
