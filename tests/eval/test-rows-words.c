/* The pieces of eval-lm around the model: fairseq's context-window row layout (prev_tokens,
 * trimming) and the --remove-bpe word merging behind --output-word-probs. */
#include "config.h"

#include <string.h>

#include "moelm-test.h"
#include "moelm/dictionary.h"
#include "tasks/scorer.h"

#define P MOELM_PAD

static void check_row(MoelmContextWindow *cw, const int32_t *source, int n, const int32_t *want_src, int want_ctx)
{
  int32_t target[16], row_src[32], row_tgt[32];
  for (int j = 0; j < n; j++)
    target[j] = source[j] + 100;
  const int ctx = moelm_context_window_next(cw, source, target, n, row_src, row_tgt);
  CU_ASSERT_EQUAL(ctx, want_ctx);
  for (int j = 0; j < ctx + n; j++) {
    CU_ASSERT_EQUAL(row_src[j], want_src[j]);
    CU_ASSERT_EQUAL(row_tgt[j], j < ctx ? P : target[j - ctx]);
  }
}

/* C = 3, rows of at most 6 tokens (tokens_per_sample 3 + C). */
static void test_context_window_rows(void)
{
  MoelmContextWindow cw;
  moelm_context_window_init(&cw, 3, 6);
  check_row(&cw, (const int32_t[]){2, 10, 11}, 3, (const int32_t[]){2, 10, 11}, 0);
  check_row(&cw, (const int32_t[]){12, 13, 14}, 3, (const int32_t[]){2, 10, 11, 12, 13, 14}, 3);
  /* a short block: the context is still the last 3 tokens */
  check_row(&cw, (const int32_t[]){15}, 1, (const int32_t[]){12, 13, 14, 15}, 3);
  /* a 5-token block (longer than 3): context trimmed to 6 - 5 = 1 token */
  check_row(&cw, (const int32_t[]){16, 17, 18, 19, 20}, 5, (const int32_t[]){15, 16, 17, 18, 19, 20}, 1);
  /* a block of 7 > 6: no context at all */
  check_row(&cw, (const int32_t[]){21, 22, 23, 24, 25, 26, 27}, 7, (const int32_t[]){21, 22, 23, 24, 25, 26, 27}, 0);
  /* <pad> in a source never enters the context (fairseq filters it) */
  check_row(&cw, (const int32_t[]){P, 28}, 2, (const int32_t[]){25, 26, 27, P, 28}, 3);
  check_row(&cw, (const int32_t[]){29}, 1, (const int32_t[]){26, 27, 28, 29}, 3);
  moelm_context_window_clear(&cw);
}

/* C = 0: rows are the blocks. */
static void test_context_window_zero(void)
{
  MoelmContextWindow cw;
  moelm_context_window_init(&cw, 0, 4);
  check_row(&cw, (const int32_t[]){2, 10, 11, 12}, 4, (const int32_t[]){2, 10, 11, 12}, 0);
  check_row(&cw, (const int32_t[]){13, 14}, 2, (const int32_t[]){13, 14}, 0);
  moelm_context_window_clear(&cw);
}

static MoelmDictionary *pieces_dict(const char *const *words)
{
  MoelmDictionary *d = moelm_dictionary_new();
  for (const char *const *w = words; *w; w++)
    moelm_dictionary_add_symbol(d, *w, 1, FALSE);
  return d;
}

static void test_bpe_kind_parse(void)
{
  MoelmBpeKind k;
  CU_ASSERT_TRUE(moelm_bpe_kind_parse(NULL, &k, NULL) && k == MOELM_BPE_NONE);
  CU_ASSERT_TRUE(moelm_bpe_kind_parse("@@ ", &k, NULL) && k == MOELM_BPE_SUFFIX);
  CU_ASSERT_TRUE(moelm_bpe_kind_parse("subword_nmt", &k, NULL) && k == MOELM_BPE_SUFFIX);
  CU_ASSERT_TRUE(moelm_bpe_kind_parse("sentencepiece", &k, NULL) && k == MOELM_BPE_SENTENCEPIECE);
  GError *error = NULL;
  CU_ASSERT_FALSE(moelm_bpe_kind_parse("letter", &k, &error));
  MOELM_ASSERT_ERROR(error, "--post-process=letter is not implemented");
  g_clear_error(&error);
}

/* "@@ ": hel@@ lo wor@@ ld </s> ab@@ → words hello, world, </s>; the trailing "ab@@" is
 * not merged (fairseq's loop stops before the last token) and yields no word. */
