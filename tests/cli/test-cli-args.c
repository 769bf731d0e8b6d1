/* The option parser as a fairseq user meets it: every unknown option of a pasted command in
 * one message, each with the nearest known option; one "moelm CMD: error:" prefix; the
 * fairseq options without effect named together in one warning line. */
#include "config.h"

#include <string.h>

#include "moelm-test.h"

static int count_of(const char *text, const char *needle)
{
  int n = 0;
  for (const char *p = text; (p = strstr(p, needle)) != NULL; p += strlen(needle))
    n++;
  return n;
}

static void test_unknown_all_at_once(void)
{
  const char *args[] = {"train", "data-bin/none", "--checkpoint-activation", "--max-updates", "5",
                        "--frobnicate", "--lr=0.1", "--arch", "transformer_lm", "--optimiser", "adam", NULL};
  char *out = NULL, *err = NULL;
  CU_ASSERT_EQUAL(moelm_test_run_cli(args, NULL, &out, &err), 2);
  /* One line, one prefix, the three unknown options in the order given. */
  CU_ASSERT_EQUAL(count_of(err, "\n"), 1);
  CU_ASSERT_EQUAL(count_of(err, "moelm train"), 1);
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "moelm train: error: unrecognized arguments: "
                                     "--checkpoint-activation (did you mean --checkpoint-activations?), "
                                     "--max-updates (did you mean --max-update?), --frobnicate, "
                                     "--optimiser (did you mean --optimizer?)"));
  /* The value after an unknown option is not taken for a path or another option. */
  CU_ASSERT_PTR_NULL(strstr(err, "adam"));
  g_free(out);
  g_free(err);

  const char *one[] = {"eval-lm", "x", "--path", "y", "--context-windw", "5", NULL};
  CU_ASSERT_EQUAL(moelm_test_run_cli(one, NULL, &out, &err), 2);
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "moelm eval-lm: error: unrecognized argument: --context-windw "
                                     "(did you mean --context-window?)\n"));
  g_free(out);
  g_free(err);
}

static void test_bad_value_one_prefix(void)
{
  const char *args[] = {"train", "x", "--max-update", "lots", NULL};
  char *out = NULL, *err = NULL;
  CU_ASSERT_EQUAL(moelm_test_run_cli(args, NULL, &out, &err), 2);
  CU_ASSERT_STRING_EQUAL(err, "moelm train: error: argument --max-update: invalid int value: 'lots'\n");
  g_free(out);
  g_free(err);
  /* a control byte in a quoted value keeps the error on one line */
  const char *ctl[] = {"train", "x", "--max-update", "lo\nts", NULL};
  CU_ASSERT_EQUAL(moelm_test_run_cli(ctl, NULL, &out, &err), 2);
  CU_ASSERT_STRING_EQUAL(err, "moelm train: error: argument --max-update: invalid int value: 'lo\\x0ats'\n");
  g_free(out);
  g_free(err);
  /* so do preprocess's and info's own usage errors */
  const char *pp[] = {"preprocess", "--only-source", "--trainpref", "t.txt", "--workers", "t\rwo", NULL};
  CU_ASSERT_EQUAL(moelm_test_run_cli(pp, NULL, &out, &err), 2);
  CU_ASSERT_STRING_EQUAL(err, "moelm preprocess: error: argument --workers: invalid int value: 't\\x0dwo'\n");
  g_free(out);
  g_free(err);
  const char *info[] = {"info", "--da\nta", NULL};
  CU_ASSERT_EQUAL(moelm_test_run_cli(info, NULL, &out, &err), 2);
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "--da\\x0ata"));
  CU_ASSERT_EQUAL(count_of(err, "\n"), 1);
  g_free(out);
  g_free(err);
}

