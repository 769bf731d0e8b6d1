/* eval-lm scoring (tasks/scorer.c) on a tiny untrained model: every token is scored once,
 * context-window rows equal a direct score of [context | block], C = 0 equals plain blocks,
 * and nothing depends on how rows are batched. */
#include "config.h"

#include <math.h>
#include <string.h>

#include "eval-fixture.h"
#include "moelm-test.h"
#include "tasks/lm_data.h"
#include "tasks/scorer.h"

enum { TPS = 40, MAXPOS = 48 };

typedef struct {
  gsize block;
  int64_t start, n;
  int context;
  int32_t *targets;
  float *lprobs;
} Row;

static void row_free(gpointer p)
{
  Row *r = p;
  g_free(r->targets);
  g_free(r->lprobs);
  g_free(r);
}

static gboolean collect_row(const MoelmScoredRow *row, gpointer data, GError **error)
{
  (void)error;
  Row *r = g_new(Row, 1);
  r->block = row->block;
  r->start = row->start;
  r->n = row->n;
  r->context = row->context;
  r->targets = g_memdup2(row->targets, (gsize)row->n * sizeof(int32_t));
  r->lprobs = g_memdup2(row->lprobs, (gsize)row->n * sizeof(float));
  g_ptr_array_add(data, r);
  return TRUE;
}

static MoelmLmSplit *open_split(const EvalFixture *f, int C, MoelmBreakMode mode)
{
  GError *error = NULL;
  MoelmLmSplit *s = moelm_lm_split_open(f->dir, "test", TPS - C, mode, moelm_dictionary_size(f->dict), &error);
  if (s == NULL)
    g_printerr("split: %s\n", error->message);
  CU_ASSERT_PTR_NOT_NULL_FATAL(s);
  return s;
}

/* Score with C and a batch shape; rows (may be NULL) collects every row. */
static MoelmScoreResult score(EvalFixture *f, MoelmLmSplit *s, int C, int max_sentences, int64_t max_tokens,
                              GPtrArray *rows)
{
  MoelmScoreOptions o = {.context_window = C, .tokens_per_sample = TPS - C, .max_sentences = max_sentences,
                         .max_tokens = max_tokens};
  MoelmScoreResult r;
  GError *error = NULL;
  gboolean ok = moelm_score_split(f->model, s, &o, rows ? collect_row : NULL, rows, &r, &error);
  if (!ok)
    g_printerr("score: %s\n", error->message);
  CU_ASSERT_TRUE_FATAL(ok);
  return r;
}

static int64_t sum_of_block_sizes(const MoelmLmSplit *s)
{
  int64_t total = 0;
  for (gsize i = 0; i < moelm_lm_split_n_blocks(s); i++)
    total += moelm_token_blocks_size(s->blocks, i);
  return total;
}

/* Every token of the split is scored exactly once, as the target it is in the stream. */
static void test_every_token_once(void)
{
  EvalFixture f;
  eval_fixture_init(&f, 60, 15, MAXPOS, 11);
  const int contexts[] = {0, 1, 7, 31};
  const int batches[] = {1, 3, 16};
  const MoelmBreakMode modes[] = {MOELM_BREAK_NONE, MOELM_BREAK_COMPLETE, MOELM_BREAK_EOS, MOELM_BREAK_COMPLETE_DOC};
  guint8 *seen = g_new(guint8, f.ntokens);
  for (gsize mi = 0; mi < G_N_ELEMENTS(modes); mi++)
    for (gsize ci = 0; ci < G_N_ELEMENTS(contexts); ci++)
      for (gsize bi = 0; bi < G_N_ELEMENTS(batches); bi++) {
        const int C = contexts[ci];
        MoelmLmSplit *s = open_split(&f, C, modes[mi]);
        GPtrArray *rows = g_ptr_array_new_with_free_func(row_free);
        MoelmScoreResult r = score(&f, s, C, batches[bi], 0, rows);
        const int64_t expect = modes[mi] == MOELM_BREAK_COMPLETE_DOC ? sum_of_block_sizes(s) : f.ntokens;
        CU_ASSERT_EQUAL(r.count, expect);
        CU_ASSERT_EQUAL(r.ntokens, expect);
        CU_ASSERT_EQUAL(r.rows, (int64_t)moelm_lm_split_n_blocks(s));
        CU_ASSERT(r.nll_sum > 0);
        memset(seen, 0, (gsize)f.ntokens);
        int64_t prev_start = -1;
        for (guint k = 0; k < rows->len; k++) {
          const Row *row = g_ptr_array_index(rows, k);
          CU_ASSERT(row->start > prev_start); /* stream order */
          prev_start = row->start;
          CU_ASSERT(row->context <= C);
          for (int64_t j = 0; j < row->n; j++) {
            seen[row->start + j]++;
            CU_ASSERT_EQUAL(row->targets[j], f.stream[row->start + j]);
          }
        }
        int64_t wrong = 0; /* complete_doc leaves document boundaries out */
        for (int64_t t = 0; t < f.ntokens; t++)
          wrong += modes[mi] == MOELM_BREAK_COMPLETE_DOC ? seen[t] > 1 : seen[t] != 1;
        CU_ASSERT_EQUAL(wrong, 0);
        g_ptr_array_unref(rows);
        moelm_lm_split_free(s);
      }
  g_free(seen);
  eval_fixture_clear(&f);
}

