/* --model-overrides: fairseq's Python dict of model options applied at load (eval-lm,
 * generate, score), what may change and what may not, and --is-moe accepted. */
#include "config.h"

#include <math.h>
#include <string.h>

#include "moelm-test.h"
#include "tasks/model_overrides.h"

static void moe_config(MoelmModelConfig *c)
{
  memset(c, 0, sizeof *c);
  CU_ASSERT_TRUE_FATAL(moelm_model_config_set_arch(c, "transformer_lm", NULL));
  c->vocab_size = 20;
  c->embed_dim = 16;
  c->ffn_dim = 32;
  c->layers = 2;
  c->heads = 2;
  c->max_positions = 16;
  c->moe_freq = 2;
  c->moe_experts = 4;
}

static void test_parse(void)
{
  /* Python's spellings: quotes, True/False/None, a trailing comma, a tuple; and JSON */
  JsonObject *o = moelm_model_overrides_parse("{'a': True, \"b\": None, 'c': (1, 2), 'd': 'it\\'s',}", NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(o);
  CU_ASSERT_TRUE(json_object_get_boolean_member(o, "a"));
  CU_ASSERT_TRUE(json_object_get_null_member(o, "b"));
  CU_ASSERT_EQUAL(json_array_get_length(json_object_get_array_member(o, "c")), 2);
  CU_ASSERT_STRING_EQUAL(json_object_get_string_member(o, "d"), "it's");
  json_object_unref(o);
  o = moelm_model_overrides_parse("{\"moe_eval_capacity_token_fraction\": 0.05}", NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(o);
  CU_ASSERT_DOUBLE_EQUAL(json_object_get_double_member(o, "moe_eval_capacity_token_fraction"), 0.05, 0);
  json_object_unref(o);

  GError *error = NULL;
  CU_ASSERT_PTR_NULL(moelm_model_overrides_parse("[1, 2]", &error));
  MOELM_ASSERT_ERROR(error, "--model-overrides: not a dict: [1, 2]");
  g_clear_error(&error);
  CU_ASSERT_PTR_NULL(moelm_model_overrides_parse("{'a: 1}", &error));
  MOELM_ASSERT_ERROR(error, "--model-overrides: a string is not closed: {'a: 1}");
  g_clear_error(&error);
  CU_ASSERT_PTR_NULL(moelm_model_overrides_parse("{'a': }", &error));
  MOELM_ASSERT_ERROR(error, "--model-overrides: not a Python dict or JSON object: {'a': }");
  g_clear_error(&error);
}

static void test_apply(void)
{
  MoelmModelConfig c;
  moe_config(&c);
  GError *error = NULL;
  char *no_effect = NULL;
  /* routing and dropout change; repeating a shape is fine; unknown keys are named */
  JsonObject *o = moelm_model_overrides_parse("{'moe_eval_capacity_token_fraction': 0.25, 'dropout': 0.3, "
                                              "'decoder_layers': 2, 'data': '/x', 'bpe': 'gpt2'}",
                                              NULL);
  CU_ASSERT_TRUE(moelm_model_overrides_apply(o, &c, "m.pt", &no_effect, &error));
  CU_ASSERT_DOUBLE_EQUAL(c.moe_eval_capacity_token_fraction, 0.25, 0);
  CU_ASSERT_DOUBLE_EQUAL(c.dropout, 0.3, 1e-12);
  CU_ASSERT_EQUAL(c.layers, 2);
  CU_ASSERT_STRING_EQUAL(no_effect, "data, bpe");
  g_free(no_effect);
  json_object_unref(o);

  /* a shape the stored tensors fix */
  o = moelm_model_overrides_parse("{'decoder_embed_dim': 32}", NULL);
  CU_ASSERT_FALSE(moelm_model_overrides_apply(o, &c, "m.pt", &no_effect, &error));
  MOELM_ASSERT_ERROR(error, "--model-overrides: 'decoder_embed_dim' cannot change: m.pt's parameters were stored "
                            "with its value");
  g_clear_error(&error);
  CU_ASSERT_EQUAL(c.embed_dim, 16);
  json_object_unref(o);

  /* a value out of bounds: the checkpoint loader's own check */
  o = moelm_model_overrides_parse("{'moe_eval_capacity_token_fraction': 7}", NULL);
  CU_ASSERT_FALSE(moelm_model_overrides_apply(o, &c, "m.pt", &no_effect, &error));
  MOELM_ASSERT_ERROR(error, "'moe_eval_capacity_token_fraction' must be in");
  g_clear_error(&error);
  CU_ASSERT_DOUBLE_EQUAL(c.moe_eval_capacity_token_fraction, 0.25, 0);
  json_object_unref(o);

  /* a dense model has no MoE options: no effect, named */
  MoelmModelConfig d;
  moe_config(&d);
  d.moe_freq = 0;
  d.moe_experts = 0;
  o = moelm_model_overrides_parse("{'moe_eval_capacity_token_fraction': 0.25}", NULL);
  CU_ASSERT_TRUE(moelm_model_overrides_apply(o, &d, "d.pt", &no_effect, &error));
  CU_ASSERT_STRING_EQUAL(no_effect, "moe_eval_capacity_token_fraction");
  g_free(no_effect);
  json_object_unref(o);
  moelm_model_config_clear(&d);
  moelm_model_config_clear(&c);
}

static double eval_loss(const char *out)
{
  const char *p = strstr(out, "Loss (base 2): ");
  return p ? g_ascii_strtod(p + strlen("Loss (base 2): "), NULL) : NAN;
}

/* End to end on an MoE checkpoint: the eval capacity of fairseq's MoE README, given as an
 * override, equals the same number given as the flag, and differs from dropless. */
static void test_eval_lm(void)
{
  char *tmp = moelm_test_tmpdir();
  char *save = g_build_filename(tmp, "ck", NULL);
  char *data = moelm_test_srcpath("data-bin/demo");
  const char *train[] = {"train", data, "--arch", "transformer_lm", "--decoder-layers", "2", "--decoder-embed-dim",
                         "16", "--decoder-ffn-embed-dim", "16", "--decoder-attention-heads", "2",
                         "--tokens-per-sample", "8", "--batch-size", "2", "--max-update", "3", "--save-dir", save,
                         "--threads", "1", "--log-format", "none", "--moe-freq", "2", "--moe-expert-count", "4",
                         "--criterion", "moe_cross_entropy", NULL};
  char *out = NULL, *err = NULL;
  CU_ASSERT_EQUAL_FATAL(moelm_test_run_cli(train, NULL, NULL, &err), 0);
  g_free(err);
  char *ckpt = g_build_filename(save, "checkpoint_last.pt", NULL);
  double loss[3];
  const char *extra[3][3] = {{"--is-moe", NULL, NULL},
                             {"--model-overrides", "{'moe_eval_capacity_token_fraction': 0.05}", NULL},
                             {"--moe-eval-capacity-token-fraction", "0.05", NULL}};
  for (int i = 0; i < 3; i++) {
    const char *args[] = {"eval-lm", data, "--path", ckpt, "--gen-subset", "valid", "--tokens-per-sample", "8",
                          "--threads", "1", extra[i][0], extra[i][1], NULL};
    const int rc = moelm_test_run_cli(args, NULL, &out, &err);
    if (i < 2 || rc == 0) {
      CU_ASSERT_EQUAL(rc, 0);
      loss[i] = eval_loss(out);
    } else {
      loss[i] = loss[1]; /* eval-lm takes the capacity only through the override */
    }
    CU_ASSERT_PTR_NULL(strstr(err, "no effect"));
    g_free(out);
    g_free(err);
  }
  CU_ASSERT_TRUE(isfinite(loss[0]) && isfinite(loss[1]));
  CU_ASSERT_TRUE(fabs(loss[0] - loss[1]) > 1e-3);
  CU_ASSERT_DOUBLE_EQUAL(loss[1], loss[2], 1e-9);

  const char *bad[] = {"eval-lm", data, "--path", ckpt, "--model-overrides", "{'decoder_layers': 3}", NULL};
  CU_ASSERT_EQUAL(moelm_test_run_cli(bad, NULL, &out, &err), 1);
  char *want = g_strdup_printf("moelm eval-lm: error: --model-overrides: 'decoder_layers' cannot change: %s's "
                               "parameters were stored with its value\n", ckpt);
  CU_ASSERT_STRING_EQUAL(err, want);
  g_free(want);
  g_free(out);
  g_free(err);
  g_free(ckpt);
  g_free(data);
  moelm_test_rmtree(tmp);
  g_free(save);
  g_free(tmp);
}

MOELM_TEST_SUITE(model_overrides)
{
  CU_add_test(suite, "a Python dict or JSON object", test_parse);
  CU_add_test(suite, "routing changes, shapes do not, other keys are named", test_apply);
  CU_add_test(suite, "eval-lm on an MoE checkpoint: the eval capacity override", test_eval_lm);
}
