/* fairseq's published-model workflow end to end, on the fixtures: `moelm convert`, then
 * `preprocess --bpe gpt2` with the model's dict.txt, `eval-lm`, `generate` and `score` with
 * GPT-2's files; `score` on a sequence-level mixture; the commands' errors. */
#include "config.h"

#include <string.h>

#include <json-glib/json-glib.h>

#include "cli/cli-helpers.h"
#include "eval/mixture-cli-fixture.h"
#include "moelm-test.h"
#include "moelm/safetensors.h"

typedef struct {
  char *dir, *model_dir, *ckpt, *encoder, *vocab, *copa;
} Env;

static Env env;

static const Env *setup(void)
{
  if (env.dir)
    return &env;
  env.dir = moelm_test_tmpdir();
  env.model_dir = moelm_test_srcpath("tests/torch/fixtures/dense");
  env.ckpt = g_build_filename(env.dir, "dense.pt", NULL);
  env.encoder = moelm_test_srcpath("data-bin/gpt2/encoder.json");
  env.vocab = moelm_test_srcpath("data-bin/gpt2/vocab.bpe");
  env.copa = moelm_test_srcpath("examples/copa/copa-style.jsonl");
  const char *args[] = {"convert", "--from", "fairseq", env.model_dir, "--save", env.ckpt, NULL};
  char *out = NULL, *err = NULL;
  const int rc = moelm_test_run_cli(args, NULL, &out, &err);
  if (rc != 0)
    g_printerr("\n  convert: %s\n", err);
  CU_ASSERT_EQUAL_FATAL(rc, 0);
  CU_ASSERT_PTR_NOT_NULL(strstr(out, "fairseq transformer_lm_gpt, 2 layers, 16-dim, vocabulary 96; 1 file read"));
  CU_ASSERT_PTR_NOT_NULL(strstr(out, "6016 parameters in 35 tensors"));
  g_free(out);
  g_free(err);
  return &env;
}

static void check_fails(const char *const *args, int status, const char *needle)
{
  mixture_cli_check_fails(args, NULL, status, needle);
}

