/* Lines and words with Python's rules, word counting, binarizing, and line-aligned pieces. */
#include "config.h"

#include <string.h>

#include "moelm-test.h"
#include "moelm/binarizer.h"
#include "moelm/errors.h"

/* The lines of `text` joined with "|". */
static char *lines_of(const char *text, gsize len)
{
  GString *s = g_string_new(NULL);
  gsize pos = 0, n;
  const char *line;
  int count = 0;
  while (moelm_next_line(text, len, &pos, &line, &n)) {
    if (count++ > 0)
      g_string_append_c(s, '|');
    g_string_append_len(s, line, n);
  }
  return g_string_free(s, FALSE);
}

static int count_lines(const char *text, gsize len)
{
  gsize pos = 0, n;
  const char *line;
  int count = 0;
  while (moelm_next_line(text, len, &pos, &line, &n))
    count++;
  return count;
}

static void check_lines(const char *text, int n_lines, const char *joined)
{
  char *got = lines_of(text, strlen(text));
  CU_ASSERT_EQUAL(count_lines(text, strlen(text)), n_lines);
  if (strcmp(got, joined) != 0)
    g_printerr("\n  lines of \"%s\": \"%s\", expected \"%s\"\n", g_strescape(text, NULL), got, joined);
  CU_ASSERT_STRING_EQUAL(got, joined);
  g_free(got);
}

static void test_universal_newlines(void)
{
  check_lines("", 0, "");
  check_lines("a", 1, "a");
  check_lines("a\n", 1, "a");
  check_lines("a\nb\r\nc\rd", 4, "a|b|c|d");
  check_lines("\n\n", 2, "|");
  check_lines("\r\r\n", 2, "|");     /* a lone \r, then one \r\n */
  check_lines("x\n\r\ny", 3, "x||y"); /* \n then \r\n: one empty line between */
  check_lines("x\r\r", 2, "x|");
}

static char *words_of(const char *line)
{
  GPtrArray *w = moelm_split_words(line, strlen(line));
  g_ptr_array_add(w, NULL);
  char *joined = g_strjoinv("|", (char **)w->pdata);
  g_ptr_array_unref(w);
  return joined;
}

static void check_words(const char *line, const char *joined)
{
  char *got = words_of(line);
  if (strcmp(got, joined) != 0)
    g_printerr("\n  words: \"%s\", expected \"%s\"\n", got, joined);
  CU_ASSERT_STRING_EQUAL(got, joined);
  g_free(got);
}

static void test_unicode_whitespace_split(void)
{
  check_words("", "");
  check_words(" \t ", "");
  check_words("  hello   world ", "hello|world");
  check_words("a\xc2\xa0" "b\xe3\x80\x80" "c\x1c" "d\x1f" "e\x0b" "f\x0c" "g", "a|b|c|d|e|f|g");
  check_words("a\xc2\x85" "b\xe1\x9a\x80" "c\xe2\x80\x80" "d\xe2\x80\x8a" "e\xe2\x80\xa8" "f\xe2\x80\xa9" "g",
              "a|b|c|d|e|f|g");
  check_words("a\xe2\x80\xaf" "b\xe2\x81\x9f" "c", "a|b|c");
  /* Not whitespace for Python: U+200B ZERO WIDTH SPACE, U+180E, U+FEFF, U+00AD. */
  check_words("a\xe2\x80\x8b" "b \xe1\xa0\x8e" "c \xef\xbb\xbf" "d \xc2\xad" "e",
              "a\xe2\x80\x8b" "b|\xe1\xa0\x8e" "c|\xef\xbb\xbf" "d|\xc2\xad" "e");
  /* Near misses of the 3-byte spaces stay inside words. */
  check_words("a\xe2\x80\x8c" "b\xe2\x81\xa0" "c\xe3\x80\x81" "d", "a\xe2\x80\x8c" "b\xe2\x81\xa0" "c\xe3\x80\x81" "d");
}

static char *write_text(const char *dir, const char *name, const char *text, gsize len)
{
  char *path = g_build_filename(dir, name, NULL);
  moelm_test_write_file(path, text, len);
  return path;
}

