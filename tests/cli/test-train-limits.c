/* moelm train's limits on validation and on time: --max-valid-steps and --stop-time-hours,
 * end to end on the shipped data with a tiny model trained on the small valid split and
 * validated on the test split. */
#include "config.h"

#include <math.h>
#include <string.h>

#include "cli-helpers.h"
#include "moelm-test.h"

#define LIMIT_ARGS(data)                                                                                               \
  "train", data, "--arch", "transformer_lm", "--decoder-layers", "1", "--decoder-embed-dim", "16",                     \
      "--decoder-ffn-embed-dim", "32", "--decoder-attention-heads", "2", "--tokens-per-sample", "32", "--batch-size",  \
      "4", "--lr", "0.001", "--train-subset", "valid", "--valid-subset", "test", "--threads", "1", "--log-interval",   \
      "1000", "--no-epoch-checkpoints", "--required-batch-size-multiple", "1"

/* The one valid line of a run that stops after 2 updates (and validates then), with EXTRA
 * validation flags. */
static char *valid_line(const char *data, const char *const *extra)
{
  const char *base[] = {LIMIT_ARGS(data), "--max-update", "2", "--no-save", NULL};
  char *out = NULL, *err = NULL;
  CU_ASSERT_EQUAL_FATAL(moelm_test_run_cli2(base, extra, NULL, &out, &err), 0);
  char **v = cli_log_lines(err, "valid on 'test' subset");
  CU_ASSERT_EQUAL_FATAL(g_strv_length(v), 1);
  char *line = g_strdup(v[0]);
  g_strfreev(v);
  g_free(out);
  g_free(err);
  return line;
}

/* --max-valid-steps N scores the first N batches: 2 batches of 2 blocks give the loss of 1
 * batch of the same 4 blocks (and the same tokens), and differ from the whole split. Were
 * N + 1 batches scored (fairseq's loop), the first would cover 6 blocks and the second 8. */
static void test_max_valid_steps(void)
{
  char *data = moelm_test_srcpath("data-bin/demo");
  const char *two_of_two[] = {"--batch-size-valid", "2", "--max-valid-steps", "2", NULL};
  const char *one_of_four[] = {"--batch-size-valid", "4", "--nval", "1", NULL};
  const char *all[] = {"--batch-size-valid", "4", NULL};
  char *a = valid_line(data, two_of_two), *b = valid_line(data, one_of_four), *c = valid_line(data, all);
  CU_ASSERT_DOUBLE_EQUAL(cli_log_field(a, "bsz"), 2, 1e-9);
  CU_ASSERT_DOUBLE_EQUAL(cli_log_field(b, "bsz"), 4, 1e-9);
  /* the same tokens: wpb over 2 batches is half wpb over 1 */
  CU_ASSERT_DOUBLE_EQUAL(2 * cli_log_field(a, "wpb"), cli_log_field(b, "wpb"), 1e-6);
  CU_ASSERT_DOUBLE_EQUAL(cli_log_field(a, "loss"), cli_log_field(b, "loss"), 1e-9);
  CU_ASSERT_TRUE(fabs(cli_log_field(a, "loss") - cli_log_field(c, "loss")) > 0.01);
  g_free(a);
  g_free(b);
  g_free(c);
  /* 0 would score nothing: an error, as fairseq's 0 (which scores one batch) is surprising */
  char *tmp = moelm_test_tmpdir(), *save = g_build_filename(tmp, "ckpt", NULL);
  const char *zero[] = {LIMIT_ARGS(data), "--save-dir", save, "--max-valid-steps", "0", NULL};
  char *out = NULL, *err = NULL;
  CU_ASSERT_EQUAL(moelm_test_run_cli(zero, NULL, &out, &err), 1);
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "--max-valid-steps must be at least 1, got 0"));
  g_free(out);
  g_free(err);
  moelm_test_rmtree(tmp);
  g_free(tmp);
  g_free(save);
  g_free(data);
}

