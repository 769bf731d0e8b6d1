/* The generator on a tiny random model: greedy search equals the argmax path recomputed
 * from scratch; beam hypotheses are sorted, distinct and scored like a full forward pass;
 * sampling is reproducible per seed, top-k 1 / tiny top-p / tiny temperature are greedy;
 * banned tokens never appear; length limits and n-gram blocking hold. */
#include "config.h"

#include <math.h>
#include <string.h>

#include "moelm-test.h"
#include "moelm/dictionary.h"
#include "moelm/model.h"
#include "tasks/generator.h"

enum { TV = 24, TPOS = 40 };

typedef struct {
  MoelmBackend *be;
  MoelmModel *model;
} Tiny;

/* A random model whose output layer is scaled up by `scale`, so its distributions are
 * peaked enough for beam search and sampling to differ from each other. */
static void tiny_init_scaled(Tiny *t, uint64_t seed, float scale)
{
  MoelmModelConfig cfg;
  memset(&cfg, 0, sizeof cfg);
  CU_ASSERT_TRUE_FATAL(moelm_model_config_set_arch(&cfg, "transformer_lm", NULL));
  cfg.vocab_size = TV;
  cfg.embed_dim = 16;
  cfg.ffn_dim = 32;
  cfg.layers = 2;
  cfg.heads = 2;
  cfg.max_positions = TPOS;
  cfg.dropout = cfg.attention_dropout = cfg.activation_dropout = 0.0;
  t->be = moelm_backend_cpu_new(FALSE, 1, NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(t->be);
  t->model = moelm_model_new(&cfg, t->be, NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(t->model);
  moelm_model_init_params(t->model, seed);
  const MoelmParam *out = moelm_model_find(t->model, "decoder.output_projection.weight");
  CU_ASSERT_PTR_NOT_NULL_FATAL(out);
  float *w = moelm_model_params(t->model) + out->offset;
  for (size_t i = 0; i < out->numel; i++)
    w[i] *= scale;
  moelm_model_config_clear(&cfg);
}

static void tiny_init(Tiny *t, uint64_t seed) { tiny_init_scaled(t, seed, 6.0f); }

static void tiny_clear(Tiny *t)
{
  moelm_model_free(t->model);
  moelm_backend_free(t->be);
}

static MoelmGenerator *make_gen(Tiny *t, const MoelmGeneratorConfig *cfg)
{
  GError *error = NULL;
  MoelmGenerator *g = moelm_generator_new(t->model, cfg, &error);
  if (g == NULL)
    g_printerr("\n  generator: %s\n", error->message);
  CU_ASSERT_PTR_NOT_NULL_FATAL(g);
  return g;
}

static GPtrArray *run_gen(MoelmGenerator *g, const int32_t *prompt, int n, uint64_t stream)
{
  GError *error = NULL;
  GPtrArray *hyps = moelm_generator_generate(g, prompt, n, stream, &error);
  if (hyps == NULL)
    g_printerr("\n  generate: %s\n", error->message);
  CU_ASSERT_PTR_NOT_NULL_FATAL(hyps);
  CU_ASSERT_FATAL(hyps->len > 0);
  return hyps;
}

static MoelmHypothesis *hyp(GPtrArray *hyps, guint i) { return g_ptr_array_index(hyps, i); }

static gboolean same_tokens(const MoelmHypothesis *a, const MoelmHypothesis *b)
{
  return a->len == b->len && memcmp(a->tokens, b->tokens, (size_t)a->len * sizeof(int32_t)) == 0;
}

static const int32_t PROMPT[] = {7, 11, 5};

/* The next-token log-probs after `seq` (n tokens, BOS first), decoded from scratch. */
static void fresh_lprobs(Tiny *t, const int32_t *seq, int n, float *lp)
{
  MoelmKvCache *kc = moelm_kv_cache_new(t->model, 1, n, NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(kc);
  CU_ASSERT_TRUE_FATAL(moelm_model_decode(t->model, kc, seq, n, lp, NULL));
  moelm_kv_cache_free(kc);
}

static void test_greedy_equals_argmax(void)
{
  Tiny t;
  tiny_init(&t, 3);
  MoelmGeneratorConfig cfg;
  moelm_generator_config_init(&cfg);
  cfg.beam = 1;
  cfg.max_len_b = 14;
  MoelmGenerator *g = make_gen(&t, &cfg);
  const int n = G_N_ELEMENTS(PROMPT), max_len = 14;
  CU_ASSERT_EQUAL(moelm_generator_max_tokens(g, n), max_len + 1);
  GPtrArray *hyps = run_gen(g, PROMPT, n, 0);
  CU_ASSERT_EQUAL_FATAL(hyps->len, 1);
  const MoelmHypothesis *h = hyp(hyps, 0);

  /* the reference: the prompt forced, then the argmax of a full recomputation each step */
  int32_t seq[TPOS] = {MOELM_EOS};
  float ref_pos[TPOS], lp[TV];
  int len = 0;
  for (int step = 0; step <= max_len; step++) {
    fresh_lprobs(&t, seq, step + 1, lp);
    lp[MOELM_PAD] = -INFINITY;
    int32_t pick;
    if (step < n) {
      pick = PROMPT[step];
    } else {
      if (step >= max_len)
        for (int v = 0; v < TV; v++)
          if (v != MOELM_EOS)
            lp[v] = -INFINITY;
      pick = 0;
      for (int v = 1; v < TV; v++)
        if (lp[v] > lp[pick])
          pick = v;
    }
    seq[step + 1] = pick;
    ref_pos[len++] = lp[pick];
    if (pick == MOELM_EOS)
      break;
  }
  CU_ASSERT_EQUAL_FATAL(h->len, len);
  double sum = 0;
  for (int i = 0; i < len; i++) {
    CU_ASSERT_EQUAL(h->tokens[i], seq[i + 1]);
    CU_ASSERT_DOUBLE_EQUAL(h->positional_scores[i], ref_pos[i], 1e-4);
    sum += ref_pos[i];
  }
  CU_ASSERT_EQUAL(h->tokens[len - 1], MOELM_EOS);
  CU_ASSERT_DOUBLE_EQUAL(h->score, sum / len, 1e-4);
  g_ptr_array_unref(hyps);
  moelm_generator_free(g);
  tiny_clear(&t);
}

/* Each positional score equals the model's log-prob of that token after the BOS and the
 * tokens before it, computed by one full forward pass. */
static void check_scored_like_forward(Tiny *t, const MoelmHypothesis *h)
{
  int32_t src[TPOS], tgt[TPOS];
  float tok[TPOS];
  for (int i = 0; i < h->len; i++) {
    src[i] = i == 0 ? MOELM_EOS : h->tokens[i - 1];
    tgt[i] = h->tokens[i];
  }
  MoelmBatch batch = {1, h->len, src, tgt};
  CU_ASSERT_TRUE_FATAL(moelm_model_score(t->model, &batch, NULL, tok, NULL, NULL));
  for (int i = 0; i < h->len; i++)
    CU_ASSERT_DOUBLE_EQUAL(h->positional_scores[i], tok[i], 1e-4);
}

static double positional_sum(const MoelmHypothesis *h)
{
  double s = 0;
  for (int i = 0; i < h->len; i++)
    s += h->positional_scores[i];
  return s;
}

static void test_beam_search(void)
{
  Tiny t;
  tiny_init(&t, 5);
  MoelmGeneratorConfig cfg;
  moelm_generator_config_init(&cfg);
  cfg.max_len_b = 12;
  cfg.beam = 1;
  MoelmGenerator *greedy = make_gen(&t, &cfg);
  cfg.beam = 5;
  MoelmGenerator *beam = make_gen(&t, &cfg);
  const int32_t prompts[3][2] = {{9, 4}, {13, 13}, {20, 6}};
  int better = 0;
  for (int p = 0; p < 3; p++) {
    GPtrArray *g1 = run_gen(greedy, prompts[p], 2, 0);
    GPtrArray *g5 = run_gen(beam, prompts[p], 2, 0);
    CU_ASSERT_EQUAL_FATAL(g5->len, 5);
    for (guint i = 0; i < g5->len; i++) {
      const MoelmHypothesis *h = hyp(g5, i);
      if (i > 0)
        CU_ASSERT(h->score <= hyp(g5, i - 1)->score);
      for (guint j = 0; j < i; j++)
        CU_ASSERT_FALSE(same_tokens(h, hyp(g5, j)));
      CU_ASSERT_EQUAL(h->tokens[0], prompts[p][0]);
      CU_ASSERT_EQUAL(h->tokens[1], prompts[p][1]);
      CU_ASSERT_EQUAL(h->tokens[h->len - 1], MOELM_EOS);
      CU_ASSERT(h->len <= 13);
      check_scored_like_forward(&t, h);
      /* positional scores add up to the unnormalised score (lenpen 1: score × length) */
      CU_ASSERT_DOUBLE_EQUAL(positional_sum(h), h->score * h->len, 1e-4 * h->len);
    }
    CU_ASSERT(hyp(g5, 0)->score >= hyp(g1, 0)->score - 1e-6);
    better += hyp(g5, 0)->score > hyp(g1, 0)->score + 1e-4;
    g_ptr_array_unref(g1);
    g_ptr_array_unref(g5);
  }
  CU_ASSERT(better > 0); /* the beam found something greedy search missed */
  moelm_generator_free(greedy);
  moelm_generator_free(beam);
  tiny_clear(&t);
}

static void test_normalisation(void)
{
  Tiny t;
  tiny_init(&t, 5);
  MoelmGeneratorConfig cfg;
  moelm_generator_config_init(&cfg);
  cfg.max_len_b = 10;
  cfg.beam = 3;
  cfg.normalize_scores = FALSE;
  MoelmGenerator *g = make_gen(&t, &cfg);
  GPtrArray *hyps = run_gen(g, PROMPT, 3, 0);
  for (guint i = 0; i < hyps->len; i++)
    CU_ASSERT_DOUBLE_EQUAL(hyp(hyps, i)->score, positional_sum(hyp(hyps, i)), 1e-4);
  g_ptr_array_unref(hyps);
  moelm_generator_free(g);
  cfg.normalize_scores = TRUE;
  cfg.lenpen = 2.0;
  g = make_gen(&t, &cfg);
  hyps = run_gen(g, PROMPT, 3, 0);
  for (guint i = 0; i < hyps->len; i++) {
    const MoelmHypothesis *h = hyp(hyps, i);
    CU_ASSERT_DOUBLE_EQUAL(h->score * h->len * h->len, positional_sum(h), 1e-3);
  }
  g_ptr_array_unref(hyps);
  moelm_generator_free(g);
  tiny_clear(&t);
}

static GPtrArray *sample(Tiny *t, MoelmGeneratorConfig *cfg, uint64_t seed, uint64_t stream)
{
  cfg->seed = seed;
  MoelmGenerator *g = make_gen(t, cfg);
  GPtrArray *hyps = run_gen(g, PROMPT, 3, stream);
  moelm_generator_free(g);
  return hyps;
}

static gboolean same_outputs(GPtrArray *a, GPtrArray *b)
{
  if (a->len != b->len)
    return FALSE;
  for (guint i = 0; i < a->len; i++)
    if (!same_tokens(hyp(a, i), hyp(b, i)) || hyp(a, i)->score != hyp(b, i)->score)
      return FALSE;
  return TRUE;
}

static void test_sampling_seeds(void)
{
  Tiny t;
  tiny_init(&t, 7);
  MoelmGeneratorConfig cfg;
  moelm_generator_config_init(&cfg);
  cfg.sampling = TRUE;
  cfg.beam = 4;
  cfg.max_len_b = 12;
  GPtrArray *a = sample(&t, &cfg, 7, 0), *b = sample(&t, &cfg, 7, 0);
  GPtrArray *c = sample(&t, &cfg, 8, 0), *d = sample(&t, &cfg, 7, 1);
  CU_ASSERT_EQUAL(a->len, 4);
  CU_ASSERT_TRUE(same_outputs(a, b));
  CU_ASSERT_FALSE(same_outputs(a, c));
  CU_ASSERT_FALSE(same_outputs(a, d));
  /* the samples differ among themselves too, and are scored like a forward pass */
  gboolean all_same = TRUE;
  for (guint i = 0; i < a->len; i++) {
    check_scored_like_forward(&t, hyp(a, i));
    all_same = all_same && same_tokens(hyp(a, i), hyp(a, 0));
  }
  CU_ASSERT_FALSE(all_same);
  GPtrArray *all[] = {a, b, c, d};
  for (gsize i = 0; i < G_N_ELEMENTS(all); i++)
    g_ptr_array_unref(all[i]);
  tiny_clear(&t);
}

/* Sampling restricted to the single most likely token is greedy search. */
static void test_sampling_degenerates_to_greedy(void)
{
  Tiny t;
  tiny_init(&t, 9);
  MoelmGeneratorConfig cfg;
  moelm_generator_config_init(&cfg);
  cfg.beam = 1;
  cfg.max_len_b = 16;
  GPtrArray *greedy = sample(&t, &cfg, 1, 0);
  CU_ASSERT_FATAL(hyp(greedy, 0)->len > 4); /* it generated past the prompt */
  cfg.sampling = TRUE;
  cfg.sampling_topk = 1;
  GPtrArray *topk = sample(&t, &cfg, 1, 0);
  cfg.sampling_topk = -1;
  cfg.sampling_topp = 1e-6;
  GPtrArray *topp = sample(&t, &cfg, 2, 0);
  cfg.sampling_topp = -1;
  cfg.temperature = 0.002;
  GPtrArray *cold = sample(&t, &cfg, 3, 0);
  GPtrArray *restricted[] = {topk, topp, cold};
  for (gsize i = 0; i < G_N_ELEMENTS(restricted); i++) {
    CU_ASSERT_TRUE(same_tokens(hyp(restricted[i], 0), hyp(greedy, 0)));
    if (i < 2) /* same log-probs, so the same score (temperature changes them) */
      CU_ASSERT_DOUBLE_EQUAL(hyp(restricted[i], 0)->score, hyp(greedy, 0)->score, 1e-5);
    g_ptr_array_unref(restricted[i]);
  }
  g_ptr_array_unref(greedy);
  tiny_clear(&t);
}

/* First tokens drawn over many streams follow the model's distribution, restricted to the
 * top-k / top-p set and renormalised there, as torch.multinomial draws. */
static void check_first_token_frequencies(Tiny *t, int topk, double topp)
{
  enum { RUNS = 3000 };
  MoelmGeneratorConfig cfg;
  moelm_generator_config_init(&cfg);
  cfg.sampling = TRUE;
  cfg.beam = 1;
  cfg.max_len_b = 1;
  cfg.sampling_topk = topk;
  cfg.sampling_topp = topp;
  cfg.seed = 42;
  MoelmGenerator *g = make_gen(t, &cfg);
  int counts[TV] = {0};
  for (int run = 0; run < RUNS; run++) {
    GPtrArray *hyps = run_gen(g, NULL, 0, (uint64_t)run);
    counts[hyp(hyps, 0)->tokens[0]]++;
    g_ptr_array_unref(hyps);
  }
  moelm_generator_free(g);
  /* the expected distribution: <pad> never, </s> not before --min-len 1 */
  const int32_t bos = MOELM_EOS;
  float lp[TV];
  double p[TV], mass = 0, total = 0;
  fresh_lprobs(t, &bos, 1, lp);
  lp[MOELM_PAD] = lp[MOELM_EOS] = -INFINITY;
  int order[TV];
  for (int v = 0; v < TV; v++) {
    p[v] = exp(lp[v]);
    order[v] = v;
  }
  for (int i = 0; i < TV; i++) /* by probability, descending */
    for (int j = i + 1; j < TV; j++)
      if (p[order[j]] > p[order[i]]) {
        const int tmp = order[i];
        order[i] = order[j];
        order[j] = tmp;
      }
  int keep = TV;
  if (topk > 0)
    keep = topk;
  if (topp > 0)
    for (keep = 0; keep < TV && mass < topp; keep++)
      mass += p[order[keep]];
  for (int i = 0; i < TV; i++) {
    if (i >= keep)
      p[order[i]] = 0;
    total += p[order[i]];
  }
  for (int v = 0; v < TV; v++) {
    const double q = p[v] / total, freq = (double)counts[v] / RUNS;
    CU_ASSERT(fabs(freq - q) < 4 * sqrt(q * (1 - q) / RUNS) + 2e-3);
    if (q == 0)
      CU_ASSERT_EQUAL(counts[v], 0);
  }
  CU_ASSERT(keep > 1 && keep < TV - 2); /* the restriction did restrict, and left a choice */
}

static void test_sampling_distribution(void)
{
  Tiny t;
  tiny_init_scaled(&t, 17, 0.4f);
  check_first_token_frequencies(&t, 3, -1);
  check_first_token_frequencies(&t, -1, 0.6);
  tiny_clear(&t);
}

static void count_tokens(GPtrArray *hyps, int prompt_len, int *counts)
{
  for (guint i = 0; i < hyps->len; i++)
    for (int k = prompt_len; k < hyp(hyps, i)->len; k++)
      counts[hyp(hyps, i)->tokens[k]]++;
}

static void test_banned_tokens(void)
{
  Tiny t;
  tiny_init(&t, 11);
  MoelmGeneratorConfig cfg;
  moelm_generator_config_init(&cfg);
  cfg.sampling = TRUE;
  cfg.beam = 16;
  cfg.max_len_b = 20;
  cfg.min_len = 10;
  /* the two tokens sampled most without a ban */
  int counts[TV] = {0};
  GPtrArray *free_run = sample(&t, &cfg, 5, 0);
  count_tokens(free_run, 3, counts);
  int top[2] = {-1, -1};
  for (int v = 0; v < TV; v++) {
    if (v == MOELM_EOS)
      continue;
    if (top[0] < 0 || counts[v] > counts[top[0]]) {
      top[1] = top[0];
      top[0] = v;
    } else if (top[1] < 0 || counts[v] > counts[top[1]]) {
      top[1] = v;
    }
  }
  CU_ASSERT_FATAL(counts[top[1]] > 0);
  CU_ASSERT_EQUAL(counts[MOELM_PAD], 0); /* <pad> is never generated */
  MoelmGeneratorConfig beam_cfg = cfg;
  beam_cfg.sampling = FALSE;
  beam_cfg.beam = 5;
  MoelmGeneratorConfig *configs[] = {&cfg, &beam_cfg};
  for (gsize c = 0; c < G_N_ELEMENTS(configs); c++) {
    configs[c]->seed = 5;
    MoelmGenerator *g = make_gen(&t, configs[c]);
    CU_ASSERT_TRUE(moelm_generator_ban_token(g, top[0], NULL));
    CU_ASSERT_TRUE(moelm_generator_ban_token(g, top[1], NULL));
    GPtrArray *hyps = run_gen(g, PROMPT, 3, 0);
    int banned_counts[TV] = {0};
    count_tokens(hyps, 3, banned_counts);
    CU_ASSERT_EQUAL(banned_counts[top[0]], 0);
    CU_ASSERT_EQUAL(banned_counts[top[1]], 0);
    for (guint i = 0; i < hyps->len; i++)
      CU_ASSERT(hyp(hyps, i)->len >= 11); /* --min-len 10: </s> at step 10 at the earliest */
    g_ptr_array_unref(hyps);
    moelm_generator_free(g);
  }
  /* a banned prompt token is still forced */
  MoelmGenerator *g = make_gen(&t, &beam_cfg);
  CU_ASSERT_TRUE(moelm_generator_ban_token(g, PROMPT[1], NULL));
  GError *error = NULL;
  CU_ASSERT_FALSE(moelm_generator_ban_token(g, MOELM_EOS, &error));
  MOELM_ASSERT_ERROR(error, "cannot ban");
  g_clear_error(&error);
  GPtrArray *hyps = run_gen(g, PROMPT, 3, 0);
  CU_ASSERT_EQUAL(hyp(hyps, 0)->tokens[1], PROMPT[1]);
  CU_ASSERT(isfinite(hyp(hyps, 0)->score));
  g_ptr_array_unref(hyps);
  moelm_generator_free(g);
  g_ptr_array_unref(free_run);
  tiny_clear(&t);
}

static gboolean has_repeated_bigram(const MoelmHypothesis *h)
{
  for (int i = 0; i + 1 < h->len; i++)
    for (int j = i + 1; j + 1 < h->len; j++)
      if (h->tokens[i] == h->tokens[j] && h->tokens[i + 1] == h->tokens[j + 1])
        return TRUE;
  return FALSE;
}

static void test_no_repeat_ngram(void)
{
  Tiny t;
  tiny_init(&t, 13);
  MoelmGeneratorConfig cfg;
  moelm_generator_config_init(&cfg);
  cfg.beam = 2;
  cfg.max_len_b = 30;
  cfg.min_len = 30;
  MoelmGenerator *g = make_gen(&t, &cfg);
  GPtrArray *loose = run_gen(g, PROMPT, 3, 0);
  CU_ASSERT_TRUE(has_repeated_bigram(hyp(loose, 0))); /* 24 tokens over 31 steps must repeat */
  moelm_generator_free(g);
  cfg.no_repeat_ngram_size = 2;
  g = make_gen(&t, &cfg);
  GPtrArray *strict = run_gen(g, PROMPT, 3, 0);
  for (guint i = 0; i < strict->len; i++) {
    CU_ASSERT_EQUAL(hyp(strict, i)->len, 31);
    CU_ASSERT_FALSE(has_repeated_bigram(hyp(strict, i)));
  }
  g_ptr_array_unref(loose);
  g_ptr_array_unref(strict);
  moelm_generator_free(g);
  tiny_clear(&t);
}

static void test_lengths_and_errors(void)
{
  Tiny t;
  tiny_init(&t, 15);
  MoelmGeneratorConfig cfg;
  moelm_generator_config_init(&cfg);
  /* max_len = min(a·(prompt + 1) + b, positions - 1) */
  cfg.max_len_a = 1.5;
  cfg.max_len_b = 2;
  MoelmGenerator *g = make_gen(&t, &cfg);
  CU_ASSERT_EQUAL(moelm_generator_max_tokens(g, 3), 9); /* int(1.5·4 + 2) + 1 */
  CU_ASSERT_EQUAL(moelm_generator_max_tokens(g, 30), TPOS);
  GPtrArray *hyps = run_gen(g, PROMPT, 3, 0);
  for (guint i = 0; i < hyps->len; i++)
    CU_ASSERT(hyp(hyps, i)->len <= 9);
  g_ptr_array_unref(hyps);
  /* an empty prompt generates from the BOS alone */
  hyps = run_gen(g, NULL, 0, 0);
  CU_ASSERT(hyp(hyps, 0)->len >= 2 && hyp(hyps, 0)->len <= 4);
  g_ptr_array_unref(hyps);
  moelm_generator_free(g);

  GError *error = NULL;
  cfg.min_len = 20;
  g = make_gen(&t, &cfg);
  CU_ASSERT_PTR_NULL(moelm_generator_generate(g, PROMPT, 3, 0, &error));
  MOELM_ASSERT_ERROR(error, "min_len cannot be larger than max_len");
  g_clear_error(&error);
  moelm_generator_free(g);

  moelm_generator_config_init(&cfg);
  cfg.temperature = 0;
  CU_ASSERT_FALSE(moelm_generator_config_check(&cfg, &error));
  MOELM_ASSERT_ERROR(error, "--temperature");
  g_clear_error(&error);
  moelm_generator_config_init(&cfg);
  cfg.sampling_topk = 3;
  CU_ASSERT_PTR_NULL(moelm_generator_new(t.model, &cfg, &error));
  MOELM_ASSERT_ERROR(error, "--sampling-topk requires --sampling");
  g_clear_error(&error);
  tiny_clear(&t);
}

MOELM_TEST_SUITE(generator)
{
  CU_add_test(suite, "greedy search equals the recomputed argmax path", test_greedy_equals_argmax);
  CU_add_test(suite, "beam search: sorted, distinct, scored like a forward pass", test_beam_search);
  CU_add_test(suite, "score normalisation and length penalty", test_normalisation);
  CU_add_test(suite, "sampling is reproducible per seed and stream", test_sampling_seeds);
  CU_add_test(suite, "sampling follows the top-k / top-p distribution", test_sampling_distribution);
  CU_add_test(suite, "top-k 1, tiny top-p and tiny temperature are greedy", test_sampling_degenerates_to_greedy);
  CU_add_test(suite, "banned tokens are never generated", test_banned_tokens);
  CU_add_test(suite, "no-repeat-ngram blocking", test_no_repeat_ngram);
  CU_add_test(suite, "length limits and option errors", test_lengths_and_errors);
}