static void test_suffix_merge(void)
{
  MoelmDictionary *d = pieces_dict((const char *const[]){"hel@@", "lo", "wor@@", "ld", "ab@@", NULL});
  const int32_t t[] = {4, 5, 6, 7, MOELM_EOS, 8};
  float lp[] = {-1.0f, -2.0f, -0.5f, -0.25f, -3.0f, -4.0f};
  CU_ASSERT_EQUAL(moelm_bpe_merge_scores(d, MOELM_BPE_SUFFIX, NULL, t, lp, 6), 2);
  const float want[] = {0.0f, -3.0f, 0.0f, -0.75f, -3.0f, -4.0f};
  for (int i = 0; i < 6; i++)
    CU_ASSERT_EQUAL(lp[i], want[i]);
  GPtrArray *w = moelm_row_words(d, MOELM_BPE_SUFFIX, NULL, t, lp, 6);
  CU_ASSERT_EQUAL_FATAL(w->len, 3);
  const MoelmWordProb *w0 = g_ptr_array_index(w, 0), *w1 = g_ptr_array_index(w, 1), *w2 = g_ptr_array_index(w, 2);
  CU_ASSERT_STRING_EQUAL(w0->word, "hello");
  CU_ASSERT_EQUAL(w0->lprob, -3.0f);
  CU_ASSERT_TRUE(w0->is_bpe);
  CU_ASSERT_TRUE(w0->has_next);
  CU_ASSERT_EQUAL(w0->next_lprob, -0.75f); /* the next non-zero score */
  CU_ASSERT_STRING_EQUAL(w1->word, "world");
  CU_ASSERT_STRING_EQUAL(w2->word, "</s>");
  CU_ASSERT_FALSE(w2->is_bpe);
  CU_ASSERT_TRUE(w2->has_next);
  CU_ASSERT_EQUAL(w2->next_lprob, -4.0f);
  g_ptr_array_unref(w);
  moelm_dictionary_free(d);
}

/* sentencepiece: a piece continues when the next one does not start with U+2581; specials
 * stand alone; the word loses its leading U+2581. */
static void test_sentencepiece_merge(void)
{
  MoelmDictionary *d = pieces_dict((const char *const[]){"\xe2\x96\x81he", "llo", "\xe2\x96\x81world", ",", NULL});
  const int32_t t[] = {4, 5, 6, 7, MOELM_EOS, 5};
  float lp[] = {-1.0f, -2.0f, -0.5f, -0.25f, -3.0f, -4.0f};
  CU_ASSERT_EQUAL(moelm_bpe_merge_scores(d, MOELM_BPE_SENTENCEPIECE, NULL, t, lp, 6), 2);
  GPtrArray *w = moelm_row_words(d, MOELM_BPE_SENTENCEPIECE, NULL, t, lp, 6);
  const char *const want[] = {"hello", "world,", "</s>", "llo"};
  const float want_lp[] = {-3.0f, -0.75f, -3.0f, -4.0f};
  CU_ASSERT_EQUAL_FATAL(w->len, 4);
  for (guint i = 0; i < 4; i++) {
    const MoelmWordProb *x = g_ptr_array_index(w, i);
    CU_ASSERT_STRING_EQUAL(x->word, want[i]);
    CU_ASSERT_EQUAL(x->lprob, want_lp[i]);
    CU_ASSERT_EQUAL(x->is_bpe, i < 2);
  }
  CU_ASSERT_FALSE(((MoelmWordProb *)g_ptr_array_index(w, 3))->has_next);
  g_ptr_array_unref(w);
  /* without --remove-bpe, one word per piece, as spelled */
  w = moelm_row_words(d, MOELM_BPE_NONE, NULL, t, lp, 6);
  CU_ASSERT_EQUAL(w->len, 6);
  CU_ASSERT_STRING_EQUAL(((MoelmWordProb *)g_ptr_array_index(w, 0))->word, "\xe2\x96\x81he");
  g_ptr_array_unref(w);
  moelm_dictionary_free(d);
}

MOELM_TEST_SUITE(eval_rows_words)
{
  CU_add_test(suite, "context-window rows (prev tokens, trimming, pads)", test_context_window_rows);
  CU_add_test(suite, "context window 0 keeps blocks as they are", test_context_window_zero);
  CU_add_test(suite, "--post-process values", test_bpe_kind_parse);
  CU_add_test(suite, "'@@ ' merging and words", test_suffix_merge);
  CU_add_test(suite, "sentencepiece merging and words", test_sentencepiece_merge);
}
