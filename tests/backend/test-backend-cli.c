/* Choosing the backend from the command line, and the error channel end to end: a device op
 * that fails (injected on the CPU with --inject-device-failure N) ends train, eval-lm and
 * generate with one clear line and a non-zero exit, and the last checkpoint stays intact;
 * the bf16-storage CPU variant trains and scores close to fp32. */
#include "config.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli-helpers.h"
#include "moelm-test.h"

typedef struct {
  char *tmp, *data;
} Fixture;

static void fixture_init(Fixture *f)
{
  f->tmp = moelm_test_tmpdir();
  char *text = cli_generate_text(60000, 7);
  char *train = cli_write(f->tmp, "train.txt", text);
  f->data = cli_path(f->tmp, "data");
  const char *args[] = {"preprocess", "--only-source", "--trainpref", train, "--validpref", train,
                        "--destdir",  f->data,         NULL};
  CU_ASSERT_EQUAL_FATAL(moelm_test_run_cli(args, NULL, NULL, NULL), 0);
  g_free(train);
  g_free(text);
}

static void fixture_clear(Fixture *f)
{
  moelm_test_rmtree(f->tmp);
  g_free(f->tmp);
  g_free(f->data);
}

/* A tiny training run into SAVE; extra flags appended. Returns the exit status. */
static int train(const Fixture *f, const char *save, const char *const *extra, char **out, char **err)
{
  char *dir = cli_path(f->tmp, save);
  const char *base[] = {"train", f->data, "--save-dir", dir, "--arch", "transformer_lm", "--decoder-layers", "2",
                        "--decoder-embed-dim", "32", "--decoder-ffn-embed-dim", "64", "--decoder-attention-heads", "2",
                        "--tokens-per-sample", "32", "--max-tokens", "256", "--lr", "0.002", "--optimizer", "adam",
                        "--log-interval", "1", "--no-epoch-checkpoints", "--threads", "1", "--seed", "5", NULL};
  int rc = moelm_test_run_cli2(base, extra, NULL, out, err);
  g_free(dir);
  return rc;
}

/* The number of stderr lines that are "moelm CMD: error: ..." and contain `needle`, and
 * whether they are the only error lines. */
static void assert_one_error(const char *err, const char *cmd, const char *needle)
{
  int errors = 0, matching = 0;
  char *prefix = g_strdup_printf("moelm %s: error:", cmd);
  gchar **lines = g_strsplit(err ? err : "", "\n", -1);
  for (gchar **l = lines; *l; l++)
    if (strstr(*l, prefix)) {
      errors++;
      matching += strstr(*l, needle) != NULL;
    }
  if (errors != 1 || matching != 1)
    g_printerr("\n  stderr: %s (expected one '%s' line naming '%s')\n", err, prefix, needle);
  CU_ASSERT_EQUAL(errors, 1);
  CU_ASSERT_EQUAL(matching, 1);
  g_strfreev(lines);
  g_free(prefix);
}