/* Score one row alone: src/tgt (T) → lprobs (T). */
static void direct_score(EvalFixture *f, const int32_t *src, const int32_t *tgt, int T, float *lprobs)
{
  MoelmBatch b = {.B = 1, .T = T, .src = src, .tgt = tgt};
  CU_ASSERT_TRUE_FATAL(moelm_model_score(f->model, &b, NULL, lprobs, NULL, NULL));
}

/* C = 0 is the plain block score: the sum of moelm_model_score over the blocks. */
static void test_no_context_is_plain_blocks(void)
{
  EvalFixture f;
  eval_fixture_init(&f, 50, 15, MAXPOS, 5);
  MoelmLmSplit *s = open_split(&f, 0, MOELM_BREAK_NONE);
  MoelmScoreResult r = score(&f, s, 0, 4, 0, NULL);
  double plain = 0;
  int64_t count = 0;
  for (gsize i = 0; i < moelm_lm_split_n_blocks(s); i++) {
    guint32 idx = (guint32)i;
    MoelmBatchIndices one = {1, &idx};
    int32_t *src, *tgt;
    int B, T;
    count += moelm_lm_collate(s, &one, &src, &tgt, &B, &T);
    float *lp = g_new(float, T);
    direct_score(&f, src, tgt, T, lp);
    for (int t = 0; t < T; t++)
      plain -= lp[t];
    g_free(lp);
    g_free(src);
    g_free(tgt);
  }
  CU_ASSERT_EQUAL(r.count, count);
  CU_ASSERT_DOUBLE_EQUAL(r.nll_sum, plain, 1e-5 * plain);
  CU_ASSERT_DOUBLE_EQUAL(moelm_score_loss_base2(&r), plain / count / M_LN2, 1e-5);
  CU_ASSERT_DOUBLE_EQUAL(moelm_score_perplexity(&r), pow(2.0, plain / count / M_LN2), 1e-3);
  moelm_lm_split_free(s);
  eval_fixture_clear(&f);
}

/* Brute force: each row's context is the tail of all earlier blocks' sources (at most C
 * tokens, and no more than keeps [context | block] within TPS), and each scored token equals
 * a direct score of that row at its position. With break mode none the context is exactly the
 * stream before the block's source. */
