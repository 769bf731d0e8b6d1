/* fairseq's TokenBlockDataset: hand-computed slices per break mode, and the source shift. */
#include "config.h"

#include <string.h>

#include "moelm-test.h"
#include "moelm/errors.h"
#include "moelm/token_blocks.h"

/* Sentences of 3, 4, 2, 5 and 3 tokens with 1-token document separators:
 * stream offsets 0 3 7 | 8 10 15 | 16 | 17 20. */
static const int32_t doc_sizes[] = {3, 4, 1, 2, 5, 1, 1, 3};

static void check_slices(const int32_t *sizes, gsize n, int64_t block_size, MoelmBreakMode mode,
                         const int64_t (*want)[2], gsize n_want)
{
  GError *error = NULL;
  MoelmTokenBlocks *tb = moelm_token_blocks_new(sizes, n, block_size, mode, &error);
  CU_ASSERT_PTR_NOT_NULL_FATAL(tb);
  CU_ASSERT_EQUAL(moelm_token_blocks_len(tb), n_want);
  for (gsize i = 0; i < n_want && i < moelm_token_blocks_len(tb); i++) {
    MoelmBlockSlice s = moelm_token_blocks_slice(tb, i);
    if (s.start != want[i][0] || s.end != want[i][1])
      g_printerr("\n  mode %d block %" G_GSIZE_FORMAT ": [%" G_GINT64_FORMAT ", %" G_GINT64_FORMAT
                 "), expected [%" G_GINT64_FORMAT ", %" G_GINT64_FORMAT ")\n",
                 mode, i, s.start, s.end, want[i][0], want[i][1]);
    CU_ASSERT_EQUAL(s.start, want[i][0]);
    CU_ASSERT_EQUAL(s.end, want[i][1]);
    CU_ASSERT_EQUAL(moelm_token_blocks_size(tb, i), want[i][1] - want[i][0]);
  }
  moelm_token_blocks_free(tb);
}

static void test_none(void)
{
  /* Fixed blocks over the whole stream (20 tokens), the tail block shorter. */
  const int64_t want[][2] = {{0, 6}, {6, 12}, {12, 18}, {18, 20}};
  check_slices(doc_sizes, G_N_ELEMENTS(doc_sizes), 6, MOELM_BREAK_NONE, want, G_N_ELEMENTS(want));
  const int64_t exact[][2] = {{0, 10}, {10, 20}};
  check_slices(doc_sizes, G_N_ELEMENTS(doc_sizes), 10, MOELM_BREAK_NONE, exact, G_N_ELEMENTS(exact));
  const int64_t one[][2] = {{0, 20}};
  check_slices(doc_sizes, G_N_ELEMENTS(doc_sizes), 512, MOELM_BREAK_NONE, one, 1);
  check_slices(doc_sizes, 0, 6, MOELM_BREAK_NONE, NULL, 0);
}

static void test_complete(void)
{
  const int64_t want[][2] = {{0, 3}, {3, 8}, {8, 10}, {10, 16}, {16, 20}};
  check_slices(doc_sizes, G_N_ELEMENTS(doc_sizes), 6, MOELM_BREAK_COMPLETE, want, G_N_ELEMENTS(want));
  /* A sentence longer than the block is a block of its own. */
  const int32_t sizes[] = {2, 9, 2, 1, 1};
  const int64_t want_long[][2] = {{0, 2}, {2, 11}, {11, 15}};
  check_slices(sizes, G_N_ELEMENTS(sizes), 4, MOELM_BREAK_COMPLETE, want_long, G_N_ELEMENTS(want_long));
}

static void test_complete_doc(void)
{
  /* Separators close blocks and belong to none; the empty document between the two
   * consecutive separators yields no block. */
  const int64_t want[][2] = {{0, 3}, {3, 7}, {8, 10}, {10, 15}, {17, 20}};
  check_slices(doc_sizes, G_N_ELEMENTS(doc_sizes), 6, MOELM_BREAK_COMPLETE_DOC, want, G_N_ELEMENTS(want));
  const int64_t big[][2] = {{0, 7}, {8, 15}, {17, 20}};
  check_slices(doc_sizes, G_N_ELEMENTS(doc_sizes), 100, MOELM_BREAK_COMPLETE_DOC, big, G_N_ELEMENTS(big));
  /* A long sentence inside a document, and a document of one long sentence. */
  const int32_t sizes[] = {1, 2, 9, 1, 7};
  const int64_t want_long[][2] = {{1, 3}, {3, 12}, {13, 20}};
  check_slices(sizes, G_N_ELEMENTS(sizes), 4, MOELM_BREAK_COMPLETE_DOC, want_long, G_N_ELEMENTS(want_long));
}