static void test_count_words(void)
{
  char *dir = moelm_test_tmpdir();
  const char *text = "a b a\n\nb\xc2\xa0" "c\r\nc";
  char *path = write_text(dir, "t.txt", text, strlen(text));
  MoelmDictionary *counts = moelm_dictionary_new();
  GError *error = NULL;
  CU_ASSERT_TRUE(moelm_count_words(path, 0, strlen(text), counts, &error));
  CU_ASSERT_EQUAL(moelm_dictionary_size(counts), 7);
  CU_ASSERT_EQUAL(moelm_dictionary_count(counts, moelm_dictionary_index(counts, "a")), 2);
  CU_ASSERT_EQUAL(moelm_dictionary_count(counts, moelm_dictionary_index(counts, "b")), 2);
  CU_ASSERT_EQUAL(moelm_dictionary_count(counts, moelm_dictionary_index(counts, "c")), 2);
  CU_ASSERT_EQUAL(moelm_dictionary_count(counts, MOELM_EOS), 1 + 4); /* once per line */
  moelm_dictionary_free(counts);
  g_free(path);
  moelm_test_rmtree(dir);
  g_free(dir);
}

static MoelmDictionary *small_dict(void)
{
  MoelmDictionary *d = moelm_dictionary_new();
  moelm_dictionary_add_symbol(d, "a", 1, FALSE); /* 4 */
  moelm_dictionary_add_symbol(d, "b", 1, FALSE); /* 5 */
  moelm_dictionary_add_symbol(d, "\xc3\xa9", 1, FALSE); /* 6 */
  return d;
}

/* Binarize [start, end) of path into PREFIX; returns the stats. */
static MoelmBinarizeStats binarize(const char *path, gsize start, gsize end, const MoelmDictionary *dict,
                                   const char *prefix)
{
  MoelmBinarizeStats st = {0, 0, 0};
  GError *error = NULL;
  MoelmIndexedDatasetBuilder *b = moelm_indexed_dataset_builder_new(prefix, MOELM_IDX_UINT16, &error);
  CU_ASSERT_PTR_NOT_NULL_FATAL(b);
  gboolean ok = moelm_binarize_range(path, start, end, dict, NULL, NULL, b, &st, &error);
  if (!ok)
    g_printerr("\n  binarize: %s\n", error->message);
  CU_ASSERT_TRUE_FATAL(ok);
  CU_ASSERT_TRUE_FATAL(moelm_indexed_dataset_builder_finish(b, &error));
  return st;
}

static void assert_seq(const MoelmIndexedDataset *ds, gsize i, const int32_t *want, gsize n)
{
  CU_ASSERT_EQUAL_FATAL(moelm_indexed_dataset_sizes(ds)[i], (int32_t)n);
  int32_t got[16];
  moelm_indexed_dataset_get(ds, i, got);
  CU_ASSERT_EQUAL(memcmp(got, want, n * sizeof *got), 0);
}

static void test_binarize_oov_and_empty_lines(void)
{
  char *dir = moelm_test_tmpdir();
  const char *text = "a x b\n\n<unk> a\r\nzz \xc3\xa9\rb";
  char *path = write_text(dir, "t.txt", text, strlen(text));
  char *prefix = g_build_filename(dir, "out", NULL);
  MoelmDictionary *d = small_dict();
  MoelmBinarizeStats st = binarize(path, 0, strlen(text), d, prefix);
  CU_ASSERT_EQUAL(st.n_seq, 5);
  CU_ASSERT_EQUAL(st.n_tok, 4 + 1 + 3 + 3 + 2);
  CU_ASSERT_EQUAL(st.n_replaced, 2); /* x and zz; the literal <unk> is not "replaced" */

  GError *error = NULL;
  MoelmIndexedDataset *ds = moelm_indexed_dataset_open(prefix, &error);
  CU_ASSERT_PTR_NOT_NULL_FATAL(ds);
  CU_ASSERT_EQUAL_FATAL(moelm_indexed_dataset_len(ds), 5);
  const int32_t s0[] = {4, 3, 5, 2}, s1[] = {2}, s2[] = {3, 4, 2}, s3[] = {3, 6, 2}, s4[] = {5, 2};
  assert_seq(ds, 0, s0, 4);
  assert_seq(ds, 1, s1, 1);
  assert_seq(ds, 2, s2, 3);
  assert_seq(ds, 3, s3, 3);
  assert_seq(ds, 4, s4, 2);
  moelm_indexed_dataset_close(ds);

  /* The same through encode_line. */
  GArray *ids = g_array_new(FALSE, FALSE, sizeof(int32_t));
  int64_t replaced = 0;
  CU_ASSERT_TRUE(moelm_encode_line(d, "a x b", 5, NULL, NULL, ids, &replaced, &error));
  CU_ASSERT_EQUAL(ids->len, 4);
  CU_ASSERT_EQUAL(memcmp(ids->data, s0, sizeof s0), 0);
  CU_ASSERT_EQUAL(replaced, 1);
  CU_ASSERT_FALSE(moelm_encode_line(d, "a\xff", 2, NULL, NULL, ids, &replaced, &error));
  MOELM_ASSERT_ERROR(error, "invalid UTF-8");
  g_clear_error(&error);
  g_array_unref(ids);

  moelm_dictionary_free(d);
  g_free(prefix);
  g_free(path);
  moelm_test_rmtree(dir);
  g_free(dir);
}

