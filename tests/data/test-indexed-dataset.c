/* fairseq's MMIDIDX format: byte-exact writing, round trips, merging, and validation errors. */
#include "config.h"

#include <string.h>

#include <glib/gstdio.h>

#include "moelm-test.h"
#include "moelm/errors.h"
#include "moelm/indexed_dataset.h"

/* Two sequences [5,2] and [7,8,2] as uint16, written out by hand. */
static const unsigned char tiny_idx[50] = {
  'M', 'M', 'I', 'D', 'I', 'D', 'X', 0, 0, /* magic */
  1, 0, 0, 0, 0, 0, 0, 0,                   /* version 1 */
  8,                                        /* dtype uint16 */
  2, 0, 0, 0, 0, 0, 0, 0,                   /* N = 2 */
  2, 0, 0, 0, 3, 0, 0, 0,                   /* sizes */
  0, 0, 0, 0, 0, 0, 0, 0,                   /* pointers (bytes) */
  4, 0, 0, 0, 0, 0, 0, 0,
};
static const unsigned char tiny_bin[10] = {5, 0, 2, 0, 7, 0, 8, 0, 2, 0};

static char *write_pair(const char *dir, const char *name, const void *idx, gsize idx_len, const void *bin,
                        gsize bin_len)
{
  char *prefix = g_build_filename(dir, name, NULL);
  char *idx_path = g_strconcat(prefix, ".idx", NULL);
  char *bin_path = g_strconcat(prefix, ".bin", NULL);
  moelm_test_write_file(idx_path, idx, idx_len);
  moelm_test_write_file(bin_path, bin, bin_len);
  g_free(idx_path);
  g_free(bin_path);
  return prefix;
}

static void assert_file_bytes(const char *path, const void *expected, gsize len)
{
  gsize got_len = 0;
  char *got = moelm_test_read_file(path, &got_len);
  CU_ASSERT_PTR_NOT_NULL_FATAL(got);
  CU_ASSERT_EQUAL(got_len, len);
  if (got_len == len)
    CU_ASSERT_EQUAL(memcmp(got, expected, len), 0);
  g_free(got);
}

static int count_entries(const char *dir)
{
  GDir *d = g_dir_open(dir, 0, NULL);
  int n = 0;
  while (g_dir_read_name(d) != NULL)
    n++;
  g_dir_close(d);
  return n;
}

static void test_tiny_bytes(void)
{
  char *dir = moelm_test_tmpdir();
  char *prefix = g_build_filename(dir, "train", NULL);
  GError *error = NULL;
  MoelmIndexedDatasetBuilder *b = moelm_indexed_dataset_builder_new(prefix, MOELM_IDX_UINT16, &error);
  CU_ASSERT_PTR_NOT_NULL_FATAL(b);
  const int32_t s0[] = {5, 2}, s1[] = {7, 8, 2};
  CU_ASSERT_TRUE(moelm_indexed_dataset_builder_add(b, s0, 2, &error));
  CU_ASSERT_TRUE(moelm_indexed_dataset_builder_add(b, s1, 3, &error));
  CU_ASSERT_TRUE(moelm_indexed_dataset_builder_finish(b, &error));
  char *idx_path = g_strconcat(prefix, ".idx", NULL);
  char *bin_path = g_strconcat(prefix, ".bin", NULL);
  assert_file_bytes(idx_path, tiny_idx, sizeof tiny_idx);
  assert_file_bytes(bin_path, tiny_bin, sizeof tiny_bin);
  CU_ASSERT_EQUAL(count_entries(dir), 2); /* no temporaries left */

  MoelmIndexedDataset *ds = moelm_indexed_dataset_open(prefix, &error);
  CU_ASSERT_PTR_NOT_NULL_FATAL(ds);
  CU_ASSERT_EQUAL(moelm_indexed_dataset_len(ds), 2);
  CU_ASSERT_EQUAL(moelm_indexed_dataset_dtype(ds), MOELM_IDX_UINT16);
  CU_ASSERT_EQUAL(moelm_indexed_dataset_sizes(ds)[0], 2);
  CU_ASSERT_EQUAL(moelm_indexed_dataset_sizes(ds)[1], 3);
  CU_ASSERT_EQUAL(moelm_indexed_dataset_num_tokens(ds), 5);
  CU_ASSERT_EQUAL(moelm_indexed_dataset_max_token(ds), 8);
  int32_t out[3] = {0};
  moelm_indexed_dataset_get(ds, 1, out);
  CU_ASSERT_EQUAL(out[0], 7);
  CU_ASSERT_EQUAL(out[1], 8);
  CU_ASSERT_EQUAL(out[2], 2);
  moelm_indexed_dataset_read_tokens(ds, 1, 4, out);
  CU_ASSERT_EQUAL(out[0], 2);
  CU_ASSERT_EQUAL(out[1], 7);
  CU_ASSERT_EQUAL(out[2], 8);
  moelm_indexed_dataset_close(ds);

  CU_ASSERT_TRUE(moelm_indexed_dataset_validate_index(tiny_idx, sizeof tiny_idx, sizeof tiny_bin, "mem", &error));
  CU_ASSERT_FALSE(moelm_indexed_dataset_validate_index(tiny_idx, sizeof tiny_idx, 8, "mem", &error));
  MOELM_ASSERT_ERROR(error, "mem.bin: truncated");
  g_clear_error(&error);
  g_free(idx_path);
  g_free(bin_path);
  g_free(prefix);
  moelm_test_rmtree(dir);
  g_free(dir);
}

