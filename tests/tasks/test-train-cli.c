/* `moelm train` end to end: bad inputs give one clear error line, a non-zero exit, and leave
 * the checkpoint directory exactly as it was. */
#include "config.h"

#include <string.h>

#include <glib/gstdio.h>

#include "moelm-test.h"

/* Two tiny pre-tokenised data-bins with different vocabularies. */
static char *make_data(const char *dir, const char *name, const char *text)
{
  char *train = g_strdup_printf("%s/%s.txt", dir, name);
  GString *big = g_string_new(NULL);
  for (int i = 0; i < 40; i++)
    g_string_append(big, text);
  moelm_test_write_file(train, big->str, big->len);
  char *data = g_strdup_printf("%s/%s", dir, name);
  const char *args[] = {"preprocess", "--only-source", "--trainpref", train, "--validpref", train, "--destdir", data,
                        NULL};
  CU_ASSERT_EQUAL_FATAL(moelm_test_run_cli(args, NULL, NULL, NULL), 0);
  g_string_free(big, TRUE);
  g_free(train);
  return data;
}

static int compare_lines(gconstpointer a, gconstpointer b)
{
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* "name=sha256\n" for every file of a directory, sorted (NULL when it does not exist). */
static char *snapshot(const char *dir)
{
  GDir *d = g_dir_open(dir, 0, NULL);
  if (d == NULL)
    return NULL;
  GPtrArray *lines = g_ptr_array_new_with_free_func(g_free);
  const char *name;
  while ((name = g_dir_read_name(d)) != NULL) {
    char *path = g_build_filename(dir, name, NULL);
    gsize len = 0;
    char *data = moelm_test_read_file(path, &len);
    char *sum = g_compute_checksum_for_data(G_CHECKSUM_SHA256, (const guchar *)data, len);
    g_ptr_array_add(lines, g_strdup_printf("%s=%s", name, sum));
    g_free(sum);
    g_free(data);
    g_free(path);
  }
  g_dir_close(d);
  g_ptr_array_sort(lines, compare_lines);
  GString *out = g_string_new(NULL);
  for (guint i = 0; i < lines->len; i++)
    g_string_append_printf(out, "%s\n", (char *)g_ptr_array_index(lines, i));
  g_ptr_array_unref(lines);
  return g_string_free(out, FALSE);
}

/* The one line of stderr that is the error, checked to mention every needle. */
static void assert_one_error_line(const char *err, const char *needle1, const char *needle2)
{
  int n = 0;
  gchar **lines = g_strsplit(err, "\n", -1);
  for (gchar **l = lines; *l; l++)
    if (strstr(*l, "moelm train: error:")) {
      n++;
      if (!strstr(*l, needle1) || (needle2 && !strstr(*l, needle2)))
        g_printerr("\n  error line: %s (expected '%s'%s%s)", *l, needle1, needle2 ? " and " : "", needle2 ? needle2 : "");
      CU_ASSERT_PTR_NOT_NULL(strstr(*l, needle1));
      if (needle2)
        CU_ASSERT_PTR_NOT_NULL(strstr(*l, needle2));
    }
  g_strfreev(lines);
  CU_ASSERT_EQUAL(n, 1);
}

static int train(const char *data, const char *save_dir, const char *extra1, const char *extra2, char **err)
{
  const char *args[] = {"train", data, "--arch", "transformer_lm", "--decoder-layers", "1", "--decoder-embed-dim", "16",
                        "--decoder-ffn-embed-dim", "16", "--decoder-attention-heads", "2", "--tokens-per-sample", "16",
                        "--batch-size", "4", "--lr", "0.001", "--max-update", "2", "--save-dir", save_dir,
                        "--threads", "1", extra1, extra2, NULL};
  return moelm_test_run_cli(args, NULL, NULL, err);
}

static void test_train_errors_leave_disk_unchanged(void)
{
  char *tmp = moelm_test_tmpdir();
  char *a = make_data(tmp, "a", "the cat sat on the mat\nthe dog ate the bone\n\n");
  char *b = make_data(tmp, "b", "a completely different vocabulary here\nwith other words entirely\n\n");
  char *ck = g_build_filename(tmp, "ck", NULL);
  char *err = NULL;

  /* an unknown flag: exit 2, nothing created */
  CU_ASSERT_EQUAL(train(a, ck, "--bogus-flag", "1", &err), 2);
  assert_one_error_line(err, "--bogus-flag", NULL);
  CU_ASSERT_FALSE(g_file_test(ck, G_FILE_TEST_EXISTS));
  g_free(err);

  /* a missing validation split: names the file, nothing created */
  CU_ASSERT_EQUAL(train(a, ck, "--valid-subset", "valid7", &err), 1);
  assert_one_error_line(err, "valid7.idx", NULL);
  CU_ASSERT_FALSE(g_file_test(ck, G_FILE_TEST_EXISTS));
  g_free(err);

  /* a good run leaves checkpoint_last.pt */
  CU_ASSERT_EQUAL_FATAL(train(a, ck, "--log-interval", "1", &err), 0);
  g_free(err);
  char *last = g_build_filename(ck, "checkpoint_last.pt", NULL);
  CU_ASSERT_TRUE_FATAL(g_file_test(last, G_FILE_TEST_EXISTS));
  char *before = snapshot(ck);

  /* the same checkpoint directory with another data-bin: a vocabulary mismatch */
  CU_ASSERT_EQUAL(train(b, ck, "--max-epoch", "100", &err), 1);
  assert_one_error_line(err, "checkpoint_last.pt", "vocabulary");
  char *after = snapshot(ck);
  CU_ASSERT_STRING_EQUAL(before, after);
  g_free(after);
  g_free(err);

  /* a truncated checkpoint_last.pt: names the file, changes nothing */
  gsize len = 0;
  char *bytes = moelm_test_read_file(last, &len);
  moelm_test_write_file(last, bytes, len / 2);
  g_free(before);
  before = snapshot(ck);
  CU_ASSERT_EQUAL(train(a, ck, "--max-update", "4", &err), 1);
  assert_one_error_line(err, "checkpoint_last.pt", NULL);
  after = snapshot(ck);
  CU_ASSERT_STRING_EQUAL(before, after);
  g_free(after);
  g_free(err);

  /* a corrupt header (garbage in the JSON) */
  memcpy(bytes + 8, "{{{{", 4);
  moelm_test_write_file(last, bytes, len);
  g_free(before);
  before = snapshot(ck);
  CU_ASSERT_EQUAL(train(a, ck, "--max-update", "4", &err), 1);
  assert_one_error_line(err, "checkpoint_last.pt", NULL);
  after = snapshot(ck);
  CU_ASSERT_STRING_EQUAL(before, after);
  g_free(after);
  g_free(err);

  /* an explicit --restore-file that does not exist */
  CU_ASSERT_EQUAL(train(a, ck, "--restore-file", "nope.pt", &err), 1);
  assert_one_error_line(err, "nope.pt", NULL);
  g_free(err);

  /* no data directory at all */
  char *missing = g_build_filename(tmp, "missing", NULL);
  CU_ASSERT_EQUAL(train(missing, ck, "--seed", "2", &err), 1);
  assert_one_error_line(err, "missing", NULL);
  g_free(err);

  g_free(missing);
  g_free(bytes);
  g_free(before);
  g_free(last);
  g_free(ck);
  g_free(a);
  g_free(b);
  moelm_test_rmtree(tmp);
  g_free(tmp);
}

MOELM_TEST_SUITE(train_cli)
{
  CU_add_test(suite, "bad inputs: one error line, non-zero exit, disk unchanged", test_train_errors_leave_disk_unchanged);
}
