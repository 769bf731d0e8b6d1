/* Progress and log output as a user watching a long run sees it: progress lines with rate and
 * ETA against --max-update (training, validation, eval-lm), --log-format none and tqdm,
 * --log-file, and eval-lm's stdout arriving line by line through a pipe. */
#include "config.h"

#include <poll.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "moelm-test.h"
#include "moelm/timer.h"

/* A tiny model trained on the shipped data-bin with `extra` options (NULL-terminated); the
 * CLI's stderr in *err. Progress lines on (printed from the first update) when `progress`. */
static int train(const char *save, gboolean progress, const char *const *extra, char **err)
{
  char *data = moelm_test_srcpath("data-bin/demo");
  GPtrArray *a = g_ptr_array_new();
  const char *base[] = {"train", data, "--arch", "transformer_lm", "--decoder-layers", "1", "--decoder-embed-dim", "16",
                        "--decoder-ffn-embed-dim", "16", "--decoder-attention-heads", "2", "--tokens-per-sample", "8",
                        "--batch-size", "2", "--max-update", "6", "--log-interval", "2",
                        "--validate-interval-updates", "3", "--save-dir", save, "--threads", "1",
                        "--no-save-optimizer-state", NULL};
  for (const char *const *s = base; *s; s++)
    g_ptr_array_add(a, (gpointer)*s);
  for (const char *const *s = extra; s && *s; s++)
    g_ptr_array_add(a, (gpointer)*s);
  g_ptr_array_add(a, NULL);
  if (progress) {
    g_unsetenv("MOELM_NO_PROGRESS");
    g_setenv("MOELM_PROGRESS_QUIET_S", "0", TRUE);
  }
  const int rc = moelm_test_run_cli((const char *const *)a->pdata, NULL, NULL, err);
  g_setenv("MOELM_NO_PROGRESS", "1", TRUE);
  g_unsetenv("MOELM_PROGRESS_QUIET_S");
  if (rc != 0)
    g_printerr("\n  train: %s\n", *err);
  g_ptr_array_free(a, TRUE);
  g_free(data);
  return rc;
}

static int count_of(const char *text, const char *needle)
{
  int n = 0;
  for (const char *p = text; (p = strstr(p, needle)) != NULL; p += strlen(needle))
    n++;
  return n;
}

static void test_train_progress(void)
{
  char *tmp = moelm_test_tmpdir();
  char *save = g_build_filename(tmp, "ck", NULL);
  char *err = NULL;
  CU_ASSERT_EQUAL_FATAL(train(save, TRUE, NULL, &err), 0);
  /* against --max-update, with rate and ETA; validation has its own line */
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "moelm train: training: 1/6 updates (17%), "));
  CU_ASSERT_PTR_NOT_NULL(strstr(err, " updates/s, ETA "));
  CU_ASSERT_PTR_NOT_NULL(strstr(err, ", epoch 1, loss="));
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "moelm train: valid on 'valid' subset: 1/"));
  CU_ASSERT_PTR_NOT_NULL(strstr(err, " batches/s, ETA "));
  CU_ASSERT_EQUAL(count_of(err, "| INFO | train_inner |"), 3);
  g_free(err);

  /* --no-progress-bar: none of it */
  moelm_test_rmtree(save);
  const char *off[] = {"--no-progress-bar", NULL};
  CU_ASSERT_EQUAL_FATAL(train(save, TRUE, off, &err), 0);
  CU_ASSERT_PTR_NULL(strstr(err, "moelm train: "));
  CU_ASSERT_EQUAL(count_of(err, "| INFO | train_inner |"), 3);
  g_free(err);
  moelm_test_rmtree(tmp);
  g_free(save);
  g_free(tmp);
}

