/* `moelm eval-lm` on sequence-level mixture checkpoints trained with `moelm train --task
 * language_model_moe`: the report and --mixture-report lines, agreement with the library and
 * with training's valid loss, the seed's command line, and the mixture flags' errors. */
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "mixture-cli-fixture.h"
#include "moelm-test.h"
#include "tasks/inference.h"
#include "tasks/mixture_scorer.h"

/* The numbers after `key` on the first eval_lm line that holds it. */
static gboolean line_value(const char *out, const char *key, const char *fmt, void *a, void *b)
{
  const char *at = strstr(out, key);
  return at && sscanf(at + strlen(key), fmt, a, b) >= 1;
}

static char *eval_lm(const char *ckpt, const char *const *extra)
{
  const MixtureCliFixture *f = mixture_cli_fixture();
  const char *base[] = {"eval-lm", f->data, "--path", ckpt, "--gen-subset", "valid", "--threads", "1", NULL};
  char *out = NULL, *err = NULL;
  const int rc = moelm_test_run_cli2(base, extra, NULL, &out, &err);
  if (rc != 0)
    g_printerr("\n  eval-lm: %s\n", err);
  CU_ASSERT_EQUAL_FATAL(rc, 0);
  g_free(err);
  return out;
}

/* The library's figure for the same checkpoint, split and context window. */
static double library_loss(const char *ckpt, int C)
{
  const MixtureCliFixture *f = mixture_cli_fixture();
  MoelmInference *inf = moelm_inference_open(ckpt, f->data, MOELM_TEST_CPU_SPEC(1), NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(inf);
  CU_ASSERT_TRUE_FATAL(inf->task.mixture);
  CU_ASSERT_PTR_NOT_NULL(inf->gate);
  CU_ASSERT_EQUAL(inf->task.mix.num_experts, MIXTURE_CLI_K);
  CU_ASSERT_EQUAL(inf->task.mix.gating_context, 16);
  CU_ASSERT_STRING_EQUAL(moelm_dictionary_symbol(inf->dict, inf->task.mix.expert_token0 + 1), "<expert_1>");
  MoelmLmSplit *s =
    moelm_lm_split_open(f->data, "valid", 32 - C, MOELM_BREAK_NONE, moelm_dictionary_size(inf->dict), NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(s);
  MoelmScoreOptions o = {.context_window = C, .tokens_per_sample = 32 - C, .max_sentences = 3};
  MoelmScoreResult r;
  CU_ASSERT_TRUE_FATAL(moelm_mixture_score_split(inf->model, inf->gate, &inf->task.mix, s, &o, 0, NULL, NULL, &r, NULL,
                                                 NULL));
  moelm_lm_split_free(s);
  moelm_inference_free(inf);
  return moelm_score_loss_base2(&r);
}

static void test_report(void)
{
  const MixtureCliFixture *f = mixture_cli_fixture();
  for (int C = 0; C <= 10; C += 10) {
    char cw[8];
    g_snprintf(cw, sizeof cw, "%d", C);
    char *out = eval_lm(f->mixture, (const char *const[]){"--context-window", cw, NULL});
    double loss = -1, ppl = -1;
    CU_ASSERT_TRUE(line_value(out, "| Loss (base 2): ", "%lf, Perplexity: %lf", &loss, &ppl));
    CU_ASSERT_DOUBLE_EQUAL(loss, library_loss(f->mixture, C), 6e-5);
    CU_ASSERT_DOUBLE_EQUAL(ppl, pow(2.0, loss), 1e-4 * ppl + 0.006);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "mixture of 2 experts (--method hMoElp), prior from the gating network"));
    /* without a context window, the rows and the gate's context are training's */
    if (C == 0)
      CU_ASSERT_DOUBLE_EQUAL(loss, f->mixture_valid, 6e-4);
    g_free(out);
  }
}

static void test_mixture_report(void)
{
  const MixtureCliFixture *f = mixture_cli_fixture();
  char *out = eval_lm(f->mixture, (const char *const[]){"--context-window", "10", "--mixture-report", NULL});
  double loss = -1, ppl = -1, oracle = -1, oppl = -1;
  CU_ASSERT_TRUE(line_value(out, "| Loss (base 2): ", "%lf, Perplexity: %lf", &loss, &ppl));
  CU_ASSERT_TRUE(line_value(out, "| ORACLE best expert per block (chosen by looking at the scored tokens; not a "
                                 "model's perplexity): loss (base 2) ",
                            "%lf, perplexity %lf", &oracle, &oppl));
  gint64 blocks = 0;
  for (int k = 0; k < MIXTURE_CLI_K; k++) {
    char *key = g_strdup_printf("| expert %d alone (prior ignored): loss (base 2) ", k);
    const char *at = strstr(out, key);
    CU_ASSERT_PTR_NOT_NULL_FATAL(at);
    double el = -1, ep = -1, post = -1;
    gint64 best = -1, of = -1;
    CU_ASSERT_EQUAL(sscanf(at + strlen(key), "%lf, perplexity %lf; best expert for %" G_GINT64_FORMAT
                                             " of %" G_GINT64_FORMAT " blocks; mean posterior %lf",
                           &el, &ep, &best, &of, &post),
                    5);
    /* the oracle is at least as good as any expert alone */
    CU_ASSERT(oracle <= el + 1e-4);
    CU_ASSERT(post > 0 && post < 1);
    blocks += best;
    CU_ASSERT_EQUAL(of, 20); /* 435 tokens in blocks of 32 - 10 */
    g_free(key);
  }
  CU_ASSERT_EQUAL(blocks, 20);
  /* the real result stays the last line */
  const char *last = g_strrstr(out, "| Loss (base 2): ");
  CU_ASSERT_PTR_NOT_NULL_FATAL(last);
  CU_ASSERT_PTR_EQUAL(strchr(last, '\n') + 1, out + strlen(out));
  CU_ASSERT_DOUBLE_EQUAL(loss, library_loss(f->mixture, 10), 6e-5);
  g_free(out);
}