static void test_injected_failure(void)
{
  Fixture f;
  fixture_init(&f);
  /* a healthy run that saves every 2 updates, as the reference of what must stay intact */
  const char *every2[] = {"--max-update", "8", "--save-interval-updates", "2", "--disable-validation", NULL};
  CU_ASSERT_EQUAL_FATAL(train(&f, "ok", every2, NULL, NULL), 0);
  /* fail in the middle of update 6 (9 linears per update: 2 layers x (qkv, out, fc1, fc2) + the
   * output projection) */
  const char *fail[] = {"--max-update", "8", "--save-interval-updates", "2", "--disable-validation",
                        "--inject-device-failure", "50", NULL};
  char *err = NULL;
  CU_ASSERT_EQUAL(train(&f, "failed", fail, NULL, &err), 1);
  assert_one_error(err, "train", "injected device failure");
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "update 6"));
  g_free(err);
  /* the last checkpoint is the one of update 4, byte for byte what the healthy run wrote */
  char *last = g_build_filename(f.tmp, "failed", "checkpoint_last.pt", NULL);
  char *four = g_build_filename(f.tmp, "ok", "checkpoint_1_4.pt", NULL);
  CU_ASSERT_TRUE(cli_same_file(last, four));
  char *six = g_build_filename(f.tmp, "failed", "checkpoint_1_6.pt", NULL);
  CU_ASSERT_FALSE(g_file_test(six, G_FILE_TEST_EXISTS));
  /* it loads and scores; eval-lm and generate report an injected failure the same way */
  const char *eval[] = {"eval-lm", f.data, "--path", last, "--gen-subset", "valid", "--threads", "1", NULL};
  char *out = NULL;
  CU_ASSERT_EQUAL(moelm_test_run_cli(eval, NULL, &out, NULL), 0);
  CU_ASSERT_PTR_NOT_NULL(out ? strstr(out, "Perplexity") : NULL);
  g_free(out);
  const char *eval_fail[] = {"eval-lm", f.data, "--path", last, "--gen-subset", "valid", "--threads", "1",
                             "--inject-device-failure", "3", NULL};
  err = NULL;
  CU_ASSERT_EQUAL(moelm_test_run_cli(eval_fail, NULL, NULL, &err), 1);
  assert_one_error(err, "eval-lm", "injected device failure");
  g_free(err);
  const char *gen_fail[] = {"generate", f.data, "--path", last, "--beam", "2", "--threads", "1",
                            "--inject-device-failure", "2", NULL};
  err = NULL;
  CU_ASSERT_NOT_EQUAL(moelm_test_run_cli(gen_fail, "hello\n", NULL, &err), 0);
  assert_one_error(err, "generate", "injected device failure");
  g_free(err);
  g_free(last);
  g_free(four);
  g_free(six);
  fixture_clear(&f);
}

/* The last "valid on" loss of a training log. */
static double last_valid_loss(const char *log)
{
  double loss = NAN;
  for (const char *p = log; (p = strstr(p, "| valid on")) != NULL; p++) {
    const char *l = strstr(p, "| loss ");
    if (l)
      loss = g_ascii_strtod(l + 7, NULL);
  }
  return loss;
}

static double eval_loss(const Fixture *f, const char *ckpt, const char *precision)
{
  const char *args[] = {"eval-lm", f->data, "--path", ckpt, "--gen-subset", "valid", "--threads", "1", precision, NULL};
  char *out = NULL;
  double loss = NAN;
  CU_ASSERT_EQUAL(moelm_test_run_cli(args, NULL, &out, NULL), 0);
  const char *l = out ? strstr(out, "Loss (base 2): ") : NULL;
  if (l)
    loss = g_ascii_strtod(l + 15, NULL);
  g_free(out);
  return loss;
}

static void test_bf16_storage(void)
{
  Fixture f;
  fixture_init(&f);
  const char *fp32[] = {"--max-update", "60", "--fp32", NULL};
  const char *bf16[] = {"--max-update", "60", "--bf16", NULL};
  char *err32 = NULL, *err16 = NULL;
  CU_ASSERT_EQUAL_FATAL(train(&f, "fp32", fp32, NULL, &err32), 0);
  CU_ASSERT_EQUAL_FATAL(train(&f, "bf16", bf16, NULL, &err16), 0);
  CU_ASSERT_PTR_NOT_NULL(strstr(err16, "cpu-bf16"));
  const double v32 = last_valid_loss(err32), v16 = last_valid_loss(err16);
  g_printerr("[valid loss fp32 %.4f, bf16 storage %.4f] ", v32, v16);
  CU_ASSERT_TRUE(isfinite(v32) && isfinite(v16));
  CU_ASSERT_TRUE(fabs(v16 - v32) < 0.02 * v32);
  /* it really stored activations in bf16: the trained weights differ */
  char *w32 = g_build_filename(f.tmp, "fp32", "checkpoint_last.pt", NULL);
  char *w16 = g_build_filename(f.tmp, "bf16", "checkpoint_last.pt", NULL);
  gsize n32 = 0, n16 = 0;
  char *b32 = moelm_test_read_file(w32, &n32), *b16 = moelm_test_read_file(w16, &n16);
  CU_ASSERT_TRUE(n32 > 0 && n16 > 0 && (n32 != n16 || memcmp(b32, b16, n32) != 0));
  g_free(b32);
  g_free(b16);
  g_free(w32);
  g_free(w16);
  /* one checkpoint scored in fp32, bf16 and fp16 activations */
  char *ckpt = g_build_filename(f.tmp, "fp32", "checkpoint_last.pt", NULL);
  const double e32 = eval_loss(&f, ckpt, "--fp32"), e16 = eval_loss(&f, ckpt, "--bf16"),
               eh = eval_loss(&f, ckpt, "--fp16");
  g_printerr("[eval-lm fp32 %.4f, bf16 %.4f, fp16 %.4f] ", e32, e16, eh);
  CU_ASSERT_TRUE(fabs(e16 - e32) < 0.01 * e32);
  CU_ASSERT_TRUE(fabs(eh - e32) < 0.002 * e32);
  g_free(ckpt);
  g_free(err32);
  g_free(err16);
  fixture_clear(&f);
}