static void test_ignored_in_one_warning(void)
{
  /* eval-lm on a missing checkpoint: it fails after parsing, so the warning is printed. */
  const char *args[] = {"eval-lm", "none", "--path", "/nonexistent/model.pt", "--seed", "1", "--softmax-batch",
                        "1024", "--skip-invalid-size-inputs-valid-test", NULL};
  char *out = NULL, *err = NULL;
  CU_ASSERT_NOT_EQUAL(moelm_test_run_cli(args, NULL, &out, &err), 0);
  CU_ASSERT_EQUAL(count_of(err, "no effect in moelm"), 1);
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "moelm eval-lm: fairseq options with no effect in moelm, ignored: --seed 1, "
                                     "--softmax-batch 1024, --skip-invalid-size-inputs-valid-test\n"));
  g_free(out);
  g_free(err);

  /* preprocess (its own table of fairseq's common options): one line too */
  char *tmp = moelm_test_tmpdir();
  char *txt = g_build_filename(tmp, "t.txt", NULL), *dest = g_build_filename(tmp, "bin", NULL);
  moelm_test_write_file(txt, "a b\n", 4);
  const char *pre[] = {"preprocess", "--only-source", "--trainpref", txt, "--destdir", dest, "--seed", "3", "--fp16",
                       "--log-format", "json", "--user-dir", "x", NULL};
  CU_ASSERT_EQUAL(moelm_test_run_cli(pre, NULL, &out, &err), 0);
  CU_ASSERT_EQUAL(count_of(err, "WARNING"), 1);
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "moelm preprocess: fairseq options with no effect on preprocessing, ignored: "
                                     "--log-format json, --seed 3, --fp16, --user-dir x\n"));
  g_free(out);
  g_free(err);
  moelm_test_rmtree(tmp);
  g_free(txt);
  g_free(dest);
  g_free(tmp);
}

/* Options of a task or model kind the run does not have: an error naming them all, before
 * any data is read (the data directory does not exist). */
static void test_options_outside_their_scope(void)
{
  const char *mixture[] = {"train", "data-bin/none", "--method", "sMoElp", "--num-experts", "4",
                           "--mean-pool-gating-network", "--max-tokens", "64", NULL};
  char *out = NULL, *err = NULL;
  CU_ASSERT_EQUAL(moelm_test_run_cli(mixture, NULL, &out, &err), 2);
  CU_ASSERT_STRING_EQUAL(err, "moelm train: error: --method, --num-experts, --mean-pool-gating-network: only with "
                              "--task language_model_moe (a sequence-level mixture); this run's task is "
                              "language_modeling\n");
  g_free(out);
  g_free(err);

  const char *moe[] = {"train", "data-bin/none", "--moe-expert-count", "4", "--moe-gate-loss-wt", "0.1",
                       "--criterion", "moe_cross_entropy", "--max-tokens", "64", NULL};
  CU_ASSERT_EQUAL(moelm_test_run_cli(moe, NULL, &out, &err), 2);
  CU_ASSERT_STRING_EQUAL(err, "moelm train: error: --moe-expert-count, --moe-gate-loss-wt, --criterion "
                              "moe_cross_entropy: only for a model with token-level MoE layers (--moe-freq F "
                              "--moe-expert-count E)\n");
  g_free(out);
  g_free(err);

  /* With the task (or MoE layers) the same options pass the check: the run fails later, on
   * the missing data directory. */
  const char *ok[] = {"train", "data-bin/none", "--task", "language_model_moe", "--method", "sMoElp",
                      "--moe-freq", "2", "--moe-expert-count", "4", "--criterion", "moe_cross_entropy",
                      "--max-tokens", "64", NULL};
  CU_ASSERT_EQUAL(moelm_test_run_cli(ok, NULL, &out, &err), 1);
  CU_ASSERT_PTR_NULL(strstr(err, "only with"));
  CU_ASSERT_PTR_NULL(strstr(err, "only for"));
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "data-bin/none"));
  g_free(out);
  g_free(err);
}

MOELM_TEST_SUITE(cli_args)
{
  CU_add_test(suite, "every unknown option in one message, with suggestions", test_unknown_all_at_once);
  CU_add_test(suite, "a bad value: one prefix", test_bad_value_one_prefix);
  CU_add_test(suite, "options without effect: one warning line", test_ignored_in_one_warning);
  CU_add_test(suite, "mixture or MoE options without the task or the layers: an error", test_options_outside_their_scope);
}
