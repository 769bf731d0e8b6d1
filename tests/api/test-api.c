/* The inference API (lib/moelm/moelm.h) from C: its errors (codes, per-thread messages,
 * options), and that it returns exactly what the library it wraps computes (the choice
 * scorer, the mixture's prompt posterior, the generator), on the mixture fixture and on
 * fairseq's dense test checkpoint, converted when opened. */
#include "moelm/moelm.h" /* first: the public header stands alone, without GLib */

#include "config.h"

#include <math.h>
#include <string.h>

#include "eval/mixture-cli-fixture.h"
#include "moelm-test.h"
#include "tasks/choice_scorer.h"
#include "tasks/generator.h"
#include "tasks/inference.h"
#include "tasks/mixture_scorer.h"

static const char *const cpu1[] = {"device=cpu", "threads=1", NULL};

static MoelmLM *open_ok(const char *ckpt, const char *data, const char *const *options)
{
  MoelmLM *lm = NULL;
  const int rc = moelm_lm_open(ckpt, data, options, &lm);
  if (rc != MOELM_OK)
    g_printerr("\n  moelm_lm_open: %s: %s\n", moelm_status_name(rc), moelm_last_error());
  CU_ASSERT_EQUAL_FATAL(rc, MOELM_OK);
  CU_ASSERT_PTR_NOT_NULL_FATAL(lm);
  return lm;
}

static void expect_open_fails(const char *ckpt, const char *data, const char *const *options, int code,
                              const char *needle)
{
  MoelmLM *lm = (MoelmLM *)(void *)&lm; /* not NULL before: open must clear it */
  const int rc = moelm_lm_open(ckpt, data, options, &lm);
  CU_ASSERT_EQUAL(rc, code);
  CU_ASSERT_PTR_NULL(lm);
  if (strstr(moelm_last_error(), needle) == NULL)
    g_printerr("\n  expected '%s' in: %s\n", needle, moelm_last_error());
  CU_ASSERT_PTR_NOT_NULL(strstr(moelm_last_error(), needle));
}

static gpointer fail_in_thread(gpointer data)
{
  MoelmLM *lm = NULL;
  moelm_lm_open("/nonexistent/other.pt", "/nonexistent", NULL, &lm);
  return g_strdup(moelm_last_error());
}

static void test_errors(void)
{
  const MixtureCliFixture *fx = mixture_cli_fixture();
  CU_ASSERT_EQUAL(moelm_api_version(), MOELM_API_VERSION);
  CU_ASSERT_STRING_EQUAL(moelm_status_name(MOELM_E_MISMATCH), "MOELM_E_MISMATCH");
  CU_ASSERT_STRING_EQUAL(moelm_status_name(42), "MOELM_E_UNKNOWN");
  expect_open_fails(NULL, fx->data, NULL, MOELM_E_INVALID_ARG, "checkpoint, data_dir and out are required");
  expect_open_fails("/nonexistent/model.pt", fx->data, NULL, MOELM_E_IO, "/nonexistent/model.pt");
  expect_open_fails(fx->dense, fx->data, (const char *const[]){"device=tpu", NULL}, MOELM_E_INVALID_ARG,
                    "device 'tpu'");
  expect_open_fails(fx->dense, fx->data, (const char *const[]){"thread=2", NULL}, MOELM_E_INVALID_ARG,
                    "unknown option 'thread' (known: device, threads");
  expect_open_fails(fx->dense, fx->data, (const char *const[]){"threads=two", NULL}, MOELM_E_INVALID_ARG,
                    "option threads: 'two' is not an integer");
  expect_open_fails(fx->dense, fx->data, (const char *const[]){"threads", NULL}, MOELM_E_INVALID_ARG,
                    "expected key=value");
  expect_open_fails(fx->dense, fx->data, (const char *const[]){"bpe=gpt2", NULL}, MOELM_E_INVALID_ARG,
                    "needs both gpt2_encoder_json and gpt2_vocab_bpe");
  expect_open_fails(fx->dense, fx->data, (const char *const[]){"precision=fp8", NULL}, MOELM_E_INVALID_ARG,
                    "precision 'fp8'");
  /* the message is per thread: a failure elsewhere does not replace this one */
  char *mine = g_strdup(moelm_last_error());
  GThread *t = g_thread_new("api-error", fail_in_thread, NULL);
  char *theirs = g_thread_join(t);
  CU_ASSERT_PTR_NOT_NULL(strstr(theirs, "/nonexistent/other.pt"));
  CU_ASSERT_STRING_EQUAL(moelm_last_error(), mine);
  g_free(mine);
  g_free(theirs);
  CU_ASSERT_EQUAL(moelm_set_log_level("loud"), MOELM_E_INVALID_ARG);
  CU_ASSERT_EQUAL(moelm_set_log_level("info"), MOELM_OK);
  moelm_lm_close(NULL);
  moelm_lm_scores_free(NULL);
  moelm_lm_hypotheses_free(NULL);
  moelm_free(NULL);
}

