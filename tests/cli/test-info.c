/* moelm info: the numbers of a good data-bin; a truncated .idx or an id outside the
 * vocabulary fails with one line naming the file. */
#include "config.h"

#include <string.h>

#include <glib/gstdio.h>

#include "cli-helpers.h"
#include "moelm-test.h"

/* A data-bin from two small texts: train 5 lines / 14 tokens, valid 2 lines / 7 tokens. */
static char *make_data_bin(const char *dir)
{
  char *train = cli_write(dir, "train.txt", "b a c a\nc a\nd b\n\ne\n");
  char *valid = cli_write(dir, "valid.txt", "a z <unk> b\nq\n");
  char *dest = cli_path(dir, "data-bin");
  const char *args[] = {"preprocess", "--only-source", "--trainpref", train, "--validpref", valid,
                        "--destdir", dest, NULL};
  CU_ASSERT_EQUAL_FATAL(moelm_test_run_cli(args, NULL, NULL, NULL), 0);
  g_free(train);
  g_free(valid);
  return dest;
}

static void copy_file(const char *from, const char *to, gsize keep)
{
  gsize len = 0;
  char *data = moelm_test_read_file(from, &len);
  CU_ASSERT_PTR_NOT_NULL_FATAL(data);
  moelm_test_write_file(to, data, MIN(len, keep));
  g_free(data);
}

/* A copy of the data-bin's files, with NAME cut to `keep` bytes. */
static char *copy_data_bin(const char *dir, const char *src, const char *copy_name, const char *cut, gsize keep)
{
  char *dst = cli_path(dir, copy_name);
  g_mkdir(dst, 0755);
  GPtrArray *names = cli_list_dir(src);
  for (guint i = 0; i < names->len; i++) {
    const char *name = g_ptr_array_index(names, i);
    char *a = cli_path(src, name), *b = cli_path(dst, name);
    copy_file(a, b, cut && strcmp(name, cut) == 0 ? keep : G_MAXSIZE);
    g_free(a);
    g_free(b);
  }
  g_ptr_array_unref(names);
  return dst;
}

static void test_good(void)
{
  char *dir = moelm_test_tmpdir();
  char *dest = make_data_bin(dir);
  const char *args[] = {"info", dest, NULL};
  char *out = NULL, *err = NULL;
  CU_ASSERT_EQUAL(moelm_test_run_cli(args, NULL, &out, &err), 0);
  CU_ASSERT_STRING_EQUAL(err, "");
  CU_ASSERT_PTR_NOT_NULL(strstr(out, "dict.txt: 16 types (12 words + 4 specials), dtype uint16"));
  CU_ASSERT_PTR_NOT_NULL(strstr(out, "spm.model:  absent"));
  /* split, sequences, tokens, dtype, max id */
  gchar **lines = g_strsplit(out, "\n", -1);
  int seen = 0;
  for (int i = 0; lines[i]; i++) {
    gchar **f = g_strsplit_set(lines[i], " ", -1);
    GPtrArray *fields = g_ptr_array_new();
    for (int k = 0; f[k]; k++)
      if (*f[k])
        g_ptr_array_add(fields, f[k]);
    if (fields->len == 6 && strcmp(g_ptr_array_index(fields, 0), "train") == 0) {
      CU_ASSERT_STRING_EQUAL(g_ptr_array_index(fields, 1), "5");
      CU_ASSERT_STRING_EQUAL(g_ptr_array_index(fields, 2), "14");
      CU_ASSERT_STRING_EQUAL(g_ptr_array_index(fields, 3), "uint16");
      CU_ASSERT_STRING_EQUAL(g_ptr_array_index(fields, 4), "8");
      CU_ASSERT_STRING_EQUAL(g_ptr_array_index(fields, 5), "ok");
      seen |= 1;
    }
    if (fields->len == 6 && strcmp(g_ptr_array_index(fields, 0), "valid") == 0) {
      CU_ASSERT_STRING_EQUAL(g_ptr_array_index(fields, 1), "2");
      CU_ASSERT_STRING_EQUAL(g_ptr_array_index(fields, 2), "7");
      CU_ASSERT_STRING_EQUAL(g_ptr_array_index(fields, 4), "5");
      seen |= 2;
    }
    g_ptr_array_free(fields, TRUE);
    g_strfreev(f);
  }
  g_strfreev(lines);
  CU_ASSERT_EQUAL(seen, 3);
  g_free(out);
  g_free(err);
  g_free(dest);
  moelm_test_rmtree(dir);
  g_free(dir);
}

static void expect_failure(const char *data_bin, const char *file, const char *problem)
{
  const char *args[] = {"info", data_bin, NULL};
  char *out = NULL, *err = NULL;
  CU_ASSERT_EQUAL(moelm_test_run_cli(args, NULL, &out, &err), 1);
  CU_ASSERT_EQUAL(cli_count_lines(err), 1);
  CU_ASSERT_TRUE(g_str_has_prefix(err, "moelm info: error: "));
  char *path = cli_path(data_bin, file);
  if (strstr(err, path) == NULL || strstr(err, problem) == NULL)
    g_printerr("\n  expected %s and '%s' in: %s", path, problem, err);
  CU_ASSERT_PTR_NOT_NULL(strstr(err, path));
  CU_ASSERT_PTR_NOT_NULL(strstr(err, problem));
  CU_ASSERT_STRING_EQUAL(out, "");
  g_free(path);
  g_free(out);
  g_free(err);
}

static void test_bad(void)
{
  char *dir = moelm_test_tmpdir();
  char *dest = make_data_bin(dir);
  /* A .idx cut inside its pointers. */
  char *cut = copy_data_bin(dir, dest, "cut", "train.idx", 60);
  expect_failure(cut, "train.idx", "train.idx");
  /* A dictionary too small for the ids in the data. */
  char *small = copy_data_bin(dir, dest, "small", NULL, 0);
  char *dict = cli_path(small, "dict.txt");
  moelm_test_write_file(dict, "a 3\nb 2\n", 8);
  expect_failure(small, "train", "outside the vocabulary");
  /* Not a data-bin. */
  char *empty = cli_path(dir, "empty");
  g_mkdir(empty, 0755);
  expect_failure(empty, "", "dict.txt");
  g_free(empty);
  g_free(dict);
  g_free(small);
  g_free(cut);
  g_free(dest);
  moelm_test_rmtree(dir);
  g_free(dir);
}

MOELM_TEST_SUITE(cli_info)
{
  CU_add_test(suite, "numbers of a good data-bin", test_good);
  CU_add_test(suite, "truncated .idx, ids outside the vocabulary", test_bad);
}