static void test_log_formats(void)
{
  char *tmp = moelm_test_tmpdir();
  char *save = g_build_filename(tmp, "ck", NULL);
  char *err = NULL;
  /* none: no statistics lines and no progress, the other log lines as always */
  const char *none[] = {"--log-format", "none", NULL};
  CU_ASSERT_EQUAL_FATAL(train(save, TRUE, none, &err), 0);
  CU_ASSERT_PTR_NULL(strstr(err, "| train_inner |"));
  CU_ASSERT_PTR_NULL(strstr(err, "| train |"));
  CU_ASSERT_PTR_NULL(strstr(err, "| valid |"));
  CU_ASSERT_PTR_NULL(strstr(err, "moelm train: "));
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "| moelm.train | done training in "));
  g_free(err);

  /* tqdm off a terminal is simple, as fairseq falls back */
  moelm_test_rmtree(save);
  const char *tqdm[] = {"--log-format", "tqdm", NULL};
  CU_ASSERT_EQUAL_FATAL(train(save, FALSE, tqdm, &err), 0);
  CU_ASSERT_EQUAL(count_of(err, "| INFO | train_inner |"), 3);
  CU_ASSERT_EQUAL(count_of(err, "| INFO | train |"), 1);
  CU_ASSERT_EQUAL(count_of(err, "| INFO | valid |"), 2);
  g_free(err);

  /* --log-file: every log line also lands in the file, appended */
  moelm_test_rmtree(save);
  char *log = g_build_filename(tmp, "train.log", NULL);
  moelm_test_write_file(log, "an earlier line\n", 16);
  const char *file[] = {"--log-file", log, NULL};
  CU_ASSERT_EQUAL_FATAL(train(save, FALSE, file, &err), 0);
  gsize len = 0;
  char *logged = moelm_test_read_file(log, &len);
  CU_ASSERT_PTR_NOT_NULL_FATAL(logged);
  CU_ASSERT_TRUE(g_str_has_prefix(logged, "an earlier line\n"));
  CU_ASSERT_STRING_EQUAL(logged + 16, err);
  CU_ASSERT_EQUAL(count_of(logged, "| INFO | train_inner |"), 3);
  g_free(logged);
  g_free(err);

  /* a log file that cannot be opened: one line naming it, nothing trained */
  moelm_test_rmtree(save);
  char *bad = g_build_filename(tmp, "no", "such", "dir.log", NULL);
  const char *bad_args[] = {"train", "data-bin/none", "--log-file", bad, "--max-tokens", "64", NULL};
  CU_ASSERT_EQUAL(moelm_test_run_cli(bad_args, NULL, NULL, &err), 1);
  char *want = g_strdup_printf("moelm train: error: --log-file %s: No such file or directory\n", bad);
  CU_ASSERT_STRING_EQUAL(err, want);
  g_free(want);
  g_free(err);
  g_free(bad);
  g_free(log);
  moelm_test_rmtree(tmp);
  g_free(save);
  g_free(tmp);
}

/* eval-lm through a pipe: its first lines arrive while it is still scoring (a block-buffered
 * stdout would deliver everything at exit). The run scores 31,740 one-token blocks, seconds
 * of work after the first line; the test asks for 0.3 s between that line and the end. */
static void test_eval_lm_pipe(void)
{
  char *tmp = moelm_test_tmpdir();
  char *save = g_build_filename(tmp, "ck", NULL);
  char *err = NULL;
  CU_ASSERT_EQUAL_FATAL(train(save, FALSE, NULL, &err), 0);
  g_free(err);
  char *ckpt = g_build_filename(save, "checkpoint_last.pt", NULL);
  char *data = moelm_test_srcpath("data-bin/demo");
  char *cli = moelm_test_cli_path();
  char *argv[] = {cli, "eval-lm", data, "--path", ckpt, "--gen-subset", "valid", "--tokens-per-sample", "2",
                  "--context-window", "1", "--batch-size", "1", "--threads", "1", NULL};
  GPid pid;
  int out_fd = -1;
  GError *error = NULL;
  CU_ASSERT_TRUE_FATAL(g_spawn_async_with_pipes(NULL, argv, NULL, G_SPAWN_DO_NOT_REAP_CHILD | G_SPAWN_STDERR_TO_DEV_NULL,
                                                NULL, NULL, &pid, NULL, &out_fd, NULL, &error));
  GString *got = g_string_new(NULL);
  double first_line = -1, eof = -1;
  char buf[4096];
  for (;;) {
    struct pollfd pfd = {.fd = out_fd, .events = POLLIN};
    if (poll(&pfd, 1, 120000) <= 0)
      break;
    const ssize_t n = read(out_fd, buf, sizeof buf);
    if (n <= 0) {
      eof = moelm_time_now();
      break;
    }
    g_string_append_len(got, buf, n);
    if (first_line < 0 && strchr(got->str, '\n'))
      first_line = moelm_time_now();
  }
  close(out_fd);
  int status = 0;
  waitpid(pid, &status, 0);
  g_spawn_close_pid(pid);
  CU_ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  CU_ASSERT_PTR_NOT_NULL(strstr(got->str, "| fairseq_cli.eval_lm | Loss (base 2): "));
  CU_ASSERT_TRUE(first_line > 0 && eof > 0);
  if (eof - first_line < 0.3)
    g_printerr("\n  the first line came %.3f s before the end\n", eof - first_line);
  CU_ASSERT_TRUE(eof - first_line >= 0.3);
  g_string_free(got, TRUE);
  g_free(cli);
  g_free(data);
  g_free(ckpt);
  moelm_test_rmtree(tmp);
  g_free(save);
  g_free(tmp);
}

