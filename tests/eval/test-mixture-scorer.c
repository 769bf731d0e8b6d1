/* eval-lm for sequence-level mixtures (tasks/mixture_scorer.c) on a tiny untrained model:
 * a row's per-token scores add up to its mixture log-likelihood given its context (computed
 * here row by row, expert by expert), every token is scored once, batching changes nothing,
 * K = 1 with <expert_0> embedded as </s> is the dense model, C = 0 is training's valid loss,
 * and the prompt posterior of generation matches incremental decoding. */
#include "config.h"

#include <math.h>
#include <string.h>

#include "eval-fixture.h"
#include "moelm-test.h"
#include "tasks/mixture_scorer.h"

enum { TPS = 24, MAXPOS = 40, G = 7 };

typedef struct {
  EvalFixture ef;        /* data-bin, its stream */
  MoelmMixtureConfig mix;
  MoelmModel *model;     /* vocabulary with the expert tokens */
  MoelmGate *gate;       /* NULL: uniform prior */
  guint V;
} Mix;

static void mix_init(Mix *m, int K, gboolean learned, guint32 seed)
{
  memset(m, 0, sizeof *m);
  eval_fixture_init(&m->ef, 30, 9, MAXPOS, seed);
  m->mix = (MoelmMixtureConfig){.hard = FALSE, .learned_prior = learned, .num_experts = K, .gating_context = G};
  m->mix.expert_token0 = moelm_mixture_add_expert_tokens(m->ef.dict, K);
  m->V = moelm_dictionary_size(m->ef.dict);
  MoelmModelConfig cfg;
  memset(&cfg, 0, sizeof cfg);
  CU_ASSERT_TRUE_FATAL(moelm_model_config_set_arch(&cfg, "transformer_lm", NULL));
  cfg.vocab_size = (int)m->V;
  cfg.embed_dim = 16;
  cfg.ffn_dim = 32;
  cfg.layers = 2;
  cfg.heads = 2;
  cfg.max_positions = MAXPOS;
  cfg.dropout = cfg.attention_dropout = cfg.activation_dropout = 0.0;
  cfg.gate_experts = learned ? K : 0;
  m->model = moelm_model_new(&cfg, m->ef.be, NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(m->model);
  moelm_model_init_params(m->model, seed + 1);
  moelm_model_config_clear(&cfg);
  if (learned) { /* a decided prior, far from uniform, so that the gate's context shows */
    const MoelmParam *fc2 = moelm_model_find(m->model, "gating_network.fc2.weight");
    CU_ASSERT_PTR_NOT_NULL_FATAL(fc2);
    for (size_t i = 0; i < fc2->numel; i++)
      moelm_model_params(m->model)[fc2->offset + i] *= 30.0f;
    m->gate = moelm_mean_pool_gate_new(m->model, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(m->gate);
  }
}

static void mix_clear(Mix *m)
{
  moelm_mean_pool_gate_free(m->gate);
  moelm_model_free(m->model);
  eval_fixture_clear(&m->ef);
}

static MoelmLmSplit *open_split(const Mix *m, int C, MoelmBreakMode mode)
{
  MoelmLmSplit *s = moelm_lm_split_open(m->ef.dir, "test", TPS - C, mode, m->V, NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(s);
  return s;
}

/* Every scored row, and every token's score by stream offset. */
typedef struct {
  GArray *rows;   /* Seen */
  double *by_pos; /* (ntokens) */
  int *times;     /* (ntokens) how often each token was scored */
} Collected;

typedef struct {
  int64_t start, n;
  int context;
  double sum;
} Seen;

static gboolean collect(const MoelmScoredRow *row, gpointer data, GError **error)
{
  (void)error;
  Collected *c = data;
  Seen s = {row->start, row->n, row->context, 0};
  for (int64_t j = 0; j < row->n; j++) {
    s.sum += row->lprobs[j];
    c->by_pos[row->start + j] = row->lprobs[j];
    c->times[row->start + j]++;
  }
  g_array_append_val(c->rows, s);
  return TRUE;
}

static void collected_init(Collected *c, int64_t ntokens)
{
  c->rows = g_array_new(FALSE, FALSE, sizeof(Seen));
  c->by_pos = g_new0(double, ntokens);
  c->times = g_new0(int, ntokens);
}

static void collected_clear(Collected *c)
{
  g_array_unref(c->rows);
  g_free(c->by_pos);
  g_free(c->times);
}

static MoelmScoreResult mix_score(Mix *m, MoelmLmSplit *s, int C, int max_sentences, int64_t call_logits,
                                  Collected *c, MoelmMixtureReport *report)
{
  MoelmScoreOptions o = {.context_window = C, .tokens_per_sample = TPS - C, .max_sentences = max_sentences};
  MoelmScoreResult r;
  GError *error = NULL;
  gboolean ok = moelm_mixture_score_split(m->model, m->gate, &m->mix, s, &o, call_logits, c ? collect : NULL, c, &r,
                                          report, &error);
  if (!ok)
    g_printerr("\n  mixture score: %s\n", error->message);
  CU_ASSERT_TRUE_FATAL(ok);
  return r;
}

/* The stream with </s> before its start (the source of the first block). */
static int32_t tok_at(const Mix *m, int64_t i) { return i < 0 ? MOELM_EOS : m->ef.stream[i]; }

static double lse(const double *x, int K)
{
  double mx = -INFINITY, s = 0;
  for (int k = 0; k < K; k++)
    mx = fmax(mx, x[k]);
  for (int k = 0; k < K; k++)
    s += exp(x[k] - mx);
  return mx + log(s);
}

/* log π for a row whose first predicted token is at stream offset `end`. */
static void brute_prior(Mix *m, int64_t end, float *log_prior)
{
  const int K = m->mix.num_experts;
  if (m->gate == NULL) {
    for (int k = 0; k < K; k++)
      log_prior[k] = -logf((float)K);
    return;
  }
  int32_t ctx[G] = {0};
  int len = 0;
  for (int64_t i = MAX(0, end - G); i < end; i++)
    ctx[len++] = m->ef.stream[i];
  CU_ASSERT_TRUE_FATAL(moelm_mean_pool_gate_forward(m->gate, ctx, &len, 1, G, NULL, log_prior, NULL));
}

/* The row's mixture log-likelihood given its context, from one model call per expert on the
 * row rebuilt from the stream: LSE(log π + context + scored) - LSE(log π + context). */
static double brute_row(Mix *m, const Seen *s)
{
  const int K = m->mix.num_experts, T = s->context + (int)s->n;
  const int64_t first = s->start - s->context; /* the first token the row predicts */
  int32_t *src = g_new(int32_t, T), *tgt = g_new(int32_t, T);
  float *tok = g_new(float, T), *log_prior = g_new(float, K);
  double *all = g_new(double, K), *ctx = g_new(double, K);
  brute_prior(m, first, log_prior);
  for (int k = 0; k < K; k++) {
    src[0] = m->mix.expert_token0 + k;
    for (int j = 0; j < T; j++) {
      if (j > 0)
        src[j] = tok_at(m, first + j - 1);
      tgt[j] = tok_at(m, first + j);
    }
    const MoelmBatch b = {1, T, src, tgt};
    CU_ASSERT_TRUE_FATAL(moelm_model_score(m->model, &b, NULL, tok, NULL, NULL));
    ctx[k] = all[k] = log_prior[k];
    for (int j = 0; j < T; j++) {
      all[k] += tok[j];
      if (j < s->context)
        ctx[k] += tok[j];
    }
  }
  const double want = lse(all, K) - lse(ctx, K);
  g_free(src);
  g_free(tgt);
  g_free(tok);
  g_free(log_prior);
  g_free(all);
  g_free(ctx);
  return want;
}

static void check_against_brute_force(int K, gboolean learned, int C, MoelmBreakMode mode)
{
  Mix m;
  mix_init(&m, K, learned, 11 + (guint32)C);
  MoelmLmSplit *s = open_split(&m, C, mode);
  Collected c;
  collected_init(&c, m.ef.ntokens);
  const MoelmScoreResult r = mix_score(&m, s, C, 3, 0, &c, NULL);
  CU_ASSERT_EQUAL(r.ntokens, m.ef.ntokens);
  CU_ASSERT_EQUAL(r.count, m.ef.ntokens);
  for (int64_t i = 0; i < m.ef.ntokens; i++)
    CU_ASSERT_EQUAL(c.times[i], 1);
  int with_context = 0;
  double total = 0;
  for (guint i = 0; i < c.rows->len; i++) {
    const Seen *row = &g_array_index(c.rows, Seen, i);
    with_context += row->context > 0;
    const double want = brute_row(&m, row);
    if (fabs(row->sum - want) > 2e-4)
      g_printerr("\n  row %u (start %ld, context %d): %.6f, brute force %.6f\n", i, (long)row->start, row->context,
                 row->sum, want);
    CU_ASSERT_DOUBLE_EQUAL(row->sum, want, 2e-4);
    total += row->sum;
  }
  CU_ASSERT_DOUBLE_EQUAL(r.nll_sum, -total, 1e-3);
  if (C > 0)
    CU_ASSERT(with_context > (int)c.rows->len / 2);
  collected_clear(&c);
  moelm_lm_split_free(s);
  mix_clear(&m);
}

static void test_rows_sum_to_marginal(void)
{
  check_against_brute_force(3, FALSE, 0, MOELM_BREAK_NONE);
  check_against_brute_force(3, FALSE, 9, MOELM_BREAK_NONE);
  check_against_brute_force(3, TRUE, 0, MOELM_BREAK_NONE);
  check_against_brute_force(3, TRUE, 9, MOELM_BREAK_NONE);
  check_against_brute_force(2, TRUE, 6, MOELM_BREAK_COMPLETE);
  check_against_brute_force(2, TRUE, 6, MOELM_BREAK_EOS);
}

/* Rows per batch and model calls per batch change nothing. */
static void test_batching(void)
{
  Mix m;
  mix_init(&m, 3, TRUE, 5);
  MoelmLmSplit *s = open_split(&m, 8, MOELM_BREAK_NONE);
  Collected a, b;
  collected_init(&a, m.ef.ntokens);
  collected_init(&b, m.ef.ntokens);
  MoelmMixtureReport ra, rb;
  moelm_mixture_report_init(&ra, 3);
  moelm_mixture_report_init(&rb, 3);
  const MoelmScoreResult x = mix_score(&m, s, 8, 1, 0, &a, &ra);
  /* 4 rows per batch, model calls of one row (24 positions x V logits) */
  const MoelmScoreResult y = mix_score(&m, s, 8, 4, (int64_t)TPS * m.V, &b, &rb);
  CU_ASSERT_DOUBLE_EQUAL(x.nll_sum, y.nll_sum, 1e-4);
  for (int64_t i = 0; i < m.ef.ntokens; i++)
    CU_ASSERT_DOUBLE_EQUAL(a.by_pos[i], b.by_pos[i], 1e-5);
  CU_ASSERT_EQUAL(ra.rows, (int64_t)a.rows->len);
  int64_t best = 0;
  double mass = 0;
  for (int k = 0; k < 3; k++) {
    CU_ASSERT_DOUBLE_EQUAL(ra.expert_nll[k], rb.expert_nll[k], 1e-3);
    CU_ASSERT_EQUAL(ra.best_rows[k], rb.best_rows[k]);
    best += ra.best_rows[k];
    mass += ra.post_mass[k];
    /* an expert alone never beats the oracle, and the mixture lies between */
    CU_ASSERT(ra.oracle_nll <= ra.expert_nll[k] + 1e-6);
  }
  CU_ASSERT_EQUAL(best, ra.rows);
  CU_ASSERT_DOUBLE_EQUAL(mass, (double)ra.rows, 1e-6);
  CU_ASSERT(ra.oracle_nll < x.nll_sum);
  collected_clear(&a);
  collected_clear(&b);
  moelm_mixture_report_clear(&ra);
  moelm_mixture_report_clear(&rb);
  moelm_lm_split_free(s);
  mix_clear(&m);
}

/* The report on a hand-made batch: expert sums, best expert, oracle. */
static void test_report_figures(void)
{
  Mix m;
  mix_init(&m, 2, FALSE, 8);
  MoelmLmSplit *s = open_split(&m, 0, MOELM_BREAK_EOS);
  MoelmMixtureReport rep;
  moelm_mixture_report_init(&rep, 2);
  Collected c;
  collected_init(&c, m.ef.ntokens);
  mix_score(&m, s, 0, 2, 0, &c, &rep);
  /* recompute each expert's figures from one-expert mixtures over the same rows */
  double oracle = 0, alone[2] = {0, 0};
  for (guint i = 0; i < c.rows->len; i++) {
    const Seen *row = &g_array_index(c.rows, Seen, i);
    double per[2];
    for (int k = 0; k < 2; k++) {
      int32_t src[TPS], tgt[TPS];
      float tok[TPS];
      for (int j = 0; j < row->n; j++) {
        src[j] = j == 0 ? m.mix.expert_token0 + k : tok_at(&m, row->start + j - 1);
        tgt[j] = tok_at(&m, row->start + j);
      }
      const MoelmBatch b = {1, (int)row->n, src, tgt};
      CU_ASSERT_TRUE_FATAL(moelm_model_score(m.model, &b, NULL, NULL, tok, NULL));
      per[k] = tok[0];
      alone[k] -= per[k];
    }
    oracle -= fmax(per[0], per[1]);
  }
  for (int k = 0; k < 2; k++)
    CU_ASSERT_DOUBLE_EQUAL(rep.expert_nll[k], alone[k], 1e-3);
  CU_ASSERT_DOUBLE_EQUAL(rep.oracle_nll, oracle, 1e-3);
  collected_clear(&c);
  moelm_mixture_report_clear(&rep);
  moelm_lm_split_free(s);
  mix_clear(&m);
}

/* The dense model on the same rows with </s> in position 0 (test row scorer). */
static gboolean eos_first_scorer(const MoelmScoreRows *rows, float *lprobs, gpointer data, GError **error)
{
  int32_t *src = g_memdup2(rows->src, (gsize)rows->B * rows->W * sizeof(int32_t));
  for (int b = 0; b < rows->B; b++)
    src[(gsize)b * rows->W] = MOELM_EOS;
  const MoelmBatch batch = {rows->B, rows->W, src, rows->tgt};
  const gboolean ok = moelm_model_score(data, &batch, NULL, lprobs, NULL, error);
  g_free(src);
  return ok;
}

/* K = 1, <expert_0>'s input embedding = </s>'s: the mixture is the dense model. */
static void test_one_expert_is_dense(void)
{
  Mix m;
  mix_init(&m, 1, FALSE, 21);
  const MoelmParam *emb = moelm_model_find(m.model, "decoder.embed_tokens.weight");
  CU_ASSERT_PTR_NOT_NULL_FATAL(emb);
  const int C = (int)emb->shape[1];
  float *W = moelm_model_params(m.model) + emb->offset;
  memcpy(W + (gsize)m.mix.expert_token0 * C, W + (gsize)MOELM_EOS * C, (gsize)C * sizeof(float));
  /* eos blocks without context: every row starts with </s>, so the plain scorer is the oracle */
  MoelmLmSplit *s = open_split(&m, 0, MOELM_BREAK_EOS);
  Collected mix, dense;
  collected_init(&mix, m.ef.ntokens);
  collected_init(&dense, m.ef.ntokens);
  const MoelmScoreResult x = mix_score(&m, s, 0, 3, 0, &mix, NULL);
  MoelmScoreOptions o = {.context_window = 0, .tokens_per_sample = TPS, .max_sentences = 3};
  MoelmScoreResult y;
  CU_ASSERT_TRUE_FATAL(moelm_score_split(m.model, s, &o, collect, &dense, &y, NULL));
  CU_ASSERT_DOUBLE_EQUAL(x.nll_sum, y.nll_sum, 1e-5 * fabs(y.nll_sum));
  for (int64_t i = 0; i < m.ef.ntokens; i++)
    CU_ASSERT_DOUBLE_EQUAL(mix.by_pos[i], dense.by_pos[i], 1e-6);
  moelm_lm_split_free(s);
  collected_clear(&mix);
  collected_clear(&dense);
  /* with a context window, against the dense rows whose first token is </s> */
  s = open_split(&m, 10, MOELM_BREAK_NONE);
  collected_init(&mix, m.ef.ntokens);
  collected_init(&dense, m.ef.ntokens);
  mix_score(&m, s, 10, 2, 0, &mix, NULL);
  o = (MoelmScoreOptions){.context_window = 10, .tokens_per_sample = TPS - 10, .max_sentences = 2,
                          .max_positions = MAXPOS};
  CU_ASSERT_TRUE_FATAL(moelm_score_split_with(eos_first_scorer, m.model, s, &o, collect, &dense, &y, NULL));
  for (int64_t i = 0; i < m.ef.ntokens; i++)
    CU_ASSERT_DOUBLE_EQUAL(mix.by_pos[i], dense.by_pos[i], 1e-6);
  /* and the embedding matters: another row for <expert_0> changes the scores */
  W[(gsize)m.mix.expert_token0 * C] += 1.0f;
  Collected other;
  collected_init(&other, m.ef.ntokens);
  mix_score(&m, s, 10, 2, 0, &other, NULL);
  double diff = 0;
  for (int64_t i = 0; i < m.ef.ntokens; i++)
    diff = fmax(diff, fabs(other.by_pos[i] - dense.by_pos[i]));
  CU_ASSERT(diff > 1e-4);
  collected_clear(&other);
  collected_clear(&mix);
  collected_clear(&dense);
  moelm_lm_split_free(s);
  mix_clear(&m);
}

/* --context-window 0 gives the mixture objective's valid loss (training's gating context). */
static void test_valid_loss(void)
{
  Mix m;
  mix_init(&m, 3, TRUE, 31);
  MoelmLmSplit *s = open_split(&m, 0, MOELM_BREAK_NONE);
  const MoelmScoreResult r = mix_score(&m, s, 0, 3, 0, NULL, NULL);
  MoelmObjective *obj = moelm_mixture_objective_new(&m.mix);
  GPtrArray *batches = moelm_lm_batches_sequential(s, 3);
  double valid = 0;
  for (guint i = 0; i < batches->len; i++) {
    const MoelmBatchIndices *idx = g_ptr_array_index(batches, i);
    int32_t *src = NULL, *tgt = NULL;
    int B = 0, T = 0;
    const int64_t ntokens = moelm_lm_collate(s, idx, &src, &tgt, &B, &T);
    const MoelmLmBatch b = {{B, T, src, tgt}, ntokens, s, idx};
    double loss = 0;
    CU_ASSERT_TRUE_FATAL(obj->valid_batch(obj, m.model, &b, &loss, NULL));
    valid += loss;
    g_free(src);
    g_free(tgt);
  }
  CU_ASSERT_DOUBLE_EQUAL(r.nll_sum, valid, 1e-5 * fabs(valid));
  g_ptr_array_unref(batches);
  moelm_objective_free(obj);
  moelm_lm_split_free(s);
  mix_clear(&m);
}

/* log π_k + log p(prompt | <expert_k>) against incremental decoding from <expert_k>. */
static void test_prompt_log_joint(void)
{
  Mix m;
  mix_init(&m, 3, TRUE, 41);
  const int32_t prompt[] = {5, 9, 17, 4, 11};
  const int n = G_N_ELEMENTS(prompt), K = 3;
  double joint[3], empty[3];
  CU_ASSERT_TRUE_FATAL(moelm_mixture_prompt_log_joint(m.model, m.gate, &m.mix, prompt, n, joint, NULL));
  CU_ASSERT_TRUE_FATAL(moelm_mixture_prompt_log_joint(m.model, m.gate, &m.mix, prompt, 0, empty, NULL));
  float prior[3];
  int zero = 0;
  int32_t none = 0;
  CU_ASSERT_TRUE_FATAL(moelm_mean_pool_gate_forward(m.gate, &none, &zero, 1, 1, NULL, prior, NULL));
  float *lp = g_new(float, m.V);
  for (int k = 0; k < K; k++) {
    CU_ASSERT_DOUBLE_EQUAL(empty[k], prior[k], 1e-6);
    MoelmKvCache *cache = moelm_kv_cache_new(m.model, 1, n + 1, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(cache);
    double want = prior[k];
    int32_t feed = m.mix.expert_token0 + k;
    for (int i = 0; i < n; i++) {
      CU_ASSERT_TRUE_FATAL(moelm_model_decode(m.model, cache, &feed, 1, lp, NULL));
      want += lp[prompt[i]];
      feed = prompt[i];
    }
    CU_ASSERT_DOUBLE_EQUAL(joint[k], want, 1e-4);
    moelm_kv_cache_free(cache);
  }
  /* the experts differ, or argmax would be meaningless */
  CU_ASSERT(fabs(joint[0] - joint[1]) > 1e-4 || fabs(joint[1] - joint[2]) > 1e-4);
  g_free(lp);
  mix_clear(&m);
}

MOELM_TEST_SUITE(eval_mixture)
{
  CU_add_test(suite, "row scores sum to the mixture likelihood given the context", test_rows_sum_to_marginal);
  CU_add_test(suite, "batching and model calls change nothing", test_batching);
  CU_add_test(suite, "--mixture-report figures", test_report_figures);
  CU_add_test(suite, "one expert embedded as </s> is the dense model", test_one_expert_is_dense);
  CU_add_test(suite, "no context window: training's valid loss", test_valid_loss);
  CU_add_test(suite, "prompt posterior against incremental decoding", test_prompt_log_joint);
}
