/* Bad values are refused, not replaced: each flag below once trained with a default in its
 * place (--decoder-layers -1 trained 6 layers). Each run must exit 1 with one error line
 * naming the flag and write nothing. */
#include "config.h"

#include <string.h>

#include <glib/gstdio.h>

#include "crafted.h"
#include "eval/mixture-cli-fixture.h"
#include "moelm-test.h"
#include "moelm/indexed_dataset.h"

typedef struct {
  const char *flags[10]; /* NULL-terminated */
  const char *needle;   /* besides the first flag */
} BadValue;

static void check_train_refuses(const BadValue *cases, gsize n)
{
  const MixtureCliFixture *fx = mixture_cli_fixture();
  char *tmp = moelm_test_tmpdir();
  char *ck = g_build_filename(tmp, "ck", NULL);
  const char *base[] = {"train", fx->data, "--arch", "transformer_lm", "--decoder-layers", "1", "--decoder-embed-dim",
                        "16", "--decoder-ffn-embed-dim", "16", "--decoder-attention-heads", "2", "--tokens-per-sample",
                        "16", "--batch-size", "4", "--max-update", "1", "--save-dir", ck, "--threads", "1", NULL};
  for (gsize i = 0; i < n; i++) {
    char *err = NULL;
    const int rc = moelm_test_run_cli2(base, cases[i].flags, NULL, NULL, &err);
    /* the flag at fault: the first, or the one after "--task X" */
    const char *flag = strcmp(cases[i].flags[0], "--task") == 0 ? cases[i].flags[2] : cases[i].flags[0];
    const char *needles[] = {flag, cases[i].needle, NULL};
    crafted_check_error(rc, err, 1, needles);
    CU_ASSERT_FALSE(g_file_test(ck, G_FILE_TEST_EXISTS));
    g_free(err);
  }
  moelm_test_rmtree(tmp);
  g_free(ck);
  g_free(tmp);
}

static void test_model_flags(void)
{
  static const BadValue cases[] = {
    {{"--decoder-layers", "-1", NULL}, "got -1"},
    {{"--decoder-embed-dim", "0", NULL}, "got 0"},
    {{"--decoder-attention-heads", "0", NULL}, "got 0"},
    {{"--decoder-ffn-embed-dim", "0", NULL}, "got 0"},
    {{"--decoder-embed-dim", "100000", "--decoder-attention-heads", "100000", NULL}, "1..65536"},
    {{"--dropout", "-0.1", NULL}, "[0, 1)"},
    {{"--dropout", "nan", NULL}, "got nan"},
    {{"--attention-dropout", "1", NULL}, "[0, 1)"},
    {{"--activation-dropout", "inf", NULL}, "[0, 1)"},
    {{"--moe-capacity-factor", "-1", "--moe-freq", "1", "--moe-expert-count", "2", NULL}, "got -1"},
    {{"--moe-gate-loss-wt", "-1", "--moe-freq", "1", "--moe-expert-count", "2", NULL}, "got -1"},
    {{"--moe-expert-count", "1", "--moe-freq", "1", NULL}, "at least 2"},
    {{"--max-target-positions", "2147483647", NULL}, "1..16777216"},
    {{"--max-target-positions", "0", NULL}, "--max-target-positions 0"},
    {{"--tokens-per-sample", "2147483647", NULL}, "1..16777216"},
    {{"--tokens-per-sample", "1e8", NULL}, "1..16777216"},
    {{"--tokens-per-sample", "0", NULL}, "got 0"},
  };
  check_train_refuses(cases, G_N_ELEMENTS(cases));
}

static void test_trainer_flags(void)
{
  static const BadValue cases[] = {
    {{"--update-freq", "0", NULL}, "at least 1, got 0"},
    {{"--update-freq", "-1", NULL}, "at least 1, got -1"},
    {{"--required-batch-size-multiple", "0", NULL}, "got 0"},
    {{"--warmup-updates", "-5", NULL}, "got -5"},
    {{"--clip-norm", "nan", NULL}, "got nan"},
    {{"--clip-norm", "-1", NULL}, "got -1"},
    {{"--total-num-update", "0", "--lr-scheduler", "polynomial_decay", NULL}, "got 0"},
    {{"--adam-eps", "0", NULL}, "becomes NaN"},
    {{"--log-interval", "0", NULL}, "got 0"},
    {{"--save-interval", "0", NULL}, "got 0"},
    {{"--validate-interval", "-2", NULL}, "got -2"},
    {{"--max-update", "-1", NULL}, "got -1"},
    {{"--batch-size", "-4", NULL}, "got -4"},
    {{"--keep-last-epochs", "-7", NULL}, "got -7"},
  };
  check_train_refuses(cases, G_N_ELEMENTS(cases));
}

