/* moelm train's choice of the best validation (--best-checkpoint-metric,
 * --maximize-best-checkpoint-metric), end to end on the shipped data: a tiny model trained
 * on the small valid split (an epoch is a second) and validated on the test split, whose
 * loss falls every epoch, so "best" with --maximize-best-checkpoint-metric is epoch 1's. */
#include "config.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli-helpers.h"
#include "moelm-test.h"

/* The run's fixed flags up to --save-dir SAVE; the caller's extras follow. */
#define BEST_ARGS(data, save)                                                                                          \
  "train", data, "--arch", "transformer_lm", "--decoder-layers", "1", "--decoder-embed-dim", "16",                     \
      "--decoder-ffn-embed-dim", "32", "--decoder-attention-heads", "2", "--tokens-per-sample", "32", "--batch-size",  \
      "4", "--lr", "0.001", "--train-subset", "valid", "--valid-subset", "test", "--threads", "1", "--log-interval",   \
      "1000", "--no-epoch-checkpoints", "--save-dir", save

/* The test split's valid lines (g_strfreev). */
static char **valid_lines(const char *err)
{
  return cli_log_lines(err, "| valid | epoch ");
}

/* Maximizing ppl keeps epoch 1 as the best through a resume: the valid line's best_ppl stays
 * epoch 1's ppl, checkpoint_best.pt is written once, and --patience 2 counts epochs 2 and 3
 * (the second across the resume) as bad and stops after epoch 3. Minimizing (the default)
 * would find a new best every epoch and run to --max-epoch. */
static void test_maximize_ppl_survives_resume(void)
{
  char *tmp = moelm_test_tmpdir();
  char *data = moelm_test_srcpath("data-bin/demo");
  char *save = g_build_filename(tmp, "ckpt", NULL);
  const char *first[] = {BEST_ARGS(data, save), "--best-checkpoint-metric", "ppl", "--maximize-best-checkpoint-metric",
                         "--patience", "2", "--max-epoch", "2", NULL};
  char *out = NULL, *err = NULL;
  CU_ASSERT_EQUAL_FATAL(moelm_test_run_cli(first, NULL, &out, &err), 0);
  CU_ASSERT_PTR_NULL(strstr(err, "no effect in moelm")); /* no longer an ignored option */
  char **v = valid_lines(err);
  CU_ASSERT_EQUAL_FATAL(g_strv_length(v), 2);
  const double ppl1 = cli_log_field(v[0], "ppl");
  CU_ASSERT_TRUE(cli_log_field(v[1], "ppl") < ppl1); /* the data this test relies on: ppl falls */
  CU_ASSERT_DOUBLE_EQUAL(cli_log_field(v[0], "best_ppl"), ppl1, 1e-9);
  CU_ASSERT_DOUBLE_EQUAL(cli_log_field(v[1], "best_ppl"), ppl1, 1e-9);
  CU_ASSERT_TRUE(isnan(cli_log_field(v[0], "best_loss")));
  CU_ASSERT_EQUAL(cli_count(err, "/checkpoint_best.pt (epoch 1 @"), 1);
  CU_ASSERT_EQUAL(cli_count(err, "checkpoint_best.pt"), 1);
  g_strfreev(v);
  g_free(out);
  g_free(err);

  const char *resume[] = {BEST_ARGS(data, save), "--best-checkpoint-metric", "ppl", "--maximize-best-checkpoint-metric",
                          "--patience", "2", "--max-epoch", "6", NULL};
  CU_ASSERT_EQUAL_FATAL(moelm_test_run_cli(resume, NULL, &out, &err), 0);
  v = valid_lines(err);
  CU_ASSERT_EQUAL_FATAL(g_strv_length(v), 1); /* epoch 3, then patience ran out */
  CU_ASSERT_PTR_NOT_NULL(strstr(v[0], "| valid | epoch 003 |"));
  CU_ASSERT_DOUBLE_EQUAL(cli_log_field(v[0], "best_ppl"), ppl1, 1e-9);
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "early stop since valid performance hasn't improved for last 2 runs"));
  CU_ASSERT_EQUAL(cli_count(err, "checkpoint_best.pt"), 0);
  g_strfreev(v);
  g_free(out);
  g_free(err);

  /* another metric than the checkpoint's: its best does not carry over */
  const char *other[] = {BEST_ARGS(data, save), "--max-epoch", "4", NULL};
  CU_ASSERT_EQUAL_FATAL(moelm_test_run_cli(other, NULL, &out, &err), 0);
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "the checkpoint's best is of ppl (maximized), this run's of loss"));
  v = valid_lines(err);
  CU_ASSERT_EQUAL_FATAL(g_strv_length(v), 1);
  CU_ASSERT_DOUBLE_EQUAL(cli_log_field(v[0], "best_loss"), cli_log_field(v[0], "loss"), 1e-9);
  CU_ASSERT_EQUAL(cli_count(err, "/checkpoint_best.pt (epoch 4 @"), 1);
  g_strfreev(v);
  g_free(out);
  g_free(err);
  moelm_test_rmtree(tmp);
  g_free(tmp);
  g_free(save);
  g_free(data);
}

