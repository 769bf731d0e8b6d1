/* fairseq's Dictionary: symbols and counts, dict.txt load/save, finalize, errors. */
#include "config.h"

#include <string.h>

#include <glib/gstdio.h>

#include "moelm-test.h"
#include "moelm/dictionary.h"
#include "moelm/errors.h"

static MoelmDictionary *load_string(const char *text, GError **error)
{
  return moelm_dictionary_load_from_data(text, strlen(text), "dict.txt", error);
}

static void assert_data(const MoelmDictionary *d, const char *expected)
{
  gsize len;
  char *data = moelm_dictionary_to_data(d, &len);
  CU_ASSERT_EQUAL(len, strlen(expected));
  if (strcmp(data, expected) != 0)
    g_printerr("\n  dict.txt was:\n%s  expected:\n%s", data, expected);
  CU_ASSERT_STRING_EQUAL(data, expected);
  g_free(data);
}

/* The directory's entries, sorted, joined by ",". */
static char *list_dir(const char *dir)
{
  GDir *d = g_dir_open(dir, 0, NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(d);
  GPtrArray *names = g_ptr_array_new_with_free_func(g_free);
  const char *name;
  while ((name = g_dir_read_name(d)) != NULL)
    g_ptr_array_add(names, g_strdup(name));
  g_dir_close(d);
  g_ptr_array_sort(names, (GCompareFunc)g_strcmp0);
  g_ptr_array_add(names, NULL);
  char *joined = g_strjoinv(",", (char **)names->pdata);
  g_ptr_array_unref(names);
  return joined;
}

static void test_specials_add_index_count(void)
{
  MoelmDictionary *d = moelm_dictionary_new();
  CU_ASSERT_EQUAL(moelm_dictionary_size(d), 4);
  CU_ASSERT_STRING_EQUAL(moelm_dictionary_symbol(d, MOELM_BOS), "<s>");
  CU_ASSERT_STRING_EQUAL(moelm_dictionary_symbol(d, MOELM_PAD), "<pad>");
  CU_ASSERT_STRING_EQUAL(moelm_dictionary_symbol(d, MOELM_EOS), "</s>");
  CU_ASSERT_STRING_EQUAL(moelm_dictionary_symbol(d, MOELM_UNK), "<unk>");
  for (int i = 0; i < 4; i++)
    CU_ASSERT_EQUAL(moelm_dictionary_count(d, i), 1);
  CU_ASSERT_EQUAL(moelm_dictionary_index(d, "</s>"), 2);

  CU_ASSERT_EQUAL(moelm_dictionary_add_symbol(d, "hello", 1, FALSE), 4);
  CU_ASSERT_EQUAL(moelm_dictionary_add_symbol(d, "world", 3, FALSE), 5);
  CU_ASSERT_EQUAL(moelm_dictionary_add_symbol(d, "hello", 2, FALSE), 4);
  CU_ASSERT_EQUAL(moelm_dictionary_count(d, 4), 3);
  CU_ASSERT_EQUAL(moelm_dictionary_add_symbol(d, "</s>", 5, FALSE), 2);
  CU_ASSERT_EQUAL(moelm_dictionary_count(d, 2), 6);
  CU_ASSERT_EQUAL(moelm_dictionary_size(d), 6);
  CU_ASSERT_EQUAL(moelm_dictionary_index(d, "world"), 5);
  CU_ASSERT_EQUAL(moelm_dictionary_index(d, "absent"), MOELM_UNK);
  CU_ASSERT_TRUE(moelm_dictionary_contains(d, "hello"));
  CU_ASSERT_FALSE(moelm_dictionary_contains(d, "absent"));
  /* fairseq's __getitem__: past the end reads as <unk>. */
  CU_ASSERT_STRING_EQUAL(moelm_dictionary_symbol(d, 99), "<unk>");

  /* overwrite appends a new entry and the word now maps to it. */
  CU_ASSERT_EQUAL(moelm_dictionary_add_symbol(d, "hello", 7, TRUE), 6);
  CU_ASSERT_EQUAL(moelm_dictionary_index(d, "hello"), 6);
  CU_ASSERT_EQUAL(moelm_dictionary_count(d, 4), 3);
  CU_ASSERT_EQUAL(moelm_dictionary_count(d, 6), 7);
  CU_ASSERT_EQUAL(moelm_dictionary_size(d), 7);
  moelm_dictionary_free(d);
}

static void test_load_save_round_trip(void)
{
  /* Words with inner spaces (split at the LAST space), UTF-8, negative and zero counts. */
  const char *text = "the 120\n, 99\na b 7\n\xc3\xa9t\xc3\xa9 3\n\xe4\xb8\xad 0\nneg -2\n";
  GError *error = NULL;
  MoelmDictionary *d = load_string(text, &error);
  CU_ASSERT_PTR_NOT_NULL_FATAL(d);
  CU_ASSERT_EQUAL(moelm_dictionary_size(d), 10);
  CU_ASSERT_EQUAL(moelm_dictionary_index(d, "the"), 4);
  CU_ASSERT_EQUAL(moelm_dictionary_index(d, "a b"), 6);
  CU_ASSERT_EQUAL(moelm_dictionary_count(d, 6), 7);
  CU_ASSERT_EQUAL(moelm_dictionary_count(d, 9), -2);

  char *dir = moelm_test_tmpdir();
  char *path = g_build_filename(dir, "dict.txt", NULL);
  CU_ASSERT_TRUE(moelm_dictionary_save(d, path, &error));
  gsize len;
  char *saved = moelm_test_read_file(path, &len);
  CU_ASSERT_PTR_NOT_NULL_FATAL(saved);
  CU_ASSERT_EQUAL(len, strlen(text));
  CU_ASSERT_EQUAL(memcmp(saved, text, len), 0);
  /* No temporary left beside it. */
  char *entries = list_dir(dir);
  CU_ASSERT_STRING_EQUAL(entries, "dict.txt");
  g_free(entries);

  MoelmDictionary *again = moelm_dictionary_load(path, &error);
  CU_ASSERT_PTR_NOT_NULL_FATAL(again);
  CU_ASSERT_EQUAL(moelm_dictionary_hash(again), moelm_dictionary_hash(d));
  moelm_dictionary_free(again);
  g_free(saved);
  g_free(path);
  moelm_test_rmtree(dir);
  g_free(dir);
  moelm_dictionary_free(d);
}

static void test_load_python_line_rules(void)
{
  /* Universal newlines, rstrip() of Unicode whitespace, int() of the count field. */
  const char *text = "a 1\r\nb 2\rc 3 \t\xc2\xa0\nd \t4\ne +5\nf 1_000\ng 007";
  GError *error = NULL;
  MoelmDictionary *d = load_string(text, &error);
  CU_ASSERT_PTR_NOT_NULL_FATAL(d);
  CU_ASSERT_EQUAL(moelm_dictionary_size(d), 11);
  assert_data(d, "a 1\nb 2\nc 3\nd 4\ne 5\nf 1000\ng 7\n");
  moelm_dictionary_free(d);

  /* An empty file is the 4 specials. */
  d = moelm_dictionary_load_from_data("", 0, "empty.txt", &error);
  CU_ASSERT_PTR_NOT_NULL_FATAL(d);
  CU_ASSERT_EQUAL(moelm_dictionary_size(d), 4);
  moelm_dictionary_free(d);
}

static void test_overwrite_flag(void)
{
  GError *error = NULL;
  MoelmDictionary *d = load_string("a 1\nb 2\na 5 #fairseq:overwrite\n<unk> 9 #fairseq:overwrite\n", &error);
  CU_ASSERT_PTR_NOT_NULL_FATAL(d);
  CU_ASSERT_EQUAL(moelm_dictionary_size(d), 8);
  CU_ASSERT_EQUAL(moelm_dictionary_index(d, "a"), 6);
  CU_ASSERT_EQUAL(moelm_dictionary_count(d, 4), 1);
  CU_ASSERT_EQUAL(moelm_dictionary_count(d, 6), 5);
  CU_ASSERT_EQUAL(moelm_dictionary_index(d, "<unk>"), 7);
  CU_ASSERT_STRING_EQUAL(moelm_dictionary_symbol(d, 4), "a");
  /* fairseq's save writes every entry, without the flag. */
  assert_data(d, "a 1\nb 2\na 5\n<unk> 9\n");
  moelm_dictionary_free(d);

  /* The flag needs a count before it. */
  d = load_string("a #fairseq:overwrite\n", &error);
  CU_ASSERT_PTR_NULL(d);
  MOELM_ASSERT_ERROR(error, "dict.txt:1: expected");
  g_clear_error(&error);
}

static void test_finalize_order_threshold_padding(void)
{
  MoelmDictionary *d = moelm_dictionary_new();
  /* Insertion order deliberately not sorted. */
  const struct {
    const char *w;
    int64_t n;
  } words[] = {{"eel", 1}, {"zeta", 3}, {"cat", 3}, {"\xc3\xa9", 3}, {"the", 5}, {"dog", 2},
               {"bat", 3}, {"ant", 1}, {"Zed", 3}};
  for (gsize i = 0; i < G_N_ELEMENTS(words); i++)
    moelm_dictionary_add_symbol(d, words[i].w, words[i].n, FALSE);
  moelm_dictionary_add_symbol(d, "</s>", 10, FALSE);
  moelm_dictionary_finalize(d, 2, -1, 8);
  /* count descending, ties in byte order ("Zed" < "bat" < ... < "zeta" < "é"), stop at the
   * first count < 2, then pad 11 → 16 with madeupword0000..0004 (count 0). */
  assert_data(d, "the 5\nZed 3\nbat 3\ncat 3\nzeta 3\n\xc3\xa9 3\ndog 2\n"
                 "madeupword0000 0\nmadeupword0001 0\nmadeupword0002 0\n"
                 "madeupword0003 0\nmadeupword0004 0\n");
  CU_ASSERT_EQUAL(moelm_dictionary_size(d), 16);
  CU_ASSERT_EQUAL(moelm_dictionary_index(d, "the"), 4);
  CU_ASSERT_EQUAL(moelm_dictionary_index(d, "dog"), 10);
  CU_ASSERT_EQUAL(moelm_dictionary_index(d, "eel"), MOELM_UNK);
  CU_ASSERT_EQUAL(moelm_dictionary_count(d, MOELM_EOS), 11); /* specials keep their counts */
  moelm_dictionary_free(d);
}

static void test_finalize_nwords(void)
{
  const char *text = "c 3\nb 3\na 3\nd 9\ne 1\n";
  GError *error = NULL;
  /* nwords includes the 4 specials: 7 keeps d, a, b; padding 8 adds madeupword0000. */
  MoelmDictionary *d = load_string(text, &error);
  moelm_dictionary_finalize(d, -1, 7, 8);
  assert_data(d, "d 9\na 3\nb 3\nmadeupword0000 0\n");
  moelm_dictionary_free(d);

  /* No padding, no limit, threshold 0: everything, sorted. */
  d = load_string(text, &error);
  moelm_dictionary_finalize(d, 0, 0, 1);
  assert_data(d, "d 9\na 3\nb 3\nc 3\ne 1\n");
  moelm_dictionary_free(d);

  /* nwords <= 4 (but > 0) keeps no words at all (most_common of a negative count). */
  d = load_string(text, &error);
  moelm_dictionary_finalize(d, -1, 3, 1);
  CU_ASSERT_EQUAL(moelm_dictionary_size(d), 4);
  moelm_dictionary_free(d);

  /* A word repeated through #fairseq:overwrite keeps its largest count, once. */
  d = load_string("x 2\ny 4\nx 7 #fairseq:overwrite\n", &error);
  moelm_dictionary_finalize(d, -1, -1, 1);
  assert_data(d, "x 7\ny 4\n");
  moelm_dictionary_free(d);

  /* Padding goes through add_symbol: an existing madeupword0000 is skipped, not repeated. */
  d = load_string("madeupword0000 5\n", &error);
  moelm_dictionary_pad_to_multiple(d, 8);
  assert_data(d, "madeupword0000 5\nmadeupword0001 0\nmadeupword0002 0\nmadeupword0003 0\n");
  moelm_dictionary_free(d);
}

static void test_update_and_hash(void)
{
  MoelmDictionary *a = moelm_dictionary_new();
  /* FNV-1a 64 of "<s>\n<pad>\n</s>\n<unk>\n". */
  CU_ASSERT_EQUAL(moelm_dictionary_hash(a), UINT64_C(0xcd34686c27d395b5));
  moelm_dictionary_add_symbol(a, "x", 2, FALSE);
  MoelmDictionary *b = moelm_dictionary_new();
  moelm_dictionary_add_symbol(b, "y", 5, FALSE);
  moelm_dictionary_add_symbol(b, "x", 3, FALSE);
  moelm_dictionary_add_symbol(b, "</s>", 4, FALSE);
  moelm_dictionary_update(a, b);
  CU_ASSERT_EQUAL(moelm_dictionary_size(a), 6);
  CU_ASSERT_EQUAL(moelm_dictionary_count(a, moelm_dictionary_index(a, "x")), 5);
  CU_ASSERT_EQUAL(moelm_dictionary_index(a, "y"), 5);
  CU_ASSERT_EQUAL(moelm_dictionary_count(a, 5), 5);
  CU_ASSERT_EQUAL(moelm_dictionary_count(a, MOELM_EOS), 1 + 5); /* specials too, as fairseq */
  CU_ASSERT_NOT_EQUAL(moelm_dictionary_hash(a), moelm_dictionary_hash(b));
  moelm_dictionary_free(a);
  moelm_dictionary_free(b);
}

static void check_load_error(const char *text, gsize len, const char *needle)
{
  GError *error = NULL;
  MoelmDictionary *d = moelm_dictionary_load_from_data(text, len, "data-bin/dict.txt", &error);
  CU_ASSERT_PTR_NULL(d);
  MOELM_ASSERT_ERROR(error, needle);
  CU_ASSERT_TRUE(g_error_matches(error, MOELM_ERROR, MOELM_ERROR_FORMAT));
  g_clear_error(&error);
  moelm_dictionary_free(d);
}

static void test_load_errors(void)
{
  check_load_error("a 1\nnospace\n", 12, "data-bin/dict.txt:2: expected '<token> <cnt> [flags]'");
  check_load_error("a 1\n\nb 2\n", 9, "data-bin/dict.txt:2: expected"); /* blank line */
  check_load_error("x abc\n", 6, "data-bin/dict.txt:1: bad count \"abc\"");
  check_load_error("x 1__0\n", 7, "data-bin/dict.txt:1: bad count");
  check_load_error("x 12x\n", 6, "data-bin/dict.txt:1: bad count");
  check_load_error("x 99999999999999999999\n", 23, "data-bin/dict.txt:1: bad count");
  check_load_error("x \n", 3, "data-bin/dict.txt:1: expected"); /* rstrip leaves "x" */
  check_load_error("a 1\nb 2\na 3\n", 12, "data-bin/dict.txt:3: duplicate word 'a'");
  check_load_error("<unk> 5\n", 8, "data-bin/dict.txt:1: duplicate word '<unk>'");
  check_load_error("a 1\r\n\xff\xfe 2\n", 10, "data-bin/dict.txt:2: invalid UTF-8");
  check_load_error("a 1\rb\xed\xa0\x80 2\n", 11, "data-bin/dict.txt:2: invalid UTF-8"); /* surrogate */
  check_load_error("a\0b 1\n", 6, "data-bin/dict.txt:1: contains a NUL byte");

  GError *error = NULL;
  char *dir = moelm_test_tmpdir();
  char *path = g_build_filename(dir, "missing-dict.txt", NULL);
  MoelmDictionary *d = moelm_dictionary_load(path, &error);
  CU_ASSERT_PTR_NULL(d);
  MOELM_ASSERT_ERROR(error, path);
  CU_ASSERT_TRUE(g_error_matches(error, MOELM_ERROR, MOELM_ERROR_IO));
  g_clear_error(&error);
  g_free(path);
  moelm_test_rmtree(dir);
  g_free(dir);
}

static void test_save_failure_does_not_clobber(void)
{
  char *dir = moelm_test_tmpdir();
  /* The destination is a non-empty directory: the rename fails and must leave it alone. */
  char *path = g_build_filename(dir, "dict.txt", NULL);
  CU_ASSERT_EQUAL_FATAL(g_mkdir(path, 0755), 0);
  char *inner = g_build_filename(path, "keep", NULL);
  moelm_test_write_file(inner, "x", 1);
  MoelmDictionary *d = moelm_dictionary_new();
  moelm_dictionary_add_symbol(d, "w", 1, FALSE);
  GError *error = NULL;
  CU_ASSERT_FALSE(moelm_dictionary_save(d, path, &error));
  MOELM_ASSERT_ERROR(error, path);
  g_clear_error(&error);
  CU_ASSERT_TRUE(g_file_test(inner, G_FILE_TEST_IS_REGULAR));
  char *entries = list_dir(dir);
  CU_ASSERT_STRING_EQUAL(entries, "dict.txt"); /* no temporary left behind */
  g_free(entries);

  /* A missing directory is an error naming the path, and creates nothing. */
  char *nowhere = g_build_filename(dir, "no", "dict.txt", NULL);
  CU_ASSERT_FALSE(moelm_dictionary_save(d, nowhere, &error));
  MOELM_ASSERT_ERROR(error, nowhere);
  g_clear_error(&error);

  moelm_dictionary_free(d);
  g_free(nowhere);
  g_free(inner);
  g_free(path);
  moelm_test_rmtree(dir);
  g_free(dir);
}

MOELM_TEST_SUITE(dictionary)
{
  CU_add_test(suite, "specials, add_symbol, index, count", test_specials_add_index_count);
  CU_add_test(suite, "load/save round trip is byte identical", test_load_save_round_trip);
  CU_add_test(suite, "load follows Python's line, rstrip and int() rules", test_load_python_line_rules);
  CU_add_test(suite, "#fairseq:overwrite", test_overwrite_flag);
  CU_add_test(suite, "finalize: count desc, byte-order ties, threshold, padding", test_finalize_order_threshold_padding);
  CU_add_test(suite, "finalize: nwords, overwrite duplicates, padding skips existing", test_finalize_nwords);
  CU_add_test(suite, "update and hash", test_update_and_hash);
  CU_add_test(suite, "load errors name file and line", test_load_errors);
  CU_add_test(suite, "failed save leaves the destination and no temporary", test_save_failure_does_not_clobber);
}