static void test_eval_lm_progress(void)
{
  char *tmp = moelm_test_tmpdir();
  char *save = g_build_filename(tmp, "ck", NULL);
  char *err = NULL;
  CU_ASSERT_EQUAL_FATAL(train(save, FALSE, NULL, &err), 0);
  g_free(err);
  char *ckpt = g_build_filename(save, "checkpoint_last.pt", NULL);
  char *data = moelm_test_srcpath("data-bin/demo");
  const char *args[] = {"eval-lm", data, "--path", ckpt, "--gen-subset", "valid", "--tokens-per-sample", "8",
                        "--batch-size", "4", "--threads", "1", NULL};
  g_unsetenv("MOELM_NO_PROGRESS");
  g_setenv("MOELM_PROGRESS_QUIET_S", "0", TRUE);
  char *out = NULL;
  CU_ASSERT_EQUAL(moelm_test_run_cli(args, NULL, &out, &err), 0);
  g_setenv("MOELM_NO_PROGRESS", "1", TRUE);
  g_unsetenv("MOELM_PROGRESS_QUIET_S");
  char *want = g_strdup_printf("moelm eval-lm: %s on 'valid': 1/3968 blocks (0%%), ", ckpt);
  CU_ASSERT_PTR_NOT_NULL(strstr(err, want));
  CU_ASSERT_PTR_NOT_NULL(strstr(err, " blocks/s, ETA "));
  CU_ASSERT_PTR_NULL(strstr(out, "blocks/s")); /* stdout keeps fairseq's lines only */
  g_free(want);
  g_free(out);
  g_free(err);
  g_free(data);
  g_free(ckpt);
  moelm_test_rmtree(tmp);
  g_free(save);
  g_free(tmp);
}

/* generate over a file of prompts, its hypotheses to a pipe: how far the file is */
static void test_generate_progress(void)
{
  char *tmp = moelm_test_tmpdir();
  char *save = g_build_filename(tmp, "ck", NULL);
  char *err = NULL;
  CU_ASSERT_EQUAL_FATAL(train(save, FALSE, NULL, &err), 0);
  g_free(err);
  char *ckpt = g_build_filename(save, "checkpoint_last.pt", NULL);
  char *data = moelm_test_srcpath("data-bin/demo");
  char *prompts = g_build_filename(tmp, "prompts.txt", NULL);
  moelm_test_write_file(prompts, "the\nof the\nthe\n", 15);
  const char *args[] = {"generate", data, "--path", ckpt, "--input", prompts, "--max-len-b", "2", "--threads", "1",
                        NULL};
  g_unsetenv("MOELM_NO_PROGRESS");
  g_setenv("MOELM_PROGRESS_QUIET_S", "0", TRUE);
  char *out = NULL;
  CU_ASSERT_EQUAL(moelm_test_run_cli(args, NULL, &out, &err), 0);
  g_setenv("MOELM_NO_PROGRESS", "1", TRUE);
  g_unsetenv("MOELM_PROGRESS_QUIET_S");
  char *want = g_strdup_printf("moelm generate: prompts of %s: ", prompts);
  CU_ASSERT_PTR_NOT_NULL(strstr(err, want));
  CU_ASSERT_PTR_NOT_NULL(strstr(err, " KB/s, ETA "));
  CU_ASSERT_PTR_NOT_NULL(strstr(err, ", 1 prompts"));
  CU_ASSERT_EQUAL(count_of(out, "\nH-"), 3); /* one hypothesis per prompt */
  CU_ASSERT_PTR_NULL(strstr(out, "KB/s"));
  g_free(want);
  g_free(out);
  g_free(err);
  g_free(prompts);
  g_free(data);
  g_free(ckpt);
  moelm_test_rmtree(tmp);
  g_free(save);
  g_free(tmp);
}

MOELM_TEST_SUITE(progress)
{
  CU_add_test(suite, "training: rate and ETA against --max-update, validation, --no-progress-bar", test_train_progress);
  CU_add_test(suite, "--log-format none and tqdm, --log-file", test_log_formats);
  CU_add_test(suite, "eval-lm: a progress line over the blocks", test_eval_lm_progress);
  CU_add_test(suite, "eval-lm's stdout arrives line by line through a pipe", test_eval_lm_pipe);
  CU_add_test(suite, "generate over a file: how far the file is", test_generate_progress);
}