static void test_round_trip_every_dtype(void)
{
  static const int dtypes[] = {MOELM_IDX_UINT8, MOELM_IDX_INT8,   MOELM_IDX_INT16,  MOELM_IDX_INT32,
                               MOELM_IDX_INT64, MOELM_IDX_UINT16, MOELM_IDX_UINT32, MOELM_IDX_UINT64};
  static const gsize elem[] = {1, 1, 2, 4, 8, 2, 4, 8};
  static const int32_t maxv[] = {255, 127, 32767, 2147483647, 2147483647, 65535, 2147483647, 2147483647};
  char *dir = moelm_test_tmpdir();
  for (gsize k = 0; k < G_N_ELEMENTS(dtypes); k++) {
    char *prefix = g_strdup_printf("%s/ds%d", dir, dtypes[k]);
    GError *error = NULL;
    MoelmIndexedDatasetBuilder *b = moelm_indexed_dataset_builder_new(prefix, dtypes[k], &error);
    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    const int32_t a[] = {0, 1, maxv[k], 2};
    const int32_t c[] = {100, 2};
    CU_ASSERT_TRUE(moelm_indexed_dataset_builder_add(b, a, 4, &error));
    CU_ASSERT_TRUE(moelm_indexed_dataset_builder_add(b, a, 0, &error)); /* an empty sequence */
    CU_ASSERT_TRUE(moelm_indexed_dataset_builder_add(b, c, 2, &error));
    CU_ASSERT_TRUE_FATAL(moelm_indexed_dataset_builder_finish(b, &error));

    char *bin_path = g_strconcat(prefix, ".bin", NULL);
    gsize bin_len;
    char *bin = moelm_test_read_file(bin_path, &bin_len);
    CU_ASSERT_EQUAL(bin_len, 6 * elem[k]);
    /* Little-endian: the third token's low byte is maxv & 0xff. */
    CU_ASSERT_EQUAL((unsigned char)bin[2 * elem[k]], (unsigned char)(maxv[k] & 0xff));
    g_free(bin);
    g_free(bin_path);

    MoelmIndexedDataset *ds = moelm_indexed_dataset_open(prefix, &error);
    CU_ASSERT_PTR_NOT_NULL_FATAL(ds);
    CU_ASSERT_EQUAL(moelm_indexed_dataset_dtype(ds), dtypes[k]);
    CU_ASSERT_EQUAL(moelm_indexed_dataset_len(ds), 3);
    CU_ASSERT_EQUAL(moelm_indexed_dataset_sizes(ds)[1], 0);
    CU_ASSERT_EQUAL(moelm_indexed_dataset_num_tokens(ds), 6);
    CU_ASSERT_EQUAL(moelm_indexed_dataset_max_token(ds), maxv[k] > 100 ? maxv[k] : 100);
    int32_t out[4] = {-1, -1, -1, -1};
    moelm_indexed_dataset_get(ds, 0, out);
    CU_ASSERT_EQUAL(memcmp(out, a, sizeof a), 0);
    moelm_indexed_dataset_get(ds, 2, out);
    CU_ASSERT_EQUAL(out[0], 100);
    CU_ASSERT_EQUAL(out[1], 2);
    moelm_indexed_dataset_close(ds);
    g_free(prefix);
  }
  moelm_test_rmtree(dir);
  g_free(dir);
}