static void test_convert(void)
{
  const Env *e = setup();
  char *half = g_build_filename(e->dir, "half.pt", NULL);
  const char *args[] = {"convert", "--from", "fairseq", e->model_dir, "--save", half, "--dtype", "bf16", NULL};
  CU_ASSERT_EQUAL(moelm_test_run_cli(args, NULL, NULL, NULL), 0);
  MoelmSafetensors *st = moelm_safetensors_open(half, NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(st);
  CU_ASSERT_EQUAL(moelm_safetensors_find(st, "decoder.layers.0.fc1.weight")->dtype, MOELM_DT_BF16);
  moelm_safetensors_close(st);
  char *out = g_build_filename(e->dir, "never.pt", NULL), *bad = moelm_test_srcpath("tests/torch/fixtures/bad");
  char *evil = g_build_filename(bad, "evil-global.pt", NULL), *moe = moelm_test_srcpath("tests/torch/fixtures/moe");
  const char *no_from[] = {"convert", e->model_dir, "--save", out, NULL};
  check_fails(no_from, 2, "expected --from fairseq");
  const char *bad_from[] = {"convert", "--from", "megatron", e->model_dir, "--save", out, NULL};
  check_fails(bad_from, 2, "--from");
  const char *bad_dtype[] = {"convert", "--from", "fairseq", e->model_dir, "--save", out, "--dtype", "fp8", NULL};
  check_fails(bad_dtype, 2, "--dtype");
  const char *hostile[] = {"convert", "--from", "fairseq", evil, "--save", out, NULL};
  check_fails(hostile, 1, "GLOBAL 'os.system' is outside the allowed set");
  CU_ASSERT_FALSE(g_file_test(out, G_FILE_TEST_EXISTS));
  /* the MoE directory: shared file + 2 rank files */
  const char *sharded[] = {"convert", "--from", "fairseq", moe, "--save", out, NULL};
  char *stdout_text = NULL;
  CU_ASSERT_EQUAL(moelm_test_run_cli(sharded, NULL, &stdout_text, NULL), 0);
  CU_ASSERT_TRUE(stdout_text && strstr(stdout_text, "4 experts every 2 layers; 3 files read") != NULL);
  g_free(stdout_text);
  g_free(half);
  g_free(out);
  g_free(bad);
  g_free(evil);
  g_free(moe);
}

/* The example's texts as a corpus: preprocess with the model's dictionary, eval-lm, generate. */
static void test_preprocess_eval_generate(void)
{
  const Env *e = setup();
  char *text = g_strdup("The kettle began to whistle.\n  The water in it was boiling.  \n\nShe got wet in the rain.\n"
                        "The baby was hungry.\r\nIt melted.\n");
  char *txt = cli_write(e->dir, "copa.txt", text);
  char *dict = g_build_filename(e->model_dir, "dict.txt", NULL);
  char *bins[2];
  for (int w = 0; w < 2; w++) {
    char *dest = g_strdup_printf("%s/bin%d", e->dir, w);
    const char *args[] = {"preprocess", "--only-source", "--trainpref", txt, "--validpref", txt, "--destdir", dest,
                          "--srcdict", dict, "--bpe", "gpt2", "--gpt2-encoder-json", e->encoder, "--gpt2-vocab-bpe",
                          e->vocab, "--workers", w == 0 ? "1" : "3", NULL};
    char *err = NULL;
    const int rc = moelm_test_run_cli(args, NULL, NULL, &err);
    if (rc != 0)
      g_printerr("\n  preprocess: %s\n", err);
    CU_ASSERT_EQUAL_FATAL(rc, 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "gpt2_encoder_json="));
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "6 sents, 34 tokens, 0.0% replaced")); /* 28 ids + 6 </s>, all in dict.txt */
    g_free(err);
    bins[w] = dest;
  }
  char *a = g_build_filename(bins[0], "valid.bin", NULL), *b = g_build_filename(bins[1], "valid.bin", NULL);
  CU_ASSERT_TRUE(cli_same_file(a, b));
  g_free(a);
  g_free(b);
  const char *no_files[] = {"preprocess", "--only-source", "--trainpref", txt, "--destdir", bins[0], "--bpe", "gpt2",
                            NULL};
  check_fails(no_files, 2, "--bpe gpt2 needs --gpt2-encoder-json and --gpt2-vocab-bpe");

  /* eval-lm: GPT-2 tokens shown as text, merged into words with --remove-bpe gpt2 */
  const char *eval[] = {"eval-lm", bins[0], "--path", e->ckpt, "--gen-subset", "valid", "--sample-break-mode", "eos",
                        "--output-word-probs", "--bpe", "gpt2", "--gpt2-encoder-json", e->encoder,
                        "--gpt2-vocab-bpe", e->vocab, "--remove-bpe", "gpt2", "--threads", "1", NULL};
  char *out = NULL, *err = NULL;
  int rc = moelm_test_run_cli(eval, NULL, &out, &err);
  if (rc != 0)
    g_printerr("\n  eval-lm: %s\n", err);
  CU_ASSERT_EQUAL(rc, 0);
  CU_ASSERT_PTR_NOT_NULL(strstr(out, "kettle ["));
  CU_ASSERT_PTR_NOT_NULL(strstr(out, "whistle. ["));   /* "." joins its word */
  CU_ASSERT_PTR_NOT_NULL(strstr(out, "Loss (base 2): "));
  g_free(out);
  g_free(err);
  const char *remove_only[] = {"eval-lm", bins[0], "--path", e->ckpt, "--gen-subset", "valid", "--remove-bpe", "gpt2",
                               NULL};
  check_fails(remove_only, 1, "--remove-bpe gpt2 needs --bpe gpt2");

  /* generate: the prompt GPT-2-encoded, D- lines decoded to text */
  const char *gen[] = {"generate", bins[0], "--path", e->ckpt, "--bpe", "gpt2", "--gpt2-encoder-json", e->encoder,
                       "--gpt2-vocab-bpe", e->vocab, "--beam", "1", "--max-len-b", "4", "--threads", "1", NULL};
  rc = moelm_test_run_cli(gen, "  The water in\n", &out, &err);
  if (rc != 0)
    g_printerr("\n  generate: %s\n", err);
  CU_ASSERT_EQUAL(rc, 0);
  CU_ASSERT_PTR_NOT_NULL(strstr(out, "S-0\t464 1660 287\n")); /* "The", " water", " in" */
  const char *d = strstr(out, "D-0\t");
  CU_ASSERT_PTR_NOT_NULL_FATAL(d);
  d = strchr(d + 4, '\t') + 1; /* after the score: text, not ids */
  CU_ASSERT_FALSE(g_ascii_isdigit(d[0]) && strchr(d, ' ') && g_ascii_isdigit(strchr(d, ' ')[1]));
  g_free(out);
  g_free(err);
  for (int w = 0; w < 2; w++)
    g_free(bins[w]);
  g_free(dict);
  g_free(txt);
  g_free(text);
}