/* The seed's eval-lm line, paths aside. */
static void test_seed_command(void)
{
  const MixtureCliFixture *f = mixture_cli_fixture();
  const char *args[] = {"eval-lm", f->data, "--path", f->seed_mixture, "--max-sentences", "2",
                        "--tokens-per-sample", "512", "--context-window", "400", "--task", "language_model_moe",
                        "--user-dir", "./examples/language_model_moe/src/", "--num-experts", "10",
                        "--mean-pool-gating-network", "--mean-pool-gating-network-encoder-dim", "512",
                        "--mean-pool-gating-network-dropout", "0.0", "--threads", "1", NULL};
  char *out = NULL, *err = NULL;
  const int rc = moelm_test_run_cli(args, NULL, &out, &err);
  if (rc != 0)
    g_printerr("\n  seed eval-lm: %s\n", err);
  CU_ASSERT_EQUAL(rc, 0);
  double loss = -1, ppl = -1;
  gint64 evaluated = -1;
  CU_ASSERT_TRUE(line_value(out, "| Loss (base 2): ", "%lf, Perplexity: %lf", &loss, &ppl));
  CU_ASSERT_TRUE(line_value(out, "| Evaluated ", "%" G_GINT64_FORMAT, &evaluated, NULL));
  CU_ASSERT_EQUAL(evaluated, 435);
  CU_ASSERT(loss > 5 && loss < 12); /* about log2 of the vocabulary for 3 updates */
  CU_ASSERT_PTR_NOT_NULL(strstr(out, "mixture of 10 experts (--method hMoEup), uniform prior"));
  g_free(out);
  g_free(err);
}

static void test_errors(void)
{
  const MixtureCliFixture *f = mixture_cli_fixture();
#define EVAL(...) ((const char *const[]){"eval-lm", f->data, "--threads", "1", __VA_ARGS__, NULL})
  mixture_cli_check_fails(EVAL("--path", f->mixture, "--num-experts", "3"), NULL, 1,
                          "--num-experts 3, but the checkpoint was trained with --num-experts 2");
  mixture_cli_check_fails(EVAL("--path", f->mixture, "--method", "sMoEup"), NULL, 1,
                          "--method sMoEup, but the checkpoint was trained with --method hMoElp");
  mixture_cli_check_fails(EVAL("--path", f->mixture, "--task", "language_modeling"), NULL, 1,
                          "--task language_modeling, but the checkpoint was trained with --task language_model_moe");
  mixture_cli_check_fails(EVAL("--path", f->mixture, "--gating-context", "8"), NULL, 1, "--gating-context 8");
  mixture_cli_check_fails(EVAL("--path", f->mixture, "--mean-pool-gating-network-encoder-dim", "512"), NULL, 1,
                          "pools 16-dim embeddings");
  mixture_cli_check_fails(EVAL("--path", f->dense, "--task", "language_model_moe"), NULL, 1,
                          "--task language_model_moe, but the checkpoint was trained with --task language_modeling");
  mixture_cli_check_fails(EVAL("--path", f->dense, "--num-experts", "2"), NULL, 1, "--num-experts applies to");
  mixture_cli_check_fails(EVAL("--path", f->dense, "--mixture-report"), NULL, 1, "--mixture-report needs");
  mixture_cli_check_fails(EVAL("--path", f->mixture, "--method", "hMoE"), NULL, 2, "--method");
  /* flags that agree with the checkpoint pass: the error is the missing split */
  mixture_cli_check_fails(EVAL("--path", f->mixture, "--num-experts", "2", "--task", "language_model_moe",
                               "--method", "hMoElp", "--mean-pool-gating-network", "--gen-subset", "nosuch"),
                          NULL, 1, "nosuch");
#undef EVAL
}

MOELM_TEST_SUITE(eval_mixture_cli)
{
  CU_add_test(suite, "Loss/Perplexity of a mixture: library, training's valid loss", test_report);
  CU_add_test(suite, "--mixture-report: experts alone and the oracle", test_mixture_report);
  CU_add_test(suite, "the seed's eval-lm command line", test_seed_command);
  CU_add_test(suite, "mixture flags that contradict the checkpoint", test_errors);
}
