/* Hostile checkpoints against eval-lm and generate: each crafted copy of a good checkpoint
 * (one metadata member of the wrong type or out of bounds, metadata that disagrees with the
 * tensors, a NaN weight) is refused with one error line naming the file and the field, exit
 * 1, before anything of its size is allocated. */
#include "config.h"

#include <math.h>
#include <string.h>

#include <glib/gstdio.h>

#include "cli/cli-helpers.h"
#include "crafted.h"
#include "eval/mixture-cli-fixture.h"
#include "moelm-test.h"

static char *tmp;

/* One crafted member: its JSON value (NULL: removed) and what the error must say. */
typedef struct {
  const char *member, *value, *needle;
} Crafted;

static void eval_fails(const char *ckpt, const char *needle1, const char *needle2)
{
  const MixtureCliFixture *fx = mixture_cli_fixture();
  const char *args[] = {"eval-lm", fx->data, "--path", ckpt, "--threads", "1", NULL};
  const char *needles[] = {ckpt, needle1, needle2, NULL};
  crafted_check_fails(args, 1, needles);
}

static void model_member_fails(const char *member, const char *value, const char *needle)
{
  const MixtureCliFixture *fx = mixture_cli_fixture();
  char *name = g_strdup_printf("model-%s.pt", member);
  char *ck = crafted_member(tmp, name, fx->dense, "model", member, value);
  eval_fails(ck, member, needle);
  g_free(ck);
  g_free(name);
}

static void test_model_config_types_and_bounds(void)
{
  tmp = moelm_test_tmpdir();
  static const Crafted cases[] = {
    {"activation_fn", "1", "must be a string"}, /* was a NULL strcmp: SIGSEGV */
    {"decoder_embed_dim", "4294967360", "1..65536"}, /* 2^32 + 64 wrapped to 64 */
    {"max_target_positions", "2147483647", "1..16777216"}, /* signed overflow, abort */
    {"decoder_layers", "1e8", "must be an integer"},
    {"decoder_layers", "-1", "0..65536"},
    {"dropout", "\"0.1\"", "must be a finite number"},
    {"dropout", "1.5", "[0, 1)"},
    {"decoder_normalize_before", "1", "true or false"},
    {"moe_expert_count", "1000000000", "0..1048576"},
    {"arch", NULL, "missing field 'arch'"},
    {"activation_fn", "\"swish\"", "swish"},
    {"activation_fn", "\"re\\nlu\"", "'re\\x0alu'"}, /* one line */
  };
  for (gsize i = 0; i < G_N_ELEMENTS(cases); i++)
    model_member_fails(cases[i].member, cases[i].value, cases[i].needle);
  moelm_test_rmtree(tmp);
  g_free(tmp);
}

static void task_member_fails(const char *member, const char *value, const char *needle)
{
  const MixtureCliFixture *fx = mixture_cli_fixture();
  char *name = g_strdup_printf("task-%s.pt", member);
  char *ck = crafted_member(tmp, name, fx->mixture, "task", member, value);
  eval_fails(ck, "task metadata", needle);
  g_free(ck);
  g_free(name);
}

/* The mixture's task metadata: num_experts of 10^9 appended 10^9 expert tokens to the
 * dictionary before noticing, a gating context of 2^31 - 1 aborted in an allocation. */
static void test_task_metadata(void)
{
  tmp = moelm_test_tmpdir();
  static const Crafted cases[] = {
    {"num_experts", "1000000000", "'num_experts' must be an integer in 1..1048576"},
    {"num_experts", "1000000", "do not end the model's vocabulary"},
    {"num_experts", "0", "'num_experts' must be an integer in 1..1048576"},
    {"gating_context", "2147483647", "'gating_context' must be an integer in 0..1048576"},
    {"gating_context", "-1", "'gating_context' must be an integer in 0..1048576"},
    {"method", "\"xMoEup\"", "--method must be one of"},
    {"method", "3", "'method' must be a string"},
    {"task", "\"translation\"", "unknown task 'translation'"},
    {"task", "\"l\\nguage\"", "unknown task 'l\\x0aguage'"}, /* a message of two lines (fuzz-checkpoint) */
    {"method", "\"h\\nMoEup\"", "(got 'h\\x0aMoEup')"},
    {"sample_break_mode", "\"a\\rb\"", "a\\x0db"},
    {"tokens_per_sample", "\"32\"", "'tokens_per_sample' must be an integer"},
    {"sample_break_mode", "\"sentence\"", "sentence"},
    {"expert_token0", NULL, "missing field 'expert_token0'"},
    {"expert_token0", "3", "'expert_token0' must be an integer in 4.."},
  };
  for (gsize i = 0; i < G_N_ELEMENTS(cases); i++)
    task_member_fails(cases[i].member, cases[i].value, cases[i].needle);
  const MixtureCliFixture *fx = mixture_cli_fixture();
  char *ck = crafted_meta(tmp, "task-array.pt", fx->mixture, "task", "[]");
  eval_fails(ck, "task metadata", "not a JSON object");
  g_free(ck);
  moelm_test_rmtree(tmp);
  g_free(tmp);
}

/* A resumed run reads train_state: a negative epoch once wrote checkpoint-3.pt, a best loss
 * that is not a number never let checkpoint_best.pt be written again. */
