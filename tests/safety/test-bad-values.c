/* Bad values are refused, not replaced: each flag below once trained with a default in its
 * place (--decoder-layers -1 trained 6 layers). Each run must exit 1 with one error line
 * naming the flag and write nothing. */
#include "config.h"

#include <string.h>

#include "crafted.h"
#include "eval/mixture-cli-fixture.h"
#include "moelm-test.h"

typedef struct {
  const char *flags[7]; /* NULL-terminated */
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
    const char *needles[] = {cases[i].flags[0], cases[i].needle, NULL};
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

MOELM_TEST_SUITE(bad_values)
{
  CU_add_test(suite, "model flags: out of range, NaN, zero, negative", test_model_flags);
}
