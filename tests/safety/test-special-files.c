/* A FIFO (or a directory) where a data file or a checkpoint should be: refused at once, not
 * waited on forever in open(). Each run is under `timeout`, so a hang fails the test. */
#include "config.h"

#include <string.h>
#include <sys/stat.h>

#include <glib/gstdio.h>

#include "crafted.h"
#include "eval/mixture-cli-fixture.h"
#include "moelm-test.h"

/* DIR/data: a copy of the fixture's data-bin with `special` made a FIFO. */
static char *data_with_fifo(const char *dir, const char *special)
{
  const MixtureCliFixture *fx = mixture_cli_fixture();
  char *data = g_build_filename(dir, "data", NULL);
  g_mkdir(data, 0755);
  GDir *d = g_dir_open(fx->data, 0, NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(d);
  const char *name;
  while ((name = g_dir_read_name(d)) != NULL) {
    char *from = g_build_filename(fx->data, name, NULL), *to = g_build_filename(data, name, NULL);
    if (strcmp(name, special) == 0) {
      CU_ASSERT_EQUAL_FATAL(mkfifo(to, 0644), 0);
    } else {
      gsize len = 0;
      char *bytes = moelm_test_read_file(from, &len);
      moelm_test_write_file(to, bytes, len);
      g_free(bytes);
    }
    g_free(from);
    g_free(to);
  }
  g_dir_close(d);
  return data;
}

/* moelm ARGS under `timeout 60`: a hang is killed (status 137), not waited for. */
static void check_refused(const char *const *args, const char *needle1, const char *needle2)
{
  GPtrArray *argv = g_ptr_array_new();
  const char *pre[] = {"timeout", "-s", "KILL", "60", NULL};
  for (const char *const *a = pre; *a; a++)
    g_ptr_array_add(argv, (gpointer)*a);
  char *cli = moelm_test_cli_path();
  g_ptr_array_add(argv, cli);
  for (const char *const *a = args; *a; a++)
    g_ptr_array_add(argv, (gpointer)*a);
  g_ptr_array_add(argv, NULL);
  char *err = NULL;
  int status = -1;
  CU_ASSERT_TRUE_FATAL(g_spawn_sync(NULL, (char **)argv->pdata, NULL, G_SPAWN_SEARCH_PATH | G_SPAWN_STDIN_FROM_DEV_NULL,
                                    NULL, NULL, NULL, &err, &status, NULL));
  const int rc = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  const char *needles[] = {needle1, needle2, NULL};
  crafted_check_error(rc, err, 1, needles);
  g_free(err);
  g_free(cli);
  g_ptr_array_free(argv, TRUE);
}

static void test_fifo_data_files(void)
{
  static const char *const specials[] = {"dict.txt", "train.bin", "train.idx"};
  for (gsize i = 0; i < G_N_ELEMENTS(specials); i++) {
    char *tmp = moelm_test_tmpdir();
    char *data = data_with_fifo(tmp, specials[i]);
    char *ck = g_build_filename(tmp, "ck", NULL);
    const char *args[] = {"train", data, "--decoder-layers", "1", "--decoder-embed-dim", "16", "--decoder-ffn-embed-dim",
                          "16", "--decoder-attention-heads", "2", "--tokens-per-sample", "16", "--batch-size", "4",
                          "--max-update", "1", "--threads", "1", "--save-dir", ck, NULL};
    check_refused(args, specials[i], "not a regular file (a FIFO)");
    CU_ASSERT_FALSE(g_file_test(ck, G_FILE_TEST_EXISTS));
    moelm_test_rmtree(tmp);
    g_free(ck);
    g_free(data);
    g_free(tmp);
  }
}

static void test_fifo_checkpoint(void)
{
  const MixtureCliFixture *fx = mixture_cli_fixture();
  char *tmp = moelm_test_tmpdir();
  char *fifo = g_build_filename(tmp, "checkpoint.pt", NULL);
  CU_ASSERT_EQUAL_FATAL(mkfifo(fifo, 0644), 0);
  const char *eval[] = {"eval-lm", fx->data, "--path", fifo, "--threads", "1", NULL};
  check_refused(eval, fifo, "not a regular file (a FIFO)");
  /* a directory in its place */
  const char *dir_eval[] = {"eval-lm", fx->data, "--path", tmp, "--threads", "1", NULL};
  check_refused(dir_eval, tmp, "not a regular file (a directory)");
  /* and as the checkpoint a training run resumes from */
  char *ck = g_build_filename(tmp, "ck", NULL);
  g_mkdir(ck, 0755);
  char *last = g_build_filename(ck, "checkpoint_last.pt", NULL);
  CU_ASSERT_EQUAL_FATAL(mkfifo(last, 0644), 0);
  const char *train[] = {"train", fx->data, "--batch-size", "4", "--tokens-per-sample", "16", "--threads", "1",
                         "--decoder-layers", "1", "--save-dir", ck, NULL};
  check_refused(train, last, "not a regular file (a FIFO)");
  moelm_test_rmtree(tmp);
  g_free(last);
  g_free(ck);
  g_free(fifo);
  g_free(tmp);
}

MOELM_TEST_SUITE(special_files)
{
  CU_add_test(suite, "a FIFO as dict.txt, train.bin or train.idx", test_fifo_data_files);
  CU_add_test(suite, "a FIFO or a directory as the checkpoint", test_fifo_checkpoint);
}