static void check_brute_force(MoelmBreakMode mode, int C)
{
  EvalFixture f;
  eval_fixture_init(&f, 40, 15, MAXPOS, 23);
  MoelmLmSplit *s = open_split(&f, C, mode);
  GPtrArray *rows = g_ptr_array_new_with_free_func(row_free);
  score(&f, s, C, 5, 0, rows);
  CU_ASSERT_EQUAL_FATAL(rows->len, moelm_lm_split_n_blocks(s));
  GArray *sources = g_array_new(FALSE, FALSE, sizeof(int32_t));
  int max_err_row = -1;
  double max_err = 0;
  for (guint k = 0; k < rows->len; k++) {
    const Row *row = g_ptr_array_index(rows, k);
    const int n = (int)row->n;
    int32_t *source = g_new(int32_t, n), *target = g_new(int32_t, n);
    moelm_token_blocks_get(s->blocks, s->ds, row->block, source, target);
    const int ctx = (int)MIN(MIN((int64_t)C, (int64_t)sources->len), MAX(0, (int64_t)TPS - n));
    CU_ASSERT_EQUAL(row->context, ctx);
    const int T = ctx + n;
    int32_t *src = g_new(int32_t, T), *tgt = g_new(int32_t, T);
    if (ctx > 0) /* the first row has no context and `sources` no data yet */
      memcpy(src, &g_array_index(sources, int32_t, sources->len - ctx), (gsize)ctx * sizeof(int32_t));
    memcpy(src + ctx, source, (gsize)n * sizeof(int32_t));
    for (int j = 0; j < ctx; j++)
      tgt[j] = MOELM_PAD;
    memcpy(tgt + ctx, target, (gsize)n * sizeof(int32_t));
    if (mode == MOELM_BREAK_NONE)
      for (int j = 0; j < T; j++) { /* src = stream shifted right, </s> before the start */
        const int64_t pos = row->start - ctx - 1 + j;
        CU_ASSERT_EQUAL(src[j], pos < 0 ? MOELM_EOS : f.stream[pos]);
      }
    float *lp = g_new(float, T);
    direct_score(&f, src, tgt, T, lp);
    for (int j = 0; j < n; j++) {
      const double err = fabs((double)lp[ctx + j] - row->lprobs[j]);
      if (err > max_err) {
        max_err = err;
        max_err_row = (int)k;
      }
    }
    g_array_append_vals(sources, source, (guint)n);
    g_free(lp);
    g_free(src);
    g_free(tgt);
    g_free(source);
    g_free(target);
  }
  if (max_err > 1e-4)
    g_printerr("\n  mode %d C %d: row %d differs from its direct score by %g\n", mode, C, max_err_row, max_err);
  CU_ASSERT(max_err <= 1e-4);
  g_array_unref(sources);
  g_ptr_array_unref(rows);
  moelm_lm_split_free(s);
  eval_fixture_clear(&f);
}

static void test_brute_force_none(void)
{
  check_brute_force(MOELM_BREAK_NONE, 1);
  check_brute_force(MOELM_BREAK_NONE, 7);
  check_brute_force(MOELM_BREAK_NONE, 31);
}

/* eos/complete blocks longer than TPS - C get a trimmed context. */
static void test_brute_force_sentences(void)
{
  check_brute_force(MOELM_BREAK_EOS, 31);
  check_brute_force(MOELM_BREAK_COMPLETE, 29);
  check_brute_force(MOELM_BREAK_COMPLETE_DOC, 7);
}

/* The result does not depend on the batch shape (rows per batch or a token budget). */
static void test_batch_independent(void)
{
  EvalFixture f;
  eval_fixture_init(&f, 60, 15, MAXPOS, 31);
  for (int C = 0; C <= 16; C += 16) {
    MoelmLmSplit *s = open_split(&f, C, MOELM_BREAK_NONE);
    GPtrArray *ref_rows = g_ptr_array_new_with_free_func(row_free);
    MoelmScoreResult ref = score(&f, s, C, 1, 0, ref_rows);
    const struct {
      int sentences;
      int64_t tokens;
    } shapes[] = {{2, 0}, {7, 0}, {1000, 0}, {0, TPS * 3}, {5, TPS * 2}};
    for (gsize i = 0; i < G_N_ELEMENTS(shapes); i++) {
      GPtrArray *rows = g_ptr_array_new_with_free_func(row_free);
      MoelmScoreResult r = score(&f, s, C, shapes[i].sentences, shapes[i].tokens, rows);
      CU_ASSERT_EQUAL(r.count, ref.count);
      CU_ASSERT_DOUBLE_EQUAL(r.nll_sum, ref.nll_sum, 1e-6 * ref.nll_sum);
      CU_ASSERT_EQUAL_FATAL(rows->len, ref_rows->len);
      for (guint k = 0; k < rows->len; k++) {
        const Row *a = g_ptr_array_index(rows, k), *b = g_ptr_array_index(ref_rows, k);
        CU_ASSERT_EQUAL(a->context, b->context);
        for (int64_t j = 0; j < a->n; j++)
          CU_ASSERT_DOUBLE_EQUAL(a->lprobs[j], b->lprobs[j], 1e-5);
      }
      g_ptr_array_unref(rows);
    }
    g_ptr_array_unref(ref_rows);
    moelm_lm_split_free(s);
  }
  eval_fixture_clear(&f);
}