static void test_best_dtype(void)
{
  CU_ASSERT_EQUAL(moelm_idx_best_dtype(8), MOELM_IDX_UINT16);
  CU_ASSERT_EQUAL(moelm_idx_best_dtype(65499), MOELM_IDX_UINT16);
  CU_ASSERT_EQUAL(moelm_idx_best_dtype(65500), MOELM_IDX_UINT32);
  CU_ASSERT_EQUAL(moelm_idx_dtype_size(MOELM_IDX_INT64), 8);
  CU_ASSERT_EQUAL(moelm_idx_dtype_size(6), 0);
  CU_ASSERT_STRING_EQUAL(moelm_idx_dtype_name(MOELM_IDX_UINT16), "uint16");
}

static void test_builder_errors_and_abort(void)
{
  char *dir = moelm_test_tmpdir();
  char *prefix = g_build_filename(dir, "x", NULL);
  GError *error = NULL;
  MoelmIndexedDatasetBuilder *b = moelm_indexed_dataset_builder_new(prefix, MOELM_IDX_UINT8, &error);
  CU_ASSERT_PTR_NOT_NULL_FATAL(b);
  const int32_t big[] = {300}, neg[] = {-1};
  CU_ASSERT_FALSE(moelm_indexed_dataset_builder_add(b, big, 1, &error));
  MOELM_ASSERT_ERROR(error, "token 300 does not fit dtype uint8");
  g_clear_error(&error);
  CU_ASSERT_FALSE(moelm_indexed_dataset_builder_add(b, neg, 1, &error));
  MOELM_ASSERT_ERROR(error, "token -1");
  g_clear_error(&error);
  moelm_indexed_dataset_builder_abort(b);
  CU_ASSERT_EQUAL(count_entries(dir), 0);

  CU_ASSERT_PTR_NULL(moelm_indexed_dataset_builder_new(prefix, 6, &error));
  MOELM_ASSERT_ERROR(error, prefix);
  g_clear_error(&error);
  char *nowhere = g_build_filename(dir, "missing", "x", NULL);
  CU_ASSERT_PTR_NULL(moelm_indexed_dataset_builder_new(nowhere, MOELM_IDX_UINT16, &error));
  MOELM_ASSERT_ERROR(error, nowhere);
  g_clear_error(&error);
  g_free(nowhere);
  g_free(prefix);
  moelm_test_rmtree(dir);
  g_free(dir);
}