static void test_unknown_metric(void)
{
  char *tmp = moelm_test_tmpdir();
  char *data = moelm_test_srcpath("data-bin/demo");
  char *save = g_build_filename(tmp, "ckpt", NULL);
  const char *args[] = {BEST_ARGS(data, save), "--best-checkpoint-metric", "bleu", NULL};
  char *out = NULL, *err = NULL;
  CU_ASSERT_EQUAL(moelm_test_run_cli(args, NULL, &out, &err), 1);
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "--best-checkpoint-metric bleu: not a field of the valid line"));
  CU_ASSERT_FALSE(g_file_test(save, G_FILE_TEST_EXISTS));
  g_free(out);
  g_free(err);
  moelm_test_rmtree(tmp);
  g_free(tmp);
  g_free(save);
  g_free(data);
}

/* The checkpoint.best_loss_* names in DIR, sorted (g_ptr_array_unref). */
static GPtrArray *kept_files(const char *dir)
{
  GPtrArray *all = cli_list_dir(dir), *out = g_ptr_array_new_with_free_func(g_free);
  for (guint i = 0; all && i < all->len; i++)
    if (g_str_has_prefix(g_ptr_array_index(all, i), "checkpoint.best_"))
      g_ptr_array_add(out, g_strdup(g_ptr_array_index(all, i)));
  if (all)
    g_ptr_array_unref(all);
  return out;
}

/* Whether NAME is checkpoint.best_loss_{value:.3f}{one digit}.pt. */
static gboolean names_value(const char *name, double value)
{
  char num[G_ASCII_DTOSTR_BUF_SIZE];
  g_ascii_formatd(num, sizeof num, "%.3f", value);
  char *prefix = g_strdup_printf("checkpoint.best_loss_%s", num);
  const gboolean ok = g_str_has_prefix(name, prefix) && g_ascii_isdigit(name[strlen(prefix)]) &&
                      strcmp(name + strlen(prefix) + 1, ".pt") == 0;
  g_free(prefix);
  return ok;
}

/* --keep-best-checkpoints 2 over 4 epochs whose loss falls: the files of epochs 3 and 4 are
 * left (1 and 2 were written, then removed), named after the valid lines' losses, and the
 * newest is the same checkpoint as checkpoint_last.pt. Maximizing the loss instead keeps
 * epochs 1 and 2 and never writes the later, worse ones. */
static void test_keep_best_checkpoints(void)
{
  char *tmp = moelm_test_tmpdir();
  char *data = moelm_test_srcpath("data-bin/demo");
  for (int maximize = 0; maximize < 2; maximize++) {
    char *save = g_build_filename(tmp, maximize ? "max" : "min", NULL);
    const char *args[] = {BEST_ARGS(data, save), "--keep-best-checkpoints", "2", "--max-epoch", "4",
                          maximize ? "--maximize-best-checkpoint-metric" : NULL, NULL};
    char *out = NULL, *err = NULL;
    CU_ASSERT_EQUAL_FATAL(moelm_test_run_cli(args, NULL, &out, &err), 0);
    char **v = valid_lines(err);
    CU_ASSERT_EQUAL_FATAL(g_strv_length(v), 4);
    double loss[4];
    for (int e = 0; e < 4; e++)
      loss[e] = cli_log_field(v[e], "loss");
    CU_ASSERT_TRUE(loss[0] > loss[1] && loss[1] > loss[2] && loss[2] > loss[3]);
    GPtrArray *kept = kept_files(save);
    CU_ASSERT_EQUAL_FATAL(kept->len, 2);
    /* sorted names: the smaller loss first */
    const int lo = maximize ? 1 : 3, hi = maximize ? 0 : 2;
    CU_ASSERT_TRUE(names_value(g_ptr_array_index(kept, 0), loss[lo]));
    CU_ASSERT_TRUE(names_value(g_ptr_array_index(kept, 1), loss[hi]));
    CU_ASSERT_EQUAL(cli_count(err, "removed "), maximize ? 0 : 2);
    if (!maximize) {
      char *newest = g_build_filename(save, g_ptr_array_index(kept, 0), NULL);
      char *last = g_build_filename(save, "checkpoint_last.pt", NULL);
      CU_ASSERT_TRUE(cli_same_file(newest, last));
      g_free(newest);
      g_free(last);
    }
    g_ptr_array_unref(kept);
    g_strfreev(v);
    g_free(out);
    g_free(err);
    g_free(save);
  }
  moelm_test_rmtree(tmp);
  g_free(tmp);
  g_free(data);
}

MOELM_TEST_SUITE(train_best)
{
  CU_add_test(suite, "--maximize-best-checkpoint-metric ppl: best, patience and resume", test_maximize_ppl_survives_resume);
  CU_add_test(suite, "--best-checkpoint-metric: an unknown field is an error", test_unknown_metric);
  CU_add_test(suite, "--keep-best-checkpoints 2: the two best files, named by their values", test_keep_best_checkpoints);
}