/* A context adds information: with C > 0 the rows after the first carry context, and the
 * loss differs from C = 0 (same tokens). */
static void test_context_changes_scores(void)
{
  EvalFixture f;
  eval_fixture_init(&f, 40, 15, MAXPOS, 3);
  MoelmLmSplit *s0 = open_split(&f, 0, MOELM_BREAK_NONE), *s8 = open_split(&f, 8, MOELM_BREAK_NONE);
  GPtrArray *rows = g_ptr_array_new_with_free_func(row_free);
  MoelmScoreResult a = score(&f, s0, 0, 4, 0, NULL), b = score(&f, s8, 8, 4, 0, rows);
  CU_ASSERT_EQUAL(a.count, b.count);
  CU_ASSERT(fabs(a.nll_sum - b.nll_sum) > 1e-3);
  CU_ASSERT_EQUAL(((Row *)g_ptr_array_index(rows, 0))->context, 0);
  for (guint k = 1; k < rows->len; k++)
    CU_ASSERT_EQUAL(((Row *)g_ptr_array_index(rows, k))->context, 8);
  g_ptr_array_unref(rows);
  moelm_lm_split_free(s0);
  moelm_lm_split_free(s8);
  eval_fixture_clear(&f);
}

/* Blocks longer than the model's positions are skipped (fairseq's ignore_invalid_inputs);
 * a block over --max-tokens is an error naming the split. */
static void test_long_blocks(void)
{
  EvalFixture f;
  eval_fixture_init(&f, 40, 15, MAXPOS, 9);
  MoelmLmSplit *s = open_split(&f, 0, MOELM_BREAK_EOS);
  MoelmScoreOptions o = {.tokens_per_sample = TPS, .max_sentences = 4, .max_positions = 9};
  MoelmScoreResult r;
  CU_ASSERT_TRUE_FATAL(moelm_score_split(f.model, s, &o, NULL, NULL, &r, NULL));
  int64_t kept = 0, skipped = 0;
  for (gsize i = 0; i < moelm_lm_split_n_blocks(s); i++) {
    const int64_t n = moelm_token_blocks_size(s->blocks, i);
    if (n > 9)
      skipped++;
    else
      kept += n;
  }
  CU_ASSERT(skipped > 0);
  CU_ASSERT_EQUAL(r.skipped_blocks, skipped);
  CU_ASSERT_EQUAL(r.count, kept);
  o.max_positions = 0;
  o.max_tokens = 9;
  GError *error = NULL;
  CU_ASSERT_FALSE(moelm_score_split(f.model, s, &o, NULL, NULL, &r, &error));
  MOELM_ASSERT_ERROR(error, "exceeds --max-tokens 9");
  MOELM_ASSERT_ERROR(error, "/test");
  g_clear_error(&error);
  moelm_lm_split_free(s);
  eval_fixture_clear(&f);
}

MOELM_TEST_SUITE(scorer)
{
  CU_add_test(suite, "every token is scored exactly once", test_every_token_once);
  CU_add_test(suite, "context window 0 equals plain block scores", test_no_context_is_plain_blocks);
  CU_add_test(suite, "rows equal a direct score of [context | block] (break none)", test_brute_force_none);
  CU_add_test(suite, "rows equal a direct score of [context | block] (sentences)", test_brute_force_sentences);
  CU_add_test(suite, "the result does not depend on the batch shape", test_batch_independent);
  CU_add_test(suite, "the context changes the scores", test_context_changes_scores);
  CU_add_test(suite, "long blocks are skipped or refused", test_long_blocks);
}