static void test_invalid_utf8_names_file_and_line(void)
{
  char *dir = moelm_test_tmpdir();
  const char *text = "a\rb\r\n\xc3(\nc\n";
  char *path = write_text(dir, "bad.txt", text, strlen(text));
  MoelmDictionary *d = small_dict();
  GError *error = NULL;
  char *want = g_strdup_printf("%s:3: invalid UTF-8", path);

  CU_ASSERT_FALSE(moelm_count_words(path, 0, strlen(text), d, &error));
  MOELM_ASSERT_ERROR(error, want);
  g_clear_error(&error);

  char *prefix = g_build_filename(dir, "out", NULL);
  MoelmIndexedDatasetBuilder *b = moelm_indexed_dataset_builder_new(prefix, MOELM_IDX_UINT16, &error);
  MoelmBinarizeStats st = {0, 0, 0};
  /* A range that starts after two lines still reports the line number in the file. */
  CU_ASSERT_FALSE(moelm_binarize_range(path, 5, strlen(text), d, NULL, NULL, b, &st, &error));
  MOELM_ASSERT_ERROR(error, want);
  g_clear_error(&error);
  moelm_indexed_dataset_builder_abort(b);

  /* A range that does not start at a line boundary, or splits "\r\n", is refused. */
  b = moelm_indexed_dataset_builder_new(prefix, MOELM_IDX_UINT16, &error);
  CU_ASSERT_FALSE(moelm_binarize_range(path, 4, 5, d, NULL, NULL, b, &st, &error));
  MOELM_ASSERT_ERROR(error, "is not a range of whole lines");
  g_clear_error(&error);
  CU_ASSERT_FALSE(moelm_binarize_range(path, 1, 2, d, NULL, NULL, b, &st, &error));
  MOELM_ASSERT_ERROR(error, path);
  g_clear_error(&error);
  moelm_indexed_dataset_builder_abort(b);

  /* A missing file names the path. */
  char *missing = g_build_filename(dir, "missing.txt", NULL);
  CU_ASSERT_FALSE(moelm_count_words(missing, 0, 0, d, &error));
  MOELM_ASSERT_ERROR(error, missing);
  g_clear_error(&error);

  g_free(missing);
  g_free(prefix);
  g_free(want);
  moelm_dictionary_free(d);
  g_free(path);
  moelm_test_rmtree(dir);
  g_free(dir);
}

static void test_line_offsets_exact(void)
{
  char *dir = moelm_test_tmpdir();
  /* size 6, 3 pieces: byte 2 is the "\n" of the first "\r\n" (the piece starts after it),
   * byte 4 is a "\r" (the piece starts after its "\r\n"). */
  char *path = write_text(dir, "t.txt", "a\r\nb\r\n", 6);
  gsize off[4];
  GError *error = NULL;
  CU_ASSERT_TRUE(moelm_find_line_offsets(path, 3, off, &error));
  CU_ASSERT_EQUAL(off[0], 0);
  CU_ASSERT_EQUAL(off[1], 3);
  CU_ASSERT_EQUAL(off[2], 6);
  CU_ASSERT_EQUAL(off[3], 6);
  CU_ASSERT_FALSE(moelm_find_line_offsets(path, 0, off, &error));
  MOELM_ASSERT_ERROR(error, path);
  g_clear_error(&error);
  g_free(path);

  path = write_text(dir, "empty.txt", "", 0);
  CU_ASSERT_TRUE(moelm_find_line_offsets(path, 3, off, &error));
  CU_ASSERT_EQUAL(off[1], 0);
  CU_ASSERT_EQUAL(off[3], 0);
  g_free(path);
  moelm_test_rmtree(dir);
  g_free(dir);
}