static void test_merge_pieces(void)
{
  char *dir = moelm_test_tmpdir();
  GError *error = NULL;
  const int32_t seqs[5][3] = {{4, 5, 2}, {2}, {9, 2}, {6, 6, 2}, {2}};
  const gsize lens[5] = {3, 1, 2, 3, 1};
  /* Whole, and as pieces {0,1}, {}, {2,3,4} merged in order. */
  char *whole = g_build_filename(dir, "whole", NULL);
  MoelmIndexedDatasetBuilder *b = moelm_indexed_dataset_builder_new(whole, MOELM_IDX_UINT16, &error);
  for (int i = 0; i < 5; i++)
    moelm_indexed_dataset_builder_add(b, seqs[i], lens[i], &error);
  CU_ASSERT_TRUE_FATAL(moelm_indexed_dataset_builder_finish(b, &error));
  const int cut[4] = {0, 2, 2, 5};
  for (int p = 0; p < 3; p++) {
    char *piece = g_strdup_printf("%s/piece%d", dir, p);
    b = moelm_indexed_dataset_builder_new(piece, MOELM_IDX_UINT16, &error);
    for (int i = cut[p]; i < cut[p + 1]; i++)
      moelm_indexed_dataset_builder_add(b, seqs[i], lens[i], &error);
    CU_ASSERT_TRUE_FATAL(moelm_indexed_dataset_builder_finish(b, &error));
    g_free(piece);
  }
  char *merged = g_build_filename(dir, "merged", NULL);
  b = moelm_indexed_dataset_builder_new(merged, MOELM_IDX_UINT16, &error);
  for (int p = 0; p < 3; p++) {
    char *piece = g_strdup_printf("%s/piece%d", dir, p);
    CU_ASSERT_TRUE(moelm_indexed_dataset_builder_merge_file(b, piece, &error));
    g_free(piece);
  }
  CU_ASSERT_TRUE_FATAL(moelm_indexed_dataset_builder_finish(b, &error));
  for (int k = 0; k < 2; k++) {
    const char *ext = k ? ".bin" : ".idx";
    char *pw = g_strconcat(whole, ext, NULL), *pm = g_strconcat(merged, ext, NULL);
    gsize lw, lm;
    char *dw = moelm_test_read_file(pw, &lw), *dm = moelm_test_read_file(pm, &lm);
    CU_ASSERT_EQUAL_FATAL(lw, lm);
    CU_ASSERT_EQUAL(memcmp(dw, dm, lw), 0);
    g_free(dw);
    g_free(dm);
    g_free(pw);
    g_free(pm);
  }

  /* A piece of another dtype is refused, naming it. */
  char *other = g_build_filename(dir, "other", NULL);
  b = moelm_indexed_dataset_builder_new(other, MOELM_IDX_INT32, &error);
  CU_ASSERT_TRUE_FATAL(moelm_indexed_dataset_builder_finish(b, &error));
  b = moelm_indexed_dataset_builder_new(merged, MOELM_IDX_UINT16, &error);
  CU_ASSERT_FALSE(moelm_indexed_dataset_builder_merge_file(b, other, &error));
  MOELM_ASSERT_ERROR(error, "other.idx: dtype int32 differs");
  g_clear_error(&error);
  moelm_indexed_dataset_builder_abort(b);
  g_free(other);
  g_free(whole);
  g_free(merged);
  moelm_test_rmtree(dir);
  g_free(dir);
}

/* Open a dataset made of (possibly corrupted) tiny bytes and check the error. */
static void check_open_error(const char *dir, const void *idx, gsize idx_len, const void *bin, gsize bin_len,
                             const char *file_suffix, const char *needle)
{
  char *prefix = write_pair(dir, "bad", idx, idx_len, bin, bin_len);
  GError *error = NULL;
  MoelmIndexedDataset *ds = moelm_indexed_dataset_open(prefix, &error);
  CU_ASSERT_PTR_NULL(ds);
  char *file = g_strconcat(prefix, file_suffix, ": ", needle, NULL);
  MOELM_ASSERT_ERROR(error, file);
  CU_ASSERT_EQUAL(error->domain, MOELM_ERROR);
  g_clear_error(&error);
  moelm_indexed_dataset_close(ds);
  g_free(file);
  g_free(prefix);
}

