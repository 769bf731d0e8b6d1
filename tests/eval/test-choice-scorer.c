/* fairseq hub's score for continuations (tasks/choice_scorer.h): the encoding (newlines as
 * </s>, context and choice apart), the scores against direct model calls, and a mixture's
 * exact marginal and single-expert scores against the experts' log joints. */
#include "config.h"

#include <math.h>
#include <string.h>

#include "eval-fixture.h"
#include "mixture-cli-fixture.h"
#include "moelm-test.h"
#include "moelm/errors.h"
#include "tasks/choice_scorer.h"
#include "tasks/inference.h"
#include "tasks/mixture_scorer.h"

static MoelmDictionary *words_dict(void)
{
  const char *text = "a 5\nb 4\nc 3\nd 2\ne 1\n";
  return moelm_dictionary_load_from_data(text, strlen(text), "dict.txt", NULL);
}

static void expect_tokens(const MoelmDictionary *d, gboolean replace, const char *ctx, const char *choice,
                          const char *want, int want_ctx)
{
  const MoelmTextEncoder enc = {d, NULL, NULL, replace};
  GArray *t = g_array_new(FALSE, FALSE, sizeof(int32_t));
  int n_ctx = -1;
  CU_ASSERT_TRUE_FATAL(moelm_encode_continuation(&enc, ctx, choice, t, &n_ctx, NULL));
  GString *s = g_string_new(NULL);
  for (guint i = 0; i < t->len; i++)
    g_string_append_printf(s, "%s%s", i ? " " : "", moelm_dictionary_symbol(d, g_array_index(t, int32_t, i)));
  if (strcmp(s->str, want) != 0 || n_ctx != want_ctx)
    g_printerr("\n  '%s' + '%s': got [%s] (%d context), want [%s] (%d)\n", ctx, choice, s->str, n_ctx, want, want_ctx);
  CU_ASSERT_STRING_EQUAL(s->str, want);
  CU_ASSERT_EQUAL(n_ctx, want_ctx);
  g_string_free(s, TRUE);
  g_array_unref(t);
}

static void test_encoding(void)
{
  MoelmDictionary *d = words_dict();
  CU_ASSERT_PTR_NOT_NULL_FATAL(d);
  /* newlines replaced: every line ends with </s> */
  expect_tokens(d, TRUE, "a b\nc\n", "d e", "a b </s> c </s> d e </s>", 5);
  expect_tokens(d, TRUE, "a b\n", "d\ne\n", "a b </s> d </s> e </s>", 3);
  expect_tokens(d, TRUE, "a", " b", "a b </s>", 1); /* no line break between them: one line */
  expect_tokens(d, TRUE, "a\r\nb\rc\x1c" "d\xe2\x80\xa8" "e\n\n", "a", "a </s> b </s> c </s> d </s> e </s> </s> a </s>",
                11);
  /* kept: whitespace splits the words, one </s> at the end */
  expect_tokens(d, FALSE, "a b\nc\n", "d e", "a b c d e </s>", 3);
  expect_tokens(d, FALSE, "a z", " b", "a <unk> b </s>", 2);
  moelm_dictionary_free(d);
  const MoelmTextEncoder enc = {NULL, NULL, NULL, FALSE};
  GArray *t = g_array_new(FALSE, FALSE, sizeof(int32_t));
  int n;
  GError *error = NULL;
  CU_ASSERT_FALSE(moelm_encode_continuation(&enc, "a\xff", "b", t, &n, &error));
  MOELM_ASSERT_ERROR(error, "not valid UTF-8");
  g_clear_error(&error);
  g_array_unref(t);
}

/* A plain model: the choice's scores are the full sequence's scores at its positions, the
 * leading and trailing </s> unscored. */
