/* moelm preprocess on bad input: a non-zero exit, exactly one line on stderr that names the
 * file and the problem, and nothing left in DESTDIR (no dict.txt, no .bin/.idx, no
 * temporaries). */
#include "config.h"

#include <string.h>

#include <glib/gstdio.h>

#include "cli-helpers.h"
#include "moelm-test.h"

typedef struct {
  const char *what;
  const char *files[3][2]; /* name, content: written into the work dir */
  const char *args[10];    /* after "preprocess --only-source"; "@X" = work dir path of X */
  int status;
  const char *needles[2];  /* in the error line; "@X" = work dir path of X */
  gboolean destdir_exists; /* make DESTDIR (empty) before the run */
} BadCase;

static char *expand(const char *dir, const char *s) { return s[0] == '@' ? cli_path(dir, s + 1) : g_strdup(s); }

static GString *big_text_with_bad_line(int bad_line)
{
  GString *s = g_string_new(NULL);
  for (int i = 1; i <= 400; i++) {
    if (i == bad_line)
      g_string_append(s, "here comes \xc3\x28 a broken sequence\n");
    else
      g_string_append_printf(s, "line %d with some words in it\n", i);
  }
  return s;
}

static const BadCase cases[] = {
    {"missing train file", {{NULL, NULL}}, {"--trainpref", "@nope.txt"}, 1, {"@nope.txt", "No such file"}, TRUE},
    {"missing valid file",
     {{"train.txt", "a b\n"}},
     {"--trainpref", "@train.txt", "--validpref", "@missing-valid.txt"},
     1,
     {"@missing-valid.txt", "No such file"},
     FALSE},
    {"empty train", {{"empty.txt", ""}}, {"--trainpref", "@empty.txt"}, 1, {"@empty.txt", "empty input"}, TRUE},
    {"invalid UTF-8",
     {{"train.txt", "a b\n"}, {"bad.txt", "fine\nbad \xff byte\n"}},
     {"--trainpref", "@train.txt", "--validpref", "@bad.txt"},
     1,
     {"bad.txt:2:", "invalid UTF-8"},
     TRUE},
    {"invalid UTF-8, 3 workers", {{NULL, NULL}}, {"--trainpref", "@big.txt", "--workers", "3"}, 1,
     {"big.txt:287:", "invalid UTF-8"}, TRUE},
    {"NUL byte", {{NULL, NULL}}, {"--trainpref", "@nul.txt"}, 1, {"nul.txt:2:", "NUL byte"}, TRUE},
    {"malformed --srcdict",
     {{"train.txt", "a b\n"}, {"sd.txt", "a 1\nnospace\n"}},
     {"--trainpref", "@train.txt", "--srcdict", "@sd.txt"},
     1,
     {"sd.txt:2:", "expected"},
     TRUE},
    {"duplicate word in --srcdict",
     {{"train.txt", "a b\n"}, {"dup.txt", "a 1\nb 2\na 3\n"}},
     {"--trainpref", "@train.txt", "--srcdict", "@dup.txt"},
     1,
     {"dup.txt:3", "duplicate"},
     TRUE},
    {"unknown flag", {{"train.txt", "a b\n"}}, {"--trainpref", "@train.txt", "--frobnicate", "3"}, 2,
     {"--frobnicate", "unrecognized"}, TRUE},
    {"--dataset-impl lazy", {{"train.txt", "a b\n"}}, {"--trainpref", "@train.txt", "--dataset-impl", "lazy"}, 2,
     {"--dataset-impl lazy", "not supported"}, TRUE},
};