static void test_eos(void)
{
  const int64_t want[][2] = {{0, 3}, {3, 7}, {7, 8}, {8, 10}, {10, 15}, {15, 16}, {16, 17}, {17, 20}};
  /* block_size is not used (0 is fine), and sentences are not cut. */
  check_slices(doc_sizes, G_N_ELEMENTS(doc_sizes), 0, MOELM_BREAK_EOS, want, G_N_ELEMENTS(want));
  check_slices(doc_sizes, G_N_ELEMENTS(doc_sizes), 2, MOELM_BREAK_EOS, want, G_N_ELEMENTS(want));
}

static void test_errors_and_parse(void)
{
  GError *error = NULL;
  CU_ASSERT_PTR_NULL(moelm_token_blocks_new(doc_sizes, G_N_ELEMENTS(doc_sizes), 0, MOELM_BREAK_NONE, &error));
  MOELM_ASSERT_ERROR(error, "block size must be positive");
  g_clear_error(&error);
  CU_ASSERT_PTR_NULL(moelm_token_blocks_new(doc_sizes, G_N_ELEMENTS(doc_sizes), -3, MOELM_BREAK_COMPLETE, &error));
  g_clear_error(&error);
  const int32_t bad[] = {2, -1};
  CU_ASSERT_PTR_NULL(moelm_token_blocks_new(bad, 2, 4, MOELM_BREAK_EOS, &error));
  MOELM_ASSERT_ERROR(error, "sequence 1 has a negative size");
  g_clear_error(&error);

  MoelmBreakMode m = MOELM_BREAK_EOS;
  CU_ASSERT_TRUE(moelm_break_mode_parse("none", &m, &error));
  CU_ASSERT_EQUAL(m, MOELM_BREAK_NONE);
  CU_ASSERT_TRUE(moelm_break_mode_parse("complete", &m, &error));
  CU_ASSERT_EQUAL(m, MOELM_BREAK_COMPLETE);
  CU_ASSERT_TRUE(moelm_break_mode_parse("complete_doc", &m, &error));
  CU_ASSERT_EQUAL(m, MOELM_BREAK_COMPLETE_DOC);
  CU_ASSERT_TRUE(moelm_break_mode_parse("eos", &m, &error));
  CU_ASSERT_EQUAL(m, MOELM_BREAK_EOS);
  CU_ASSERT_FALSE(moelm_break_mode_parse("Complete", &m, &error));
  MOELM_ASSERT_ERROR(error, "invalid sample break mode 'Complete'");
  g_clear_error(&error);
}

/* Write sequences into PREFIX (uint16) and open it. */
static MoelmIndexedDataset *make_dataset(const char *dir, const int32_t *const *seqs, const int32_t *sizes, gsize n)
{
  char *prefix = g_build_filename(dir, "ds", NULL);
  GError *error = NULL;
  MoelmIndexedDatasetBuilder *b = moelm_indexed_dataset_builder_new(prefix, MOELM_IDX_UINT16, &error);
  CU_ASSERT_PTR_NOT_NULL_FATAL(b);
  for (gsize i = 0; i < n; i++)
    CU_ASSERT_TRUE(moelm_indexed_dataset_builder_add(b, seqs[i], (gsize)sizes[i], &error));
  CU_ASSERT_TRUE_FATAL(moelm_indexed_dataset_builder_finish(b, &error));
  MoelmIndexedDataset *ds = moelm_indexed_dataset_open(prefix, &error);
  CU_ASSERT_PTR_NOT_NULL_FATAL(ds);
  g_free(prefix);
  return ds;
}

static void check_block(const MoelmTokenBlocks *tb, const MoelmIndexedDataset *ds, gsize i, const int32_t *source,
                        const int32_t *target, gsize n)
{
  CU_ASSERT_EQUAL_FATAL(moelm_token_blocks_size(tb, i), (int64_t)n);
  int32_t src[16], tgt[16];
  moelm_token_blocks_get(tb, ds, i, src, tgt);
  CU_ASSERT_EQUAL(memcmp(src, source, n * sizeof *src), 0);
  CU_ASSERT_EQUAL(memcmp(tgt, target, n * sizeof *tgt), 0);
}