static void resume_fails(const char *member, const char *value, const char *needle)
{
  const MixtureCliFixture *fx = mixture_cli_fixture();
  char *dir = g_build_filename(tmp, member, NULL);
  g_mkdir(dir, 0755);
  char *ck = value ? crafted_member(dir, "checkpoint_last.pt", fx->dense, "train_state", member, value)
                   : crafted_meta(dir, "checkpoint_last.pt", fx->dense, "train_state", NULL);
  GPtrArray *before = cli_list_dir(dir);
  const char *args[] = {"train", fx->data, "--arch", "transformer_lm", "--decoder-layers", "1", "--decoder-embed-dim",
                        "16", "--decoder-ffn-embed-dim", "32", "--decoder-attention-heads", "2", "--tokens-per-sample",
                        "32", "--batch-size", "4", "--max-update", "5", "--threads", "1", "--save-dir", dir, NULL};
  const char *needles[] = {ck, "train_state", needle, NULL};
  crafted_check_fails(args, 1, needles);
  GPtrArray *after = cli_list_dir(dir);
  CU_ASSERT_EQUAL(before->len, after->len);
  for (guint i = 0; i < MIN(before->len, after->len); i++)
    CU_ASSERT_STRING_EQUAL(g_ptr_array_index(before, i), g_ptr_array_index(after, i));
  g_ptr_array_unref(before);
  g_ptr_array_unref(after);
  g_free(ck);
  g_free(dir);
}

static void test_train_state(void)
{
  tmp = moelm_test_tmpdir();
  static const Crafted cases[] = {
    {"epoch", "-3", "'epoch' must be an integer in 1.."},
    {"epoch", "\"1\"", "'epoch' must be an integer"},
    {"num_updates", "-1", "'num_updates' must be an integer in 0.."},
    {"iterations_in_epoch", "-2", "'iterations_in_epoch' must be an integer in 0.."},
    {"best_loss", "\"low\"", "'best_loss' must be a finite number"},
    {"best_loss", "[1]", "'best_loss' must be a finite number"},
    {"num_bad_validations", "-1", "'num_bad_validations'"},
    {"end_of_epoch", "1", "'end_of_epoch' must be true or false"},
    {"whole", NULL, "missing"},
  };
  for (gsize i = 0; i < G_N_ELEMENTS(cases); i++)
    resume_fails(cases[i].member, cases[i].value, cases[i].needle);
  moelm_test_rmtree(tmp);
  g_free(tmp);
}

/* Within the bounds but not what the tensors hold: refused by counting, not by allocating. */
static void test_model_config_against_tensors(void)
{
  tmp = moelm_test_tmpdir();
  const MixtureCliFixture *fx = mixture_cli_fixture();
  char *ck = crafted_member(tmp, "layers.pt", fx->dense, "model", "decoder_layers", "60000");
  eval_fails(ck, "decoder_layers 60000", "metadata and tensors disagree");
  g_free(ck);
  ck = crafted_member(tmp, "experts.pt", fx->dense, "model", "moe_freq", "1");
  char *ck2 = crafted_member(tmp, "experts2.pt", ck, "model", "moe_expert_count", "1000000");
  eval_fails(ck2, "moe_expert_count 1000000", "metadata and tensors disagree");
  g_free(ck2);
  g_free(ck);
  ck = crafted_member(tmp, "vocab.pt", fx->dense, "model", "vocab_size", "100000");
  eval_fails(ck, "decoder.embed_tokens.weight", "vocab_size 100000");
  g_free(ck);
  moelm_test_rmtree(tmp);
  g_free(tmp);
}

static void test_metadata_not_strict_json(void)
{
  tmp = moelm_test_tmpdir();
  const MixtureCliFixture *fx = mixture_cli_fixture();
  const struct {
    const char *text, *needle;
  } cases[] = {
    {"{'decoder_layers': 1}", "not valid JSON"},
    {"{\"a\": 1} trailing", "not valid JSON"},
    {"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]", "not valid JSON"},
    {"[1, 2]", "not a JSON object"},
  };
  for (gsize i = 0; i < G_N_ELEMENTS(cases); i++) {
    char *name = g_strdup_printf("meta-%zu.pt", i);
    char *ck = crafted_meta(tmp, name, fx->dense, "model", cases[i].text);
    eval_fails(ck, "model", cases[i].needle);
    g_free(ck);
    g_free(name);
  }
  moelm_test_rmtree(tmp);
  g_free(tmp);
}

/* NaN and Inf weights: eval-lm printed "Loss -nan" and generate nothing, both with exit 0. */
static void test_non_finite_weights(void)
{
  tmp = moelm_test_tmpdir();
  const MixtureCliFixture *fx = mixture_cli_fixture();
  const float bad[] = {NAN, INFINITY};
  for (int i = 0; i < 2; i++) {
    char *ck = crafted_weight(tmp, i ? "inf.pt" : "nan.pt", fx->dense, "decoder.layers.0.fc1.weight", 7, bad[i]);
    eval_fails(ck, "decoder.layers.0.fc1.weight", i ? "Inf" : "NaN");
    const char *gen[] = {"generate", fx->data, "--path", ck, "--threads", "1", NULL};
    const char *needles[] = {ck, "decoder.layers.0.fc1.weight", NULL};
    char *err = NULL;
    const int rc = moelm_test_run_cli(gen, "the\n", NULL, &err);
    crafted_check_error(rc, err, 1, needles);
    g_free(err);
    g_free(ck);
  }
  moelm_test_rmtree(tmp);
  g_free(tmp);
}

MOELM_TEST_SUITE(hostile_checkpoint)
{
  CU_add_test(suite, "model config: every field's type and bounds", test_model_config_types_and_bounds);
  CU_add_test(suite, "model config against the tensors in the file", test_model_config_against_tensors);
  CU_add_test(suite, "task metadata: types, bounds, the experts against the vocabulary", test_task_metadata);
  CU_add_test(suite, "metadata that is not strict JSON", test_metadata_not_strict_json);
  CU_add_test(suite, "train_state of a resumed run", test_train_state);
  CU_add_test(suite, "NaN and Inf weights", test_non_finite_weights);
}