static void test_plain_scores(void)
{
  EvalFixture f;
  eval_fixture_init(&f, 10, 6, 32, 7);
  const int32_t seq[] = {2, 5, 6, 7, 2, 8, 9, 10, 2};
  MoelmChoiceScorer s = {f.model, NULL, NULL, MOELM_CHOICE_MARGINAL};
  MoelmChoiceScore sc;
  CU_ASSERT_TRUE_FATAL(moelm_score_continuation(&s, seq, 9, 5, &sc, NULL));
  CU_ASSERT_EQUAL_FATAL(sc.n, 3); /* 8 9 10 */
  /* direct: source </s> 5 6 7 2 8 9, targets 5 6 7 2 8 9 10 */
  const int32_t src[] = {2, 5, 6, 7, 2, 8, 9}, tgt[] = {5, 6, 7, 2, 8, 9, 10};
  float lp[7];
  const MoelmBatch b = {1, 7, src, tgt};
  CU_ASSERT_TRUE_FATAL(moelm_model_score(f.model, &b, NULL, lp, NULL, NULL));
  double sum = 0;
  for (int i = 0; i < 3; i++) {
    CU_ASSERT_DOUBLE_EQUAL(sc.lprobs[i], lp[4 + i], 1e-5);
    CU_ASSERT_EQUAL(sc.tokens[i], tgt[4 + i]);
    sum += lp[4 + i];
  }
  CU_ASSERT_DOUBLE_EQUAL(sc.sum, sum, 1e-4);
  CU_ASSERT_EQUAL(sc.expert, -1);
  moelm_choice_score_clear(&sc);
  /* a choice that is only </s> scores nothing */
  const int32_t only_eos[] = {5, 6, 2};
  CU_ASSERT_TRUE(moelm_score_continuation(&s, only_eos, 3, 2, &sc, NULL));
  CU_ASSERT_EQUAL(sc.n, 0);
  moelm_choice_score_clear(&sc);
  eval_fixture_clear(&f);
}

static double lse(const double *v, int n)
{
  double m = v[0], s = 0;
  for (int i = 1; i < n; i++)
    m = fmax(m, v[i]);
  for (int i = 0; i < n; i++)
    s += exp(v[i] - m);
  return m + log(s);
}

/* A mixture: marginal = LSE(log joint of context + choice) - LSE(log joint of the context);
 * --gen-expert k = expert k's conditional; auto = the expert with the highest joint on the
 * context. */
static void test_mixture_scores(void)
{
  const MixtureCliFixture *fx = mixture_cli_fixture();
  GError *error = NULL;
  MoelmInference *inf = moelm_inference_open(fx->mixture, fx->data, MOELM_TEST_CPU_SPEC(1), &error);
  CU_ASSERT_PTR_NOT_NULL_FATAL(inf);
  const int K = inf->task.mix.num_experts;
  const int32_t seq[] = {6, 7, 8, 9, 10, 11, 12};
  const int n = 7, ctx = 3;
  double full[MIXTURE_CLI_K], pre[MIXTURE_CLI_K];
  CU_ASSERT_TRUE_FATAL(moelm_mixture_prompt_log_joint(inf->model, inf->gate, &inf->task.mix, seq, n, full, NULL));
  CU_ASSERT_TRUE_FATAL(moelm_mixture_prompt_log_joint(inf->model, inf->gate, &inf->task.mix, seq, ctx, pre, NULL));
  MoelmChoiceScorer s = {inf->model, &inf->task.mix, inf->gate, MOELM_CHOICE_MARGINAL};
  MoelmChoiceScore sc;
  CU_ASSERT_TRUE_FATAL(moelm_score_continuation(&s, seq, n, ctx, &sc, &error));
  CU_ASSERT_EQUAL(sc.n, n - ctx);
  CU_ASSERT_DOUBLE_EQUAL(sc.sum, lse(full, K) - lse(pre, K), 1e-4);
  moelm_choice_score_clear(&sc);
  double prior[MIXTURE_CLI_K];
  CU_ASSERT_TRUE_FATAL(moelm_mixture_prompt_log_joint(inf->model, inf->gate, &inf->task.mix, NULL, 0, prior, NULL));
  for (int k = 0; k < K; k++) {
    s.expert = k;
    CU_ASSERT_TRUE_FATAL(moelm_score_continuation(&s, seq, n, ctx, &sc, NULL));
    CU_ASSERT_EQUAL(sc.expert, k);
    CU_ASSERT_DOUBLE_EQUAL(sc.sum, (full[k] - prior[k]) - (pre[k] - prior[k]), 1e-4);
    moelm_choice_score_clear(&sc);
  }
  s.expert = MOELM_CHOICE_AUTO;
  CU_ASSERT_TRUE_FATAL(moelm_score_continuation(&s, seq, n, ctx, &sc, NULL));
  CU_ASSERT_EQUAL(sc.expert, pre[1] > pre[0] ? 1 : 0);
  moelm_choice_score_clear(&sc);
  moelm_inference_free(inf);
}

MOELM_TEST_SUITE(choice_scorer)
{
  CU_add_test(suite, "hub encoding: newlines as </s>, context and choice apart", test_encoding);
  CU_add_test(suite, "plain model: the choice's positions of the sequence", test_plain_scores);
  CU_add_test(suite, "mixture: exact marginal, one expert, auto", test_mixture_scores);
}