static void test_choice_errors(void)
{
  Fixture f;
  fixture_init(&f);
  static const struct {
    const char *a, *b, *needle;
  } bad[] = {
#ifdef HAVE_CUDA_BACKEND
      {"--device-id", "99", "--device-id 99"}, /* no such GPU here (or none at all) */
#else
      {"--device-id", "0", "built without the CUDA backend"},
#endif
      {"--fp32", "--bf16", "exclude each other"},
      {"--amp", "--fp16", "exclude each other"},
      {"--fp16", NULL, "--fp16"},
      {"--threads", "-2", "--threads"},
      {"--device-id", "-3", "--device-id"},
  };
  for (gsize i = 0; i < G_N_ELEMENTS(bad); i++) {
    const char *extra[] = {"--max-update", "1", bad[i].a, bad[i].b, NULL};
    char *err = NULL;
    CU_ASSERT_NOT_EQUAL(train(&f, "bad", extra, NULL, &err), 0);
    assert_one_error(err, "train", bad[i].needle);
    g_free(err);
  }
  const char *both[] = {"--max-update", "1", "--cpu", "--device-id", "1", NULL};
  char *err = NULL;
  CU_ASSERT_NOT_EQUAL(train(&f, "bad", both, NULL, &err), 0);
  assert_one_error(err, "train", "exclude each other");
  g_free(err);
  char *dir = cli_path(f.tmp, "bad");
  CU_ASSERT_FALSE(g_file_test(dir, G_FILE_TEST_EXISTS)); /* nothing was written */
  g_free(dir);
  /* --cpu is the backend choice, and the log says which and why */
  const char *cpu[] = {"--max-update", "1", "--cpu", "--disable-validation", NULL};
  err = NULL;
  CU_ASSERT_EQUAL(train(&f, "cpu", cpu, NULL, &err), 0);
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "running on cpu ("));
  CU_ASSERT_PTR_NOT_NULL(strstr(err, ": --cpu"));
  g_free(err);
  /* --amp: the GPU's mixed precision; the CPU says it stays in fp32 */
  const char *amp[] = {"--max-update", "1", "--cpu", "--amp", "--disable-validation", NULL};
  err = NULL;
  CU_ASSERT_EQUAL(train(&f, "amp", amp, NULL, &err), 0);
  CU_ASSERT_PTR_NOT_NULL(strstr(err, ": --cpu; --amp: mixed precision is the GPU's, the CPU computes in fp32"));
  g_free(err);
  fixture_clear(&f);
}

MOELM_TEST_SUITE(backend_cli)
{
  CU_add_test(suite, "choosing a backend: errors and the log line", test_choice_errors);
  CU_add_test(suite, "a failing device op: one error, last checkpoint intact", test_injected_failure);
  CU_add_test(suite, "bf16/fp16 activation storage stays close to fp32", test_bf16_storage);
}