static gboolean files_equal(const char *a, const char *b)
{
  gsize la, lb;
  char *da = moelm_test_read_file(a, &la), *db = moelm_test_read_file(b, &lb);
  gboolean eq = da && db && la == lb && memcmp(da, db, la) == 0;
  g_free(da);
  g_free(db);
  return eq;
}

static void test_pieces_concatenate_to_whole(void)
{
  char *dir = moelm_test_tmpdir();
  /* Mixed line ends, empty lines, a long line, OOV words and no final newline. */
  GString *text = g_string_new(NULL);
  const char *ends[] = {"\n", "\r\n", "\r", "\n\n", "\r\n\r\n"};
  for (int i = 0; i < 60; i++) {
    g_string_append_printf(text, "a b%s \xc3\xa9 w%d", i % 7 == 0 ? " a a a a a a a a a a a a a a" : "", i % 5);
    g_string_append(text, ends[i % 5]);
  }
  g_string_append(text, "b last");
  char *path = write_text(dir, "t.txt", text->str, text->len);
  MoelmDictionary *d = small_dict();
  char *whole = g_build_filename(dir, "whole", NULL);
  MoelmBinarizeStats ws = binarize(path, 0, text->len, d, whole);
  MoelmDictionary *whole_counts = moelm_dictionary_new();
  GError *error = NULL;
  CU_ASSERT_TRUE(moelm_count_words(path, 0, text->len, whole_counts, &error));
  gsize wc_len;
  char *wc = moelm_dictionary_to_data(whole_counts, &wc_len);

  for (int n = 1; n <= 9; n++) {
    gsize off[10];
    CU_ASSERT_TRUE_FATAL(moelm_find_line_offsets(path, n, off, &error));
    CU_ASSERT_EQUAL(off[0], 0);
    CU_ASSERT_EQUAL(off[n], text->len);
    char *merged = g_strdup_printf("%s/merged%d", dir, n);
    MoelmIndexedDatasetBuilder *m = moelm_indexed_dataset_builder_new(merged, MOELM_IDX_UINT16, &error);
    MoelmBinarizeStats sum = {0, 0, 0};
    MoelmDictionary *counts = moelm_dictionary_new();
    for (int p = 0; p < n; p++) {
      CU_ASSERT(off[p] <= off[p + 1]);
      /* every piece starts at a line start */
      CU_ASSERT(off[p] == 0 || text->str[off[p] - 1] == '\n' ||
                (text->str[off[p] - 1] == '\r' && text->str[off[p]] != '\n'));
      char *piece = g_strdup_printf("%s/piece%d_%d", dir, n, p);
      MoelmBinarizeStats st = binarize(path, off[p], off[p + 1], d, piece);
      sum.n_seq += st.n_seq;
      sum.n_tok += st.n_tok;
      sum.n_replaced += st.n_replaced;
      CU_ASSERT_TRUE(moelm_indexed_dataset_builder_merge_file(m, piece, &error));
      MoelmDictionary *pc = moelm_dictionary_new();
      CU_ASSERT_TRUE(moelm_count_words(path, off[p], off[p + 1], pc, &error));
      moelm_dictionary_update(counts, pc);
      moelm_dictionary_free(pc);
      g_free(piece);
    }
    CU_ASSERT_TRUE_FATAL(moelm_indexed_dataset_builder_finish(m, &error));
    CU_ASSERT_EQUAL(sum.n_seq, ws.n_seq);
    CU_ASSERT_EQUAL(sum.n_tok, ws.n_tok);
    CU_ASSERT_EQUAL(sum.n_replaced, ws.n_replaced);
    for (int k = 0; k < 2; k++) {
      char *a = g_strconcat(whole, k ? ".bin" : ".idx", NULL), *b = g_strconcat(merged, k ? ".bin" : ".idx", NULL);
      CU_ASSERT_TRUE(files_equal(a, b));
      g_free(a);
      g_free(b);
    }
    /* Word counts merged from pieces: the same dict.txt; </s> got 1 + lines from each piece
     * dictionary on top of its own 1, so it exceeds the whole file's 1 + lines by n. */
    gsize pc_len;
    char *pcd = moelm_dictionary_to_data(counts, &pc_len);
    CU_ASSERT_STRING_EQUAL(pcd, wc);
    CU_ASSERT_EQUAL(moelm_dictionary_count(counts, MOELM_EOS) - n, moelm_dictionary_count(whole_counts, MOELM_EOS));
    g_free(pcd);
    moelm_dictionary_free(counts);
    g_free(merged);
  }
  CU_ASSERT_EQUAL(ws.n_seq, 60 + 12 + 12 + 1); /* "\n\n" and "\r\n\r\n" add an empty line each */
  g_free(wc);
  moelm_dictionary_free(whole_counts);
  g_free(whole);
  moelm_dictionary_free(d);
  g_free(path);
  g_string_free(text, TRUE);
  moelm_test_rmtree(dir);
  g_free(dir);
}