/* The API's scores, posterior and hypotheses are the library's, bit for bit. */
static void test_same_as_library(void)
{
  const MixtureCliFixture *fx = mixture_cli_fixture();
  MoelmLM *lm = open_ok(fx->mixture, fx->data, cpu1);
  const int K = moelm_lm_num_experts(lm);
  CU_ASSERT_EQUAL_FATAL(K, MIXTURE_CLI_K);
  CU_ASSERT_STRING_EQUAL(moelm_lm_task(lm), "language_model_moe");
  CU_ASSERT_STRING_EQUAL(moelm_lm_method(lm), "hMoElp");
  CU_ASSERT_STRING_EQUAL(moelm_lm_bpe(lm), "none");
  CU_ASSERT_EQUAL(moelm_lm_device_id(lm), -1);
  CU_ASSERT_STRING_EQUAL(moelm_lm_symbol(lm, moelm_lm_vocab_size(lm) - 1), "<expert_1>");
  int32_t *tokens = NULL, *ctx = NULL;
  size_t n = 0, n_ctx = 0;
  CU_ASSERT_EQUAL_FATAL(moelm_lm_encode(lm, "the program is\nfree software", MOELM_ENCODE_NEWLINES_AS_EOS, &tokens, &n),
                        MOELM_OK);
  CU_ASSERT_EQUAL_FATAL(n, 7);
  CU_ASSERT_EQUAL(tokens[3], 2); /* the newline */
  CU_ASSERT_EQUAL(tokens[6], 2); /* the end */
  CU_ASSERT_EQUAL(moelm_lm_encode(lm, "the program is\n", MOELM_ENCODE_NEWLINES_AS_EOS | MOELM_ENCODE_NO_FINAL_EOS,
                                  &ctx, &n_ctx),
                  MOELM_OK);
  CU_ASSERT_EQUAL(n_ctx, 4);
  moelm_free(ctx);
  CU_ASSERT_EQUAL(moelm_lm_encode(lm, "the program", MOELM_ENCODE_NO_FINAL_EOS, &ctx, &n_ctx), MOELM_OK);
  CU_ASSERT_EQUAL(n_ctx, 2);
  moelm_free(ctx);
  CU_ASSERT_EQUAL(moelm_lm_encode(lm, "x", 4, &ctx, &n_ctx), MOELM_E_INVALID_ARG);
  char *text = NULL;
  CU_ASSERT_EQUAL(moelm_lm_decode(lm, tokens, n, &text), MOELM_OK);
  char *want_text = g_strdup_printf("%s %s %s %s %s", moelm_lm_symbol(lm, tokens[0]), moelm_lm_symbol(lm, tokens[1]),
                                    moelm_lm_symbol(lm, tokens[2]), moelm_lm_symbol(lm, tokens[4]),
                                    moelm_lm_symbol(lm, tokens[5]));
  CU_ASSERT_STRING_EQUAL(text, want_text); /* </s> left out, words joined */
  CU_ASSERT_EQUAL(moelm_lm_index(lm, moelm_lm_symbol(lm, tokens[0])), tokens[0]);
  g_free(want_text);
  moelm_free(text);

  /* what the library computes directly */
  MoelmInference *inf = moelm_inference_open(fx->mixture, fx->data, MOELM_TEST_CPU_SPEC(1), NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(inf);
  const int experts[] = {MOELM_EXPERT_MIXTURE, 0, 1, MOELM_EXPERT_AUTO};
  for (guint e = 0; e < G_N_ELEMENTS(experts); e++) {
    MoelmLMScores *s = NULL;
    CU_ASSERT_EQUAL_FATAL(moelm_lm_score(lm, tokens, n, 4, experts[e], &s), MOELM_OK);
    const MoelmChoiceScorer scorer = {inf->model, &inf->task.mix, inf->gate, experts[e]};
    MoelmChoiceScore want;
    CU_ASSERT_TRUE_FATAL(moelm_score_continuation(&scorer, tokens, (int)n, 4, &want, NULL));
    CU_ASSERT_EQUAL(s->n, (size_t)want.n);
    CU_ASSERT_EQUAL(s->n, 2);
    CU_ASSERT_EQUAL(s->expert, want.expert);
    CU_ASSERT_EQUAL(memcmp(s->lprobs, want.lprobs, s->n * sizeof(float)), 0);
    CU_ASSERT_EQUAL(memcmp(s->tokens, want.tokens, s->n * sizeof(int32_t)), 0);
    CU_ASSERT_EQUAL(s->sum, want.sum);
    moelm_choice_score_clear(&want);
    moelm_lm_scores_free(s);
  }
  double post[MIXTURE_CLI_K], joint[MIXTURE_CLI_K], want_joint[MIXTURE_CLI_K];
  CU_ASSERT_EQUAL_FATAL(moelm_lm_posterior(lm, tokens, n, post, joint), MOELM_OK);
  CU_ASSERT_TRUE_FATAL(
      moelm_mixture_prompt_log_joint(inf->model, inf->gate, &inf->task.mix, tokens, (int)n - 1, want_joint, NULL));
  for (int k = 0; k < K; k++) {
    CU_ASSERT_EQUAL(joint[k], want_joint[k]);
    CU_ASSERT_DOUBLE_EQUAL(post[k], 1.0 / (1.0 + exp(joint[1 - k] - joint[k])), 1e-12);
  }
  /* sampling from expert 1, stream 3, against the generator itself */
  const char *const gen_opts[] = {"sampling=1", "beam=2", "sampling_topk=10", "max_len_b=6", "seed=21", NULL};
  MoelmLMHypotheses *h = NULL;
  CU_ASSERT_EQUAL_FATAL(moelm_lm_generate(lm, tokens, 3, 1, 3, gen_opts, &h), MOELM_OK);
  MoelmGeneratorConfig cfg;
  moelm_generator_config_init(&cfg);
  cfg.sampling = TRUE;
  cfg.beam = 2;
  cfg.sampling_topk = 10;
  cfg.max_len_b = 6;
  cfg.seed = 21;
  cfg.bos = inf->task.mix.expert_token0 + 1;
  MoelmGenerator *gen = moelm_generator_new(inf->model, &cfg, NULL);
  for (int k = 0; k < K; k++)
    CU_ASSERT_TRUE(moelm_generator_ban_token(gen, inf->task.mix.expert_token0 + k, NULL));
  GPtrArray *want = moelm_generator_generate(gen, tokens, 3, 3, NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(want);
  CU_ASSERT_EQUAL(h->expert, 1);
  CU_ASSERT_EQUAL_FATAL(h->n, want->len);
  for (size_t i = 0; i < h->n; i++) {
    const MoelmHypothesis *w = g_ptr_array_index(want, i);
    CU_ASSERT_EQUAL_FATAL(h->hyps[i].n, (size_t)w->len);
    CU_ASSERT_EQUAL(memcmp(h->hyps[i].tokens, w->tokens, h->hyps[i].n * sizeof(int32_t)), 0);
    CU_ASSERT_EQUAL(memcmp(h->hyps[i].positional_scores, w->positional_scores, h->hyps[i].n * sizeof(float)), 0);
    CU_ASSERT_EQUAL(h->hyps[i].score, w->score);
    CU_ASSERT_EQUAL(memcmp(h->hyps[i].tokens, tokens, 3 * sizeof(int32_t)), 0); /* the prompt comes first */
  }
  g_ptr_array_unref(want);
  moelm_generator_free(gen);
  moelm_lm_hypotheses_free(h);

  /* argument errors name the problem */
  MoelmLMScores *s = NULL;
  const int32_t bad[] = {5, -1};
  CU_ASSERT_EQUAL(moelm_lm_score(lm, bad, 2, 0, MOELM_EXPERT_MIXTURE, &s), MOELM_E_INVALID_ARG);
  CU_ASSERT_PTR_NOT_NULL(strstr(moelm_last_error(), "token 1 is -1, outside the vocabulary"));
  CU_ASSERT_PTR_NULL(s);
  CU_ASSERT_EQUAL(moelm_lm_score(lm, tokens, n, 0, 7, &s), MOELM_E_INVALID_ARG);
  CU_ASSERT_PTR_NOT_NULL(strstr(moelm_last_error(), "expert 7: "));
  CU_ASSERT_EQUAL(moelm_lm_score(lm, tokens, n, n + 1, MOELM_EXPERT_MIXTURE, &s), MOELM_E_INVALID_ARG);
  CU_ASSERT_EQUAL(moelm_lm_generate(lm, tokens, 3, 0, 0, (const char *const[]){"beam=0", NULL}, &h),
                  MOELM_E_INVALID_ARG);
  CU_ASSERT_EQUAL(moelm_lm_generate(lm, tokens, 3, 0, 0, (const char *const[]){"top_p=0.9", NULL}, &h),
                  MOELM_E_INVALID_ARG);
  CU_ASSERT_PTR_NOT_NULL(strstr(moelm_last_error(), "unknown option 'top_p'"));
  CU_ASSERT_PTR_NULL(h);
  moelm_free(tokens);
  moelm_inference_free(inf);
  moelm_lm_close(lm);

  MoelmLM *dense = open_ok(fx->dense, fx->data, cpu1);
  const int32_t one[] = {5, 6};
  double p[1];
  CU_ASSERT_EQUAL(moelm_lm_num_experts(dense), 0);
  CU_ASSERT_EQUAL(moelm_lm_posterior(dense, one, 2, p, NULL), MOELM_E_INVALID_ARG);
  CU_ASSERT_EQUAL(moelm_lm_score(dense, one, 2, 0, MOELM_EXPERT_AUTO, &s), MOELM_E_INVALID_ARG);
  CU_ASSERT_PTR_NOT_NULL(strstr(moelm_last_error(), "expert auto: "));
  CU_ASSERT_EQUAL(moelm_lm_generate(dense, one, 2, 0, 0, NULL, &h), MOELM_E_INVALID_ARG);
  moelm_lm_close(dense);
}

static guint count_convert_dirs(void)
{
  GDir *d = g_dir_open(g_get_tmp_dir(), 0, NULL);
  guint n = 0;
  const char *name;
  while (d && (name = g_dir_read_name(d)) != NULL)
    n += g_str_has_prefix(name, "moelm-convert-");
  if (d)
    g_dir_close(d);
  return n;
}

/* The count back at `before`: a directory this process left stays, while one of a process
 * beside it (make check runs the Python tests, which convert too, in parallel) goes within
 * moments, so a different count is looked at again for up to 5 s before it counts. */
static guint convert_dirs_settled(guint before)
{
  guint n = count_convert_dirs();
  for (int i = 0; i < 50 && n != before; i++) {
    g_usleep(100000);
    n = count_convert_dirs();
  }
  return n;
}

/* fairseq's PyTorch checkpoint opens directly: converted into a temporary file, removed. */
static void test_fairseq_checkpoint(void)
{
  char *dir = moelm_test_srcpath("tests/torch/fixtures/dense"), *model = g_build_filename(dir, "model.pt", NULL);
  char *enc = moelm_test_srcpath("data-bin/gpt2/encoder.json"), *vocab = moelm_test_srcpath("data-bin/gpt2/vocab.bpe");
  char *o_enc = g_strconcat("gpt2_encoder_json=", enc, NULL), *o_vocab = g_strconcat("gpt2_vocab_bpe=", vocab, NULL);
  const char *const opts[] = {"device=cpu", "threads=1", o_enc, o_vocab, NULL};
  const guint before = count_convert_dirs();
  const char *paths[] = {model, dir};
  for (guint i = 0; i < G_N_ELEMENTS(paths); i++) {
    MoelmLM *lm = open_ok(paths[i], dir, opts);
    CU_ASSERT_EQUAL(moelm_lm_vocab_size(lm), 96);
    CU_ASSERT_STRING_EQUAL(moelm_lm_bpe(lm), "gpt2");
    CU_ASSERT_STRING_EQUAL(moelm_lm_checkpoint(lm), paths[i]);
    int32_t *t = NULL;
    size_t n = 0;
    char *text = NULL;
    CU_ASSERT_EQUAL_FATAL(moelm_lm_encode(lm, "The was a", 0, &t, &n), MOELM_OK);
    CU_ASSERT_EQUAL(n, 4);
    CU_ASSERT_EQUAL(moelm_lm_decode(lm, t, n, &text), MOELM_OK);
    CU_ASSERT_STRING_EQUAL(text, "The was a");
    MoelmLMScores *s = NULL;
    CU_ASSERT_EQUAL(moelm_lm_score(lm, t, n, 0, MOELM_EXPERT_MIXTURE, &s), MOELM_OK);
    CU_ASSERT_EQUAL(s->n, 3);
    CU_ASSERT_TRUE(s->sum < 0 && isfinite(s->sum));
    moelm_lm_scores_free(s);
    moelm_free(text);
    moelm_free(t);
    moelm_lm_close(lm);
  }
  CU_ASSERT_EQUAL(convert_dirs_settled(before), before);
  /* a bad one: the converter's message, naming the file given */
  char *bad = moelm_test_srcpath("tests/torch/fixtures/bad/evil-global.pt");
  expect_open_fails(bad, dir, opts, MOELM_E_CORRUPT, "GLOBAL 'os.system' is outside the allowed set");
  CU_ASSERT_PTR_NOT_NULL(strstr(moelm_last_error(), bad));
  CU_ASSERT_EQUAL(convert_dirs_settled(before), before);
  g_free(bad);
  g_free(o_enc);
  g_free(o_vocab);
  g_free(enc);
  g_free(vocab);
  g_free(model);
  g_free(dir);
}

MOELM_TEST_SUITE(api)
{
  CU_add_test(suite, "errors: codes, per-thread messages, options", test_errors);
  CU_add_test(suite, "scores, posterior, hypotheses: the library's", test_same_as_library);
  CU_add_test(suite, "fairseq's PyTorch checkpoint, converted when opened", test_fairseq_checkpoint);
}