static void test_source_target_shift(void)
{
  char *dir = moelm_test_tmpdir();
  /* Stream: 10 11 2 | 20 21 22 2 | 2 | 40 2 | 50 51 52 53 2 | 2 | 2 | 80 81 2 */
  const int32_t q0[] = {10, 11, 2}, q1[] = {20, 21, 22, 2}, q2[] = {2}, q3[] = {40, 2}, q4[] = {50, 51, 52, 53, 2},
                q7[] = {80, 81, 2};
  const int32_t *const seqs[] = {q0, q1, q2, q3, q4, q2, q2, q7};
  MoelmIndexedDataset *ds = make_dataset(dir, seqs, doc_sizes, G_N_ELEMENTS(doc_sizes));
  GError *error = NULL;

  MoelmTokenBlocks *tb = moelm_token_blocks_new(doc_sizes, G_N_ELEMENTS(doc_sizes), 6, MOELM_BREAK_NONE, &error);
  CU_ASSERT_EQUAL(moelm_token_blocks_num_tokens(tb), 20);
  {
    const int32_t s0[] = {2, 10, 11, 2, 20, 21}, t0[] = {10, 11, 2, 20, 21, 22};
    check_block(tb, ds, 0, s0, t0, 6);
    /* [6, 12) starts inside sentence 1 (at its </s>): source[0] is the token before, 22. */
    const int32_t s1[] = {22, 2, 2, 40, 2, 50}, t1[] = {2, 2, 40, 2, 50, 51};
    check_block(tb, ds, 1, s1, t1, 6);
    const int32_t s3[] = {80, 81}, t3[] = {81, 2};
    check_block(tb, ds, 3, s3, t3, 2);
  }
  int32_t out[5];
  moelm_token_blocks_stream(tb, ds, 9, 14, out);
  const int32_t want_stream[] = {2, 50, 51, 52, 53};
  CU_ASSERT_EQUAL(memcmp(out, want_stream, sizeof out), 0);
  CU_ASSERT_TRUE(moelm_token_blocks_starts_sentence(tb, 0));
  CU_ASSERT_TRUE(moelm_token_blocks_starts_sentence(tb, 17));
  CU_ASSERT_TRUE(moelm_token_blocks_starts_sentence(tb, 20));
  CU_ASSERT_FALSE(moelm_token_blocks_starts_sentence(tb, 18));
  moelm_token_blocks_free(tb);

  tb = moelm_token_blocks_new(doc_sizes, G_N_ELEMENTS(doc_sizes), 6, MOELM_BREAK_COMPLETE_DOC, &error);
  {
    const int32_t s2[] = {2, 40}, t2[] = {40, 2};
    check_block(tb, ds, 2, s2, t2, 2);
    const int32_t s4[] = {2, 80, 81}, t4[] = {80, 81, 2};
    check_block(tb, ds, 4, s4, t4, 3);
  }
  moelm_token_blocks_free(tb);
  moelm_indexed_dataset_close(ds);
  moelm_test_rmtree(dir);
  g_free(dir);

  /* Sentences that do not end in </s>: a block that starts a sentence still gets </s> first
   * (fairseq's offset-0 rule), not the previous sentence's last token. */
  dir = moelm_test_tmpdir();
  const int32_t a[] = {10, 11}, b[] = {20, 21, 22};
  const int32_t *const seqs2[] = {a, b};
  const int32_t sizes2[] = {2, 3};
  ds = make_dataset(dir, seqs2, sizes2, 2);
  tb = moelm_token_blocks_new(sizes2, 2, 2, MOELM_BREAK_NONE, &error);
  CU_ASSERT_EQUAL_FATAL(moelm_token_blocks_len(tb), 3);
  {
    const int32_t s0[] = {2, 10}, t0[] = {10, 11};
    const int32_t s1[] = {2, 20}, t1[] = {20, 21};
    const int32_t s2[] = {21}, t2[] = {22};
    check_block(tb, ds, 0, s0, t0, 2);
    check_block(tb, ds, 1, s1, t1, 2);
    check_block(tb, ds, 2, s2, t2, 1);
  }
  moelm_token_blocks_free(tb);
  moelm_indexed_dataset_close(ds);
  moelm_test_rmtree(dir);
  g_free(dir);
}

MOELM_TEST_SUITE(token_blocks)
{
  CU_add_test(suite, "none: fixed blocks over the stream, tail block", test_none);
  CU_add_test(suite, "complete: packing, long sentence alone", test_complete);
  CU_add_test(suite, "complete_doc: separators, empty documents", test_complete_doc);
  CU_add_test(suite, "eos: one sentence per block", test_eos);
  CU_add_test(suite, "errors and break mode names", test_errors_and_parse);
  CU_add_test(suite, "source/target shift at and inside sentences", test_source_target_shift);
}