static void run_case(const BadCase *c)
{
  char *dir = moelm_test_tmpdir();
  char *dest = cli_path(dir, "out");
  if (c->destdir_exists)
    g_mkdir(dest, 0755);
  for (int i = 0; i < 3 && c->files[i][0]; i++)
    g_free(cli_write(dir, c->files[i][0], c->files[i][1]));
  GString *big = big_text_with_bad_line(287);
  char *big_path = cli_path(dir, "big.txt");
  moelm_test_write_file(big_path, big->str, big->len);
  g_string_free(big, TRUE);
  g_free(big_path);
  char *nul_path = cli_path(dir, "nul.txt");
  moelm_test_write_file(nul_path, "ok\nx\0y\n", 7);
  g_free(nul_path);

  GPtrArray *args = g_ptr_array_new_with_free_func(g_free);
  g_ptr_array_add(args, g_strdup("preprocess"));
  g_ptr_array_add(args, g_strdup("--only-source"));
  g_ptr_array_add(args, g_strdup("--destdir"));
  g_ptr_array_add(args, g_strdup(dest));
  for (int i = 0; c->args[i]; i++)
    g_ptr_array_add(args, expand(dir, c->args[i]));
  g_ptr_array_add(args, NULL);
  char *err = NULL;
  int rc = moelm_test_run_cli((const char *const *)args->pdata, NULL, NULL, &err);
  if (rc != c->status || cli_count_lines(err) != 1)
    g_printerr("\n  case '%s': status %d, stderr:\n%s", c->what, rc, err);
  CU_ASSERT_EQUAL(rc, c->status);
  CU_ASSERT_EQUAL(cli_count_lines(err), 1);
  CU_ASSERT_TRUE(g_str_has_prefix(err, "moelm preprocess: error: "));
  for (int i = 0; i < 2; i++) {
    char *needle = expand(dir, c->needles[i]);
    if (strstr(err, needle) == NULL)
      g_printerr("\n  case '%s': \"%s\" not in: %s", c->what, needle, err);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, needle));
    g_free(needle);
  }
  /* Nothing written: DESTDIR as it was (empty), or not there at all. */
  GPtrArray *left = cli_list_dir(dest);
  if (c->destdir_exists) {
    CU_ASSERT_PTR_NOT_NULL(left);
    if (left && left->len > 0)
      g_printerr("\n  case '%s': left %s in DESTDIR\n", c->what, (char *)g_ptr_array_index(left, 0));
    CU_ASSERT_TRUE(left && left->len == 0);
  } else {
    CU_ASSERT_PTR_NULL(left);
  }
  if (left)
    g_ptr_array_unref(left);
  g_ptr_array_unref(args);
  g_free(err);
  g_free(dest);
  moelm_test_rmtree(dir);
  g_free(dir);
}

static void test_bad_inputs(void)
{
  /* Small steps: the 3-worker case finds its bad line among many steps taken in any order. */
  g_setenv("MOELM_PREPROCESS_STEP", "1000", TRUE);
  for (gsize i = 0; i < G_N_ELEMENTS(cases); i++)
    run_case(&cases[i]);
  g_unsetenv("MOELM_PREPROCESS_STEP");
}

/* fairseq refuses to overwrite dict.txt without --srcdict; the old one stays untouched. */
static void test_existing_dictionary(void)
{
  char *dir = moelm_test_tmpdir();
  char *dest = cli_path(dir, "out");
  g_mkdir(dest, 0755);
  char *train = cli_write(dir, "train.txt", "a b\n");
  char *dict = cli_write(dest, "dict.txt", "old 1\n");
  const char *args[] = {"preprocess", "--only-source", "--trainpref", train, "--destdir", dest, NULL};
  char *err = NULL;
  CU_ASSERT_EQUAL(moelm_test_run_cli(args, NULL, NULL, &err), 1);
  CU_ASSERT_EQUAL(cli_count_lines(err), 1);
  CU_ASSERT_PTR_NOT_NULL(strstr(err, dict));
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "already exists"));
  CU_ASSERT_TRUE(cli_file_equals(dict, "old 1\n", 6));
  GPtrArray *left = cli_list_dir(dest);
  CU_ASSERT_EQUAL(left->len, 1);
  g_ptr_array_unref(left);
  g_free(err);
  g_free(train);
  g_free(dict);
  g_free(dest);
  moelm_test_rmtree(dir);
  g_free(dir);
}

/* A failure after the work started (here: the final rename of train.bin, blocked by a
 * directory of that name) still removes every temporary and writes no dict.txt. */
static void test_failure_while_committing(void)
{
  char *dir = moelm_test_tmpdir();
  char *dest = cli_path(dir, "out");
  char *blocker = cli_path(dest, "train.bin");
  g_mkdir_with_parents(blocker, 0755);
  char *inside = cli_write(blocker, "keep", "x");
  char *train = cli_write(dir, "train.txt", "a b\nc\n");
  const char *args[] = {"preprocess", "--only-source", "--trainpref", train, "--destdir", dest, "--workers", "2",
                        NULL};
  char *err = NULL;
  CU_ASSERT_EQUAL(moelm_test_run_cli(args, NULL, NULL, &err), 1);
  const char *last = g_strrstr(err, "moelm preprocess: error: ");
  CU_ASSERT_PTR_NOT_NULL(last);
  CU_ASSERT_PTR_NOT_NULL(last ? strstr(last, "train.bin") : NULL);
  GPtrArray *left = cli_list_dir(dest);
  CU_ASSERT_EQUAL(left->len, 1);
  CU_ASSERT_STRING_EQUAL(g_ptr_array_index(left, 0), "train.bin");
  g_ptr_array_unref(left);
  g_free(err);
  g_free(train);
  g_free(inside);
  g_free(blocker);
  g_free(dest);
  moelm_test_rmtree(dir);
  g_free(dir);
}

MOELM_TEST_SUITE(cli_preprocess_errors)
{
  CU_add_test(suite, "bad inputs: one line, nothing written", test_bad_inputs);
  CU_add_test(suite, "existing dict.txt is not overwritten", test_existing_dictionary);
  CU_add_test(suite, "failure while committing leaves no temporaries", test_failure_while_committing);
}