/* The updates of the last "saved checkpoint ... (epoch E @ N updates)" line (-1: none). */
static gint64 last_saved_updates(const char *err)
{
  char **saved = cli_log_lines(err, "| moelm.checkpoint | saved checkpoint ");
  const guint n = g_strv_length(saved);
  const char *at = n ? strstr(saved[n - 1], " @ ") : NULL;
  const gint64 u = at ? g_ascii_strtoll(at + 3, NULL, 10) : -1;
  g_strfreev(saved);
  return u;
}

#define TIME_ARGS(data, save, hours) LIMIT_ARGS(data), "--save-dir", save, "--max-epoch", "100", "--stop-time-hours", hours

/* --stop-time-hours 0.00001 (36 ms): the run stops after its first update(s), long before
 * --max-epoch, says why, validates and writes checkpoint_last.pt holding the time trained. */
static void test_stop_time_hours(void)
{
  char *tmp = moelm_test_tmpdir(), *data = moelm_test_srcpath("data-bin/demo");
  char *save = g_build_filename(tmp, "ckpt", NULL), *last = g_build_filename(save, "checkpoint_last.pt", NULL);
  const char *args[] = {TIME_ARGS(data, save, "0.00001"), NULL};
  char *out = NULL, *err = NULL;
  CU_ASSERT_EQUAL_FATAL(moelm_test_run_cli(args, NULL, &out, &err), 0);
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "stopping: cumulative training time "));
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "> --stop-time-hours 1e-05"));
  const gint64 u = last_saved_updates(err);
  CU_ASSERT_TRUE(u >= 1 && u < 248); /* 248 updates make one epoch */
  char **v = cli_log_lines(err, "valid on 'test' subset");
  CU_ASSERT_EQUAL(g_strv_length(v), 1);
  CU_ASSERT_DOUBLE_EQUAL(cli_log_field(v[0], "num_updates"), (double)u, 1e-9);
  g_strfreev(v);
  gsize len = 0;
  char *bytes = moelm_test_read_file(last, &len);
  CU_ASSERT_FATAL(bytes != NULL && len > 8);
  /* after safetensors' 8-byte header length, the JSON header with the train_state */
  CU_ASSERT_PTR_NOT_NULL(g_strstr_len(bytes + 8, (gssize)MIN(len - 8, 65536), "previous_training_time"));
  g_free(bytes);
  g_free(out);
  g_free(err);
  moelm_test_rmtree(tmp);
  g_free(tmp);
  g_free(save);
  g_free(last);
  g_free(data);
}

/* The time is cumulative over resumes: a first run stops at about 1.1 s (0.0003 hours) after
 * k updates; the same command resumed has that time behind it, so it stops after one update
 * (k + 1), where a run counting only its own time would train about a second more. */
static void test_stop_time_is_cumulative(void)
{
  char *tmp = moelm_test_tmpdir(), *data = moelm_test_srcpath("data-bin/demo");
  char *save = g_build_filename(tmp, "ckpt", NULL);
  const char *args[] = {TIME_ARGS(data, save, "0.0003"), NULL};
  char *out = NULL, *err = NULL;
  CU_ASSERT_EQUAL_FATAL(moelm_test_run_cli(args, NULL, &out, &err), 0);
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "stopping: cumulative training time "));
  const gint64 k = last_saved_updates(err);
  CU_ASSERT_TRUE_FATAL(k >= 1 && k < 100 * 248);
  g_free(out);
  g_free(err);
  CU_ASSERT_EQUAL_FATAL(moelm_test_run_cli(args, NULL, &out, &err), 0);
  char *loaded = g_strdup_printf("@ %" G_GINT64_FORMAT " updates)", k);
  CU_ASSERT_PTR_NOT_NULL(strstr(err, loaded));
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "stopping: cumulative training time "));
  CU_ASSERT_EQUAL(last_saved_updates(err), k + 1);
  g_free(loaded);
  g_free(out);
  g_free(err);
  moelm_test_rmtree(tmp);
  g_free(tmp);
  g_free(save);
  g_free(data);
}

MOELM_TEST_SUITE(train_limits)
{
  CU_add_test(suite, "--stop-time-hours: stops after the first updates, saving", test_stop_time_hours);
  CU_add_test(suite, "--stop-time-hours: the time adds up over resumes", test_stop_time_is_cumulative);
  CU_add_test(suite, "--max-valid-steps: the loss of the first batches", test_max_valid_steps);
}