static void test_score(void)
{
  const Env *e = setup();
  const char *args[] = {"score", e->model_dir, "--path", e->ckpt, "--input", e->copa, "--bpe", "gpt2",
                        "--gpt2-encoder-json", e->encoder, "--gpt2-vocab-bpe", e->vocab,
                        "--replace-newlines-with-eos", "--threads", "1", NULL};
  char *out = NULL, *err = NULL;
  int rc = moelm_test_run_cli(args, NULL, &out, &err);
  if (rc != 0)
    g_printerr("\n  score: %s\n", err);
  CU_ASSERT_EQUAL_FATAL(rc, 0);
  CU_ASSERT_PTR_NOT_NULL(strstr(out, "S-0\tThe kettle began to whistle. What was the CAUSE of this?\\n\n"));
  CU_ASSERT_PTR_NOT_NULL(strstr(out, "\t7\tThe water in it was boiling.\n"));
  CU_ASSERT_PTR_NOT_NULL(strstr(out, "\nA-7\t"));
  CU_ASSERT_PTR_NOT_NULL(strstr(out, "\naccuracy "));
  CU_ASSERT_PTR_NOT_NULL(strstr(out, " of 8), length-normalised accuracy "));
  g_free(out);
  g_free(err);

  /* --jsonl: one object per item and the accuracy; the same sums as the text output */
  const char *extra[] = {"--jsonl", NULL};
  rc = moelm_test_run_cli2(args, extra, NULL, &out, NULL);
  CU_ASSERT_EQUAL_FATAL(rc, 0);
  char **lines = g_strsplit(out, "\n", -1);
  CU_ASSERT_EQUAL(g_strv_length(lines), 10); /* 8 items, the summary, "" */
  JsonParser *p = json_parser_new();
  CU_ASSERT_TRUE_FATAL(json_parser_load_from_data(p, lines[0], -1, NULL));
  JsonObject *o = json_node_get_object(json_parser_get_root(p));
  JsonArray *scores = json_object_get_array_member(o, "scores");
  CU_ASSERT_EQUAL(json_array_get_length(scores), 2);
  JsonObject *c0 = json_array_get_object_element(scores, 0);
  CU_ASSERT_EQUAL(json_object_get_int_member(c0, "tokens"), 7);
  CU_ASSERT_EQUAL(json_array_get_length(json_object_get_array_member(c0, "positional_scores")), 7);
  CU_ASSERT_TRUE(json_parser_load_from_data(p, lines[8], -1, NULL));
  CU_ASSERT_EQUAL(json_object_get_int_member(json_node_get_object(json_parser_get_root(p)), "items"), 8);
  g_object_unref(p);
  g_strfreev(lines);
  g_free(out);

  /* errors */
  char *bad = cli_write(e->dir, "bad.jsonl", "{\"context\": \"a\", \"choices\": [\" b\"]}\n{oops\n");
  char *label = cli_write(e->dir, "label.jsonl", "{\"context\": \"a\", \"choices\": [\" b\"], \"label\": 3}\n");
  const char *bad_json[] = {"score", e->model_dir, "--path", e->ckpt, "--input", bad, NULL};
  check_fails(bad_json, 1, "bad.jsonl:2: not JSON");
  const char *bad_label[] = {"score", e->model_dir, "--path", e->ckpt, "--input", label, NULL};
  check_fails(bad_label, 1, "label.jsonl:1: \"label\" must be the index of a choice");
  const char *expert[] = {"score", e->model_dir, "--path", e->ckpt, "--input", label, "--gen-expert", "0", NULL};
  check_fails(expert, 1, "--gen-expert needs a --task language_model_moe checkpoint");
  const char *no_input[] = {"score", e->model_dir, "--path", e->ckpt, NULL};
  check_fails(no_input, 2, "--input");
  g_free(bad);
  g_free(label);
}

/* A mixture: the marginal by default; --gen-expert K and auto name the expert used. */
static void test_score_mixture(void)
{
  const MixtureCliFixture *f = mixture_cli_fixture();
  const Env *e = setup();
  char *dict_path = g_build_filename(f->data, "dict.txt", NULL);
  char *dict_text = moelm_test_read_file(dict_path, NULL);
  char **w = g_strsplit_set(dict_text, " \n", 9); /* w0 c0 w1 c1 w2 c2 ... */
  char *item = g_strdup_printf("{\"context\": \"%s %s\", \"choices\": [\" %s\", \" %s %s\"], \"label\": 0}\n", w[0],
                               w[2], w[4], w[6], w[0]);
  char *input = cli_write(e->dir, "mix.jsonl", item);
  for (int mode = 0; mode < 3; mode++) {
    const char *args[] = {"score", f->data, "--path", f->mixture, "--input", input, "--threads", "1",
                          mode ? "--gen-expert" : NULL, mode == 1 ? "1" : "auto", NULL};
    char *out = NULL, *err = NULL;
    const int rc = moelm_test_run_cli(args, NULL, &out, &err);
    if (rc != 0)
      g_printerr("\n  score mixture: %s\n", err);
    CU_ASSERT_EQUAL(rc, 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "\nA-0\t"));
    CU_ASSERT_EQUAL(strstr(out, "expert=") != NULL, mode > 0);
    if (mode == 1)
      CU_ASSERT_PTR_NOT_NULL(strstr(out, "expert=1"));
    g_free(out);
    g_free(err);
  }
  const char *bad_expert[] = {"score", f->data, "--path", f->mixture, "--input", input, "--gen-expert", "7", NULL};
  check_fails(bad_expert, 1, "--gen-expert 7: choose auto or an expert 0..1");
  g_free(input);
  g_free(item);
  g_strfreev(w);
  g_free(dict_text);
  g_free(dict_path);
}

MOELM_TEST_SUITE(fairseq_cli)
{
  CU_add_test(suite, "convert: dense, bf16, the MoE directory, errors", test_convert);
  CU_add_test(suite, "preprocess --bpe gpt2, eval-lm and generate on a converted model", test_preprocess_eval_generate);
  CU_add_test(suite, "score: the COPA-style example, --jsonl, errors", test_score);
  CU_add_test(suite, "score on a mixture: marginal, --gen-expert K, auto", test_score_mixture);
}