static void test_open_errors(void)
{
  char *dir = moelm_test_tmpdir();
  unsigned char idx[64] = {0}, bin[16] = {0};
  const gsize n_idx = sizeof tiny_idx, n_bin = sizeof tiny_bin;
#define RESET() (memcpy(idx, tiny_idx, n_idx), memcpy(bin, tiny_bin, n_bin))

  RESET();
  idx[0] = 'T';
  check_open_error(dir, idx, n_idx, bin, n_bin, ".idx", "not a fairseq mmap index (bad magic");
  RESET();
  idx[9] = 2;
  check_open_error(dir, idx, n_idx, bin, n_bin, ".idx", "unsupported version 2");
  RESET();
  idx[17] = 11;
  check_open_error(dir, idx, n_idx, bin, n_bin, ".idx", "unknown dtype code 11");
  RESET();
  idx[17] = 6;
  check_open_error(dir, idx, n_idx, bin, n_bin, ".idx", "dtype code 6 (float64)");
  RESET();
  check_open_error(dir, idx, n_idx - 1, bin, n_bin, ".idx", "truncated: expected 50 bytes for 2 sequences, file has 49");
  RESET();
  check_open_error(dir, idx, 20, bin, n_bin, ".idx", "truncated: the header needs 26 bytes, file has 20");
  RESET();
  check_open_error(dir, idx, 0, bin, n_bin, ".idx", "truncated");
  RESET();
  idx[18] = 0xff; /* N = 255 */
  check_open_error(dir, idx, n_idx, bin, n_bin, ".idx", "truncated: expected 3086 bytes for 255 sequences");
  RESET();
  idx[25] = 0xff; /* N enormous: must not overflow */
  check_open_error(dir, idx, n_idx, bin, n_bin, ".idx", "truncated");
  RESET();
  idx[n_idx] = 0;
  check_open_error(dir, idx, n_idx + 1, bin, n_bin, ".idx", "trailing bytes: expected 50 bytes for 2 sequences");
  RESET();
  memset(idx + 26, 0xff, 4); /* sizes[0] = -1 */
  check_open_error(dir, idx, n_idx, bin, n_bin, ".idx", "sequence 0 has a negative size (-1)");
  RESET();
  idx[42] = 6; /* pointers[1] = 6, sizes say 4 */
  check_open_error(dir, idx, n_idx, bin, n_bin, ".idx", "sequence 1: pointer 6 is inconsistent with the sizes (expected 4)");
  RESET();
  idx[26] = 3; /* sizes[0] = 3: pointers[1] should then be 6 */
  check_open_error(dir, idx, n_idx, bin, n_bin, ".idx", "sequence 1: pointer 4 is inconsistent");
  RESET();
  check_open_error(dir, idx, n_idx, bin, n_bin - 2, ".bin", "truncated: the index describes 5 tokens (10 bytes of uint16), file has 8 bytes");
  RESET();
  check_open_error(dir, idx, n_idx, bin, n_bin + 2, ".bin", "too long");
  RESET();
  idx[17] = MOELM_IDX_INT16; /* same bytes as int16, with a negative token */
  bin[2] = 0xff;
  bin[3] = 0xff;
  check_open_error(dir, idx, n_idx, bin, n_bin, ".bin", "token -1 at position 1 is negative");
  RESET();
  idx[17] = MOELM_IDX_UINT16;
  bin[0] = 0xff;
  bin[1] = 0xff; /* 65535 is a fine uint16 token */
  char *prefix = write_pair(dir, "ok", idx, n_idx, bin, n_bin);
  GError *error = NULL;
  MoelmIndexedDataset *ds = moelm_indexed_dataset_open(prefix, &error);
  CU_ASSERT_PTR_NOT_NULL(ds);
  CU_ASSERT_EQUAL(moelm_indexed_dataset_max_token(ds), 65535);
  moelm_indexed_dataset_close(ds);
  g_free(prefix);

  /* A missing .bin is named. */
  prefix = g_build_filename(dir, "nobin", NULL);
  char *idx_path = g_strconcat(prefix, ".idx", NULL);
  moelm_test_write_file(idx_path, tiny_idx, n_idx);
  ds = moelm_indexed_dataset_open(prefix, &error);
  CU_ASSERT_PTR_NULL(ds);
  char *bin_path = g_strconcat(prefix, ".bin", NULL);
  MOELM_ASSERT_ERROR(error, bin_path);
  g_clear_error(&error);
  g_free(bin_path);
  g_free(idx_path);
  g_free(prefix);
#undef RESET
  moelm_test_rmtree(dir);
  g_free(dir);
}

MOELM_TEST_SUITE(indexed_dataset)
{
  CU_add_test(suite, "tiny uint16 dataset matches hand-written bytes", test_tiny_bytes);
  CU_add_test(suite, "round trip for every integer dtype", test_round_trip_every_dtype);
  CU_add_test(suite, "best dtype, sizes and names", test_best_dtype);
  CU_add_test(suite, "builder refuses tokens outside the dtype; abort cleans up", test_builder_errors_and_abort);
  CU_add_test(suite, "merging worker pieces equals writing at once", test_merge_pieces);
  CU_add_test(suite, "open validates every field and names the file", test_open_errors);
}