/* eval-lm on an empty split printed "Perplexity: 1.00" and exited 0. */
static void test_eval_empty_split(void)
{
  const MixtureCliFixture *fx = mixture_cli_fixture();
  char *tmp = moelm_test_tmpdir();
  char *data = g_build_filename(tmp, "data", NULL);
  g_mkdir(data, 0755);
  char *from = g_build_filename(fx->data, "dict.txt", NULL), *dict = g_build_filename(data, "dict.txt", NULL);
  gsize len = 0;
  char *bytes = moelm_test_read_file(from, &len);
  CU_ASSERT_PTR_NOT_NULL_FATAL(bytes);
  moelm_test_write_file(dict, bytes, len);
  /* a valid split of no sentences */
  char *prefix = g_build_filename(data, "test", NULL);
  MoelmIndexedDatasetBuilder *b = moelm_indexed_dataset_builder_new(prefix, MOELM_IDX_UINT16, NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(b);
  CU_ASSERT_TRUE_FATAL(moelm_indexed_dataset_builder_finish(b, NULL));
  const char *args[] = {"eval-lm", data, "--path", fx->dense, "--threads", "1", NULL};
  const char *needles[] = {prefix, "the split is empty", NULL};
  crafted_check_fails(args, 1, needles);
  g_free(prefix);
  g_free(bytes);
  g_free(from);
  moelm_test_rmtree(tmp);
  g_free(dict);
  g_free(data);
  g_free(tmp);
}

static void test_task_flags(void)
{
  static const BadValue cases[] = {
    {{"--task", "language_model_moe", "--num-experts", "0", NULL}, "got 0"},
    {{"--task", "language_model_moe", "--num-experts", "2000000", NULL}, "1..1048576"},
    {{"--task", "language_model_moe", "--gating-context", "-1", NULL}, "got -1"},
    {{"--task", "language_model_moe", "--gating-context", "2147483647", NULL}, "0..1048576"},
    {{"--task", "language_model_moe", "--num-experts", "1", "--method", "hMoElp", "--mean-pool-gating-network", NULL},
     "--num-experts >= 2"},
    {{"--task", "language_model_moe", "--mean-pool-gating-network-dropout", "-0.5", "--method", "hMoElp",
      "--mean-pool-gating-network", NULL},
     "got -0.5"},
  };
  check_train_refuses(cases, G_N_ELEMENTS(cases));
}

/* An empty dict.txt: the error names the file (it named nothing). */
static void test_empty_dictionary(void)
{
  char *tmp = moelm_test_tmpdir();
  char *dict = g_build_filename(tmp, "dict.txt", NULL);
  moelm_test_write_file(dict, "", 0);
  char *ck = g_build_filename(tmp, "ck", NULL);
  const char *args[] = {"train", tmp, "--batch-size", "4", "--save-dir", ck, NULL};
  const char *needles[] = {dict, "empty dictionary", NULL};
  crafted_check_fails(args, 1, needles);
  CU_ASSERT_FALSE(g_file_test(ck, G_FILE_TEST_EXISTS));
  moelm_test_rmtree(tmp);
  g_free(ck);
  g_free(dict);
  g_free(tmp);
}

MOELM_TEST_SUITE(bad_values)
{
  CU_add_test(suite, "trainer flags: zero, negative, NaN", test_trainer_flags);
  CU_add_test(suite, "task flags: --num-experts, --gating-context", test_task_flags);
  CU_add_test(suite, "eval-lm on an empty split", test_eval_empty_split);
  CU_add_test(suite, "an empty dict.txt", test_empty_dictionary);
  CU_add_test(suite, "model flags: out of range, NaN, zero, negative", test_model_flags);
}