/* A tokenizer that makes every byte a word, and fails on "!". */
static GPtrArray *byte_tokenizer(const char *line, gsize len, gpointer user_data, GError **error)
{
  int *calls = user_data;
  (*calls)++;
  if (memchr(line, '!', len) != NULL) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_FAILED, "cannot tokenize");
    return NULL;
  }
  GPtrArray *w = g_ptr_array_new_with_free_func(g_free);
  for (gsize i = 0; i < len; i++)
    g_ptr_array_add(w, g_strndup(line + i, 1));
  return w;
}

static void test_tokenizer_callback(void)
{
  char *dir = moelm_test_tmpdir();
  const char *text = "ab\nbz\n";
  char *path = write_text(dir, "t.txt", text, strlen(text));
  MoelmDictionary *d = small_dict();
  char *prefix = g_build_filename(dir, "out", NULL);
  GError *error = NULL;
  int calls = 0;
  MoelmIndexedDatasetBuilder *b = moelm_indexed_dataset_builder_new(prefix, MOELM_IDX_UINT16, &error);
  MoelmBinarizeStats st = {0, 0, 0};
  CU_ASSERT_TRUE(moelm_binarize_range(path, 0, strlen(text), d, byte_tokenizer, &calls, b, &st, &error));
  CU_ASSERT_TRUE_FATAL(moelm_indexed_dataset_builder_finish(b, &error));
  CU_ASSERT_EQUAL(calls, 2);
  CU_ASSERT_EQUAL(st.n_tok, 6);
  CU_ASSERT_EQUAL(st.n_replaced, 1);
  MoelmIndexedDataset *ds = moelm_indexed_dataset_open(prefix, &error);
  CU_ASSERT_PTR_NOT_NULL_FATAL(ds);
  const int32_t s0[] = {4, 5, 2}, s1[] = {5, 3, 2};
  assert_seq(ds, 0, s0, 3);
  assert_seq(ds, 1, s1, 3);
  moelm_indexed_dataset_close(ds);

  MoelmDictionary *counts = moelm_dictionary_new();
  CU_ASSERT_TRUE(moelm_count_words_tokenized(path, 0, strlen(text), byte_tokenizer, &calls, counts, &error));
  CU_ASSERT_EQUAL(moelm_dictionary_count(counts, moelm_dictionary_index(counts, "b")), 2);
  moelm_dictionary_free(counts);

  char *bad = write_text(dir, "bad.txt", "ok\nno!\n", 7);
  b = moelm_indexed_dataset_builder_new(prefix, MOELM_IDX_UINT16, &error);
  CU_ASSERT_FALSE(moelm_binarize_range(bad, 0, 7, d, byte_tokenizer, &calls, b, &st, &error));
  char *want = g_strdup_printf("%s:2: cannot tokenize", bad);
  MOELM_ASSERT_ERROR(error, want);
  g_clear_error(&error);
  moelm_indexed_dataset_builder_abort(b);
  g_free(want);
  g_free(bad);
  moelm_dictionary_free(d);
  g_free(prefix);
  g_free(path);
  moelm_test_rmtree(dir);
  g_free(dir);
}

MOELM_TEST_SUITE(binarizer)
{
  CU_add_test(suite, "universal newlines", test_universal_newlines);
  CU_add_test(suite, "Unicode whitespace split (Python's isspace)", test_unicode_whitespace_split);
  CU_add_test(suite, "count words: </s> once per line", test_count_words);
  CU_add_test(suite, "binarize: OOV, literal <unk>, empty lines", test_binarize_oov_and_empty_lines);
  CU_add_test(suite, "invalid UTF-8 and bad ranges name file and line", test_invalid_utf8_names_file_and_line);
  CU_add_test(suite, "line offsets at \\r\\n boundaries", test_line_offsets_exact);
  CU_add_test(suite, "pieces concatenate to the whole, for 1..9 workers", test_pieces_concatenate_to_whole);
  CU_add_test(suite, "line tokenizer callback", test_tokenizer_callback);
}
