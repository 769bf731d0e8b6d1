/* moelm generate end to end on a data-bin made with the shipped SentencePiece model and a
 * checkpoint trained for 3 updates: the S-/W-/H-/D-/P- lines, --input, --remove-bpe,
 * sampling seeds, and the errors (one line naming the file; exit 1, or 2 for the command
 * line). */
#include "config.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "moelm-test.h"

typedef struct {
  char *dir, *data, *ckpt;
} Fixture;

static Fixture fx;

static void fixture_remove(void)
{
  moelm_test_rmtree(fx.dir);
  g_free(fx.dir);
  g_free(fx.data);
  g_free(fx.ckpt);
}

/* Built once per run: lines of data-bin/text/valid.txt as train and valid splits. */
static const Fixture *fixture(void)
{
  if (fx.dir)
    return &fx;
  fx.dir = moelm_test_tmpdir();
  atexit(fixture_remove);
  char *src = moelm_test_srcpath("data-bin/text/valid.txt");
  char *text = moelm_test_read_file(src, NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(text);
  gchar **lines = g_strsplit(text, "\n", 361);
  GString *train = g_string_new(NULL), *valid = g_string_new(NULL);
  for (int i = 0; lines[i] && i < 360; i++)
    g_string_append_printf(i < 300 ? train : valid, "%s\n", lines[i]);
  char *train_path = g_build_filename(fx.dir, "train.txt", NULL);
  char *valid_path = g_build_filename(fx.dir, "valid.txt", NULL);
  moelm_test_write_file(train_path, train->str, train->len);
  moelm_test_write_file(valid_path, valid->str, valid->len);
  fx.data = g_build_filename(fx.dir, "data", NULL);
  char *spm = moelm_test_srcpath("data-bin/demo/spm.model");
  const char *pre[] = {"preprocess", "--only-source", "--trainpref", train_path, "--validpref", valid_path,
                       "--destdir", fx.data, "--bpe", "sentencepiece", "--sentencepiece-model", spm, NULL};
  char *err = NULL;
  int rc = moelm_test_run_cli(pre, NULL, NULL, &err);
  if (rc != 0)
    g_printerr("\n  preprocess: %s\n", err);
  CU_ASSERT_EQUAL_FATAL(rc, 0);
  g_free(err);
  char *save = g_build_filename(fx.dir, "ckpt", NULL);
  const char *train_args[] = {"train", fx.data, "--arch", "transformer_lm", "--decoder-layers", "1",
                              "--decoder-embed-dim", "16", "--decoder-ffn-embed-dim", "32",
                              "--decoder-attention-heads", "2", "--tokens-per-sample", "32", "--batch-size", "4",
                              "--lr", "0.001", "--max-update", "3", "--threads", "1",
                              "--save-dir", save, NULL};
  rc = moelm_test_run_cli(train_args, NULL, NULL, &err);
  if (rc != 0)
    g_printerr("\n  train: %s\n", err);
  CU_ASSERT_EQUAL_FATAL(rc, 0);
  fx.ckpt = g_build_filename(save, "checkpoint_last.pt", NULL);
  g_free(err);
  g_free(save);
  g_free(spm);
  g_free(train_path);
  g_free(valid_path);
  g_string_free(train, TRUE);
  g_string_free(valid, TRUE);
  g_strfreev(lines);
  g_free(text);
  g_free(src);
  return &fx;
}

/* Run `generate DATA --path CKPT --threads 1 EXTRA...` with stdin; returns the exit status. */
static int run_generate(const char *data, const char *ckpt, const char *const *extra, const char *stdin_text,
                        char **out, char **err)
{
  GPtrArray *args = g_ptr_array_new();
  g_ptr_array_add(args, "generate");
  g_ptr_array_add(args, (gpointer)data);
  if (ckpt) {
    g_ptr_array_add(args, "--path");
    g_ptr_array_add(args, (gpointer)ckpt);
  }
  g_ptr_array_add(args, "--threads");
  g_ptr_array_add(args, "1");
  for (const char *const *e = extra; e && *e; e++)
    g_ptr_array_add(args, (gpointer)*e);
  g_ptr_array_add(args, NULL);
  int rc = moelm_test_run_cli((const char *const *)args->pdata, stdin_text, out, err);
  g_ptr_array_unref(args);
  return rc;
}

/* stdout without the W- (timing) lines. */
static char *without_timing(const char *out)
{
  gchar **lines = g_strsplit(out, "\n", -1);
  GString *s = g_string_new(NULL);
  for (int i = 0; lines[i]; i++)
    if (!g_str_has_prefix(lines[i], "W-") && *lines[i])
      g_string_append_printf(s, "%s\n", lines[i]);
  g_strfreev(lines);
  return g_string_free(s, FALSE);
}

static int count_lines(const char *text)
{
  int n = 0;
  for (const char *p = text; *p; p++)
    n += *p == '\n';
  return n;
}

static gboolean parse_double(const char *s, double *v)
{
  char *end = NULL;
  *v = g_ascii_strtod(s, &end);
  return end != s && *end == '\0';
}

static const char *PROMPTS = "He liked fishing\nIt's a\n";

/* Check one prompt's block of lines starting at lines[*i] (S-, W-, then nbest × H-, D-, P-),
 * leaving *i after it. */
static void check_block(gchar **lines, int *i, int id, int nbest, const char *prompt_text)
{
  char *s_tag = g_strdup_printf("S-%d\t", id), *w_tag = g_strdup_printf("W-%d\t", id);
  char *h_tag = g_strdup_printf("H-%d", id), *d_tag = g_strdup_printf("D-%d", id);
  char *p_tag = g_strdup_printf("P-%d", id);
  CU_ASSERT_FATAL(lines[*i] && g_str_has_prefix(lines[*i], s_tag));
  const char *src = lines[*i] + strlen(s_tag);
  CU_ASSERT_PTR_NULL(strchr(src, '\t'));
  (*i)++;
  CU_ASSERT_FATAL(lines[*i] && g_str_has_prefix(lines[*i], w_tag) && g_str_has_suffix(lines[*i], "\tseconds"));
  (*i)++;
  for (int k = 0; k < nbest; k++) {
    gchar **h = g_strsplit(lines[(*i)++], "\t", -1);
    gchar **d = g_strsplit(lines[(*i)++], "\t", -1);
    gchar **p = g_strsplit(lines[(*i)++], "\t", -1);
    CU_ASSERT_FATAL(g_strv_length(h) == 3 && g_strv_length(d) == 3 && g_strv_length(p) == 2);
    CU_ASSERT_STRING_EQUAL(h[0], h_tag);
    CU_ASSERT_STRING_EQUAL(d[0], d_tag);
    CU_ASSERT_STRING_EQUAL(p[0], p_tag);
    double score;
    CU_ASSERT_TRUE(parse_double(h[1], &score));
    CU_ASSERT_STRING_EQUAL(h[1], d[1]);
    CU_ASSERT(score < 0);
    /* the hypothesis is the prompt's pieces, then the continuation */
    CU_ASSERT_TRUE(g_str_has_prefix(h[2], src));
    CU_ASSERT_TRUE(g_str_has_prefix(d[2], prompt_text));
    CU_ASSERT_PTR_NULL(strstr(d[2], "\xe2\x96\x81"));
    /* one positional score per piece plus </s>; they add up to score × length */
    gchar **pieces = g_strsplit(h[2], " ", -1);
    gchar **pos = g_strsplit(p[1], " ", -1);
    const int len = (int)g_strv_length(pieces) + 1;
    CU_ASSERT_EQUAL(g_strv_length(pos), (guint)len);
    double sum = 0;
    for (int j = 0; pos[j]; j++) {
      double v;
      CU_ASSERT_TRUE(parse_double(pos[j], &v));
      const char *dot = strchr(pos[j], '.');
      CU_ASSERT(dot && strlen(dot) == 5); /* 4 decimals */
      sum += v;
    }
    CU_ASSERT_DOUBLE_EQUAL(sum, score * len, 1e-4 * len + 1e-3);
    g_strfreev(pieces);
    g_strfreev(pos);
    g_strfreev(h);
    g_strfreev(d);
    g_strfreev(p);
  }
  g_free(s_tag);
  g_free(w_tag);
  g_free(h_tag);
  g_free(d_tag);
  g_free(p_tag);
}

static void test_stdin_and_input_file(void)
{
  const Fixture *f = fixture();
  const char *extra[] = {"--beam", "3", "--nbest", "2", "--max-len-b", "12", NULL};
  char *out = NULL, *err = NULL;
  int rc = run_generate(f->data, f->ckpt, extra, PROMPTS, &out, &err);
  if (rc != 0)
    g_printerr("\n  generate: %s\n", err);
  CU_ASSERT_EQUAL_FATAL(rc, 0);
  gchar **lines = g_strsplit(out, "\n", -1);
  int i = 0;
  check_block(lines, &i, 0, 2, "He liked fishing");
  check_block(lines, &i, 1, 2, "It's a");
  CU_ASSERT_STRING_EQUAL(lines[i], ""); /* nothing else */
  CU_ASSERT_PTR_NULL(lines[i + 1]);
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "NOTE: hypothesis and token scores are output in base 2"));
  g_strfreev(lines);

  /* --input FILE, and the `interactive` alias, give the same hypotheses */
  char *input = g_build_filename(f->dir, "prompts.txt", NULL);
  moelm_test_write_file(input, PROMPTS, strlen(PROMPTS));
  const char *with_input[] = {"--beam", "3", "--nbest", "2", "--max-len-b", "12", "--input", input, NULL};
  char *out2 = NULL;
  CU_ASSERT_EQUAL(run_generate(f->data, f->ckpt, with_input, NULL, &out2, NULL), 0);
  char *a = without_timing(out), *b = without_timing(out2);
  CU_ASSERT_STRING_EQUAL(a, b);
  const char *alias[] = {"interactive", f->data, "--path", f->ckpt, "--beam", "3", "--nbest", "2",
                         "--max-len-b", "12", "--input", input, NULL};
  char *out3 = NULL;
  CU_ASSERT_EQUAL(moelm_test_run_cli(alias, NULL, &out3, NULL), 0);
  char *c = without_timing(out3);
  CU_ASSERT_STRING_EQUAL(a, c);
  g_free(a);
  g_free(b);
  g_free(c);
  g_free(out);
  g_free(out2);
  g_free(out3);
  g_free(err);
  g_free(input);
}

static char *hypotheses(const Fixture *f, const char *const *extra)
{
  char *out = NULL;
  CU_ASSERT_EQUAL(run_generate(f->data, f->ckpt, extra, PROMPTS, &out, NULL), 0);
  char *h = without_timing(out ? out : "");
  g_free(out);
  return h;
}

static void test_remove_bpe_and_sampling(void)
{
  const Fixture *f = fixture();
  const char *rm[] = {"--beam", "2", "--max-len-b", "8", "--remove-bpe", "sentencepiece", NULL};
  char *out = hypotheses(f, rm);
  CU_ASSERT_TRUE(g_str_has_prefix(out, "S-0\tHe liked fishing\n"));
  gchar **lines = g_strsplit(out, "\n", -1);
  CU_ASSERT_TRUE_FATAL(g_str_has_prefix(lines[1], "H-0\t") && g_str_has_prefix(lines[2], "D-0\t"));
  CU_ASSERT_STRING_EQUAL(lines[1] + 3, lines[2] + 3); /* H already has the words */
  g_strfreev(lines);
  g_free(out);

  const char *s5[] = {"--sampling", "--beam", "3", "--nbest", "3", "--seed", "5", "--max-len-b", "10", NULL};
  const char *s6[] = {"--sampling", "--beam", "3", "--nbest", "3", "--seed", "6", "--max-len-b", "10", NULL};
  char *a = hypotheses(f, s5), *b = hypotheses(f, s5), *c = hypotheses(f, s6);
  CU_ASSERT_EQUAL(count_lines(a), 2 * (1 + 3 * 3));
  CU_ASSERT_STRING_EQUAL(a, b);
  CU_ASSERT_STRING_NOT_EQUAL(a, c);
  g_free(a);
  g_free(b);
  g_free(c);
}

static void expect_failure(const char *const *extra, const char *ckpt, const char *data, int status,
                           const char *needle)
{
  char *err = NULL, *out = NULL;
  int rc = run_generate(data ? data : fixture()->data, ckpt, extra, PROMPTS, &out, &err);
  CU_ASSERT_EQUAL(rc, status);
  int error_lines = 0;
  gchar **lines = g_strsplit(err, "\n", -1);
  for (int i = 0; lines[i]; i++)
    if (strstr(lines[i], "error"))
      error_lines++;
  CU_ASSERT_EQUAL(error_lines, 1);
  if (strstr(err, needle) == NULL)
    g_printerr("\n  stderr: %s(expected \"%s\")\n", err, needle);
  CU_ASSERT_PTR_NOT_NULL(strstr(err, needle));
  CU_ASSERT_PTR_NULL(strstr(out, "H-"));
  g_strfreev(lines);
  g_free(err);
  g_free(out);
}

static void test_errors(void)
{
  const Fixture *f = fixture();
  expect_failure(NULL, NULL, NULL, 1, "--path");
  char *junk = g_build_filename(f->dir, "junk.pt", NULL);
  moelm_test_write_file(junk, "not a checkpoint", 16);
  expect_failure(NULL, junk, NULL, 1, junk);
  char *missing = g_build_filename(f->dir, "missing.txt", NULL);
  const char *input[] = {"--input", missing, NULL};
  expect_failure(input, f->ckpt, NULL, 1, missing);
  const char *unknown[] = {"--frobnicate", NULL};
  expect_failure(unknown, f->ckpt, NULL, 2, "--frobnicate");
  const char *sampling[] = {"--sampling", NULL};
  expect_failure(sampling, f->ckpt, NULL, 2, "--sampling requires --nbest to be equal to --beam");
  const char *topk[] = {"--sampling-topk", "5", NULL};
  expect_failure(topk, f->ckpt, NULL, 2, "--sampling-topk requires --sampling");

  /* a data-bin whose dictionary is not the checkpoint's */
  char *other = g_build_filename(f->dir, "other", NULL);
  const char *names[] = {"dict.txt", "spm.model"};
  g_mkdir_with_parents(other, 0755);
  for (gsize i = 0; i < G_N_ELEMENTS(names); i++) {
    char *from = g_build_filename(f->data, names[i], NULL), *to = g_build_filename(other, names[i], NULL);
    gsize len;
    char *data = moelm_test_read_file(from, &len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(data);
    GString *s = g_string_new_len(data, (gssize)len);
    if (i == 0)
      g_string_append(s, "zzzextra 1\n");
    moelm_test_write_file(to, s->str, s->len);
    g_string_free(s, TRUE);
    g_free(data);
    g_free(from);
    g_free(to);
  }
  char *other_dict = g_build_filename(other, "dict.txt", NULL);
  expect_failure(NULL, f->ckpt, other, 1, other_dict);

  /* a prompt longer than the model's 32 positions */
  GString *longp = g_string_new(NULL);
  for (int i = 0; i < 40; i++)
    g_string_append(longp, "He ");
  g_string_append(longp, "\nIt's a\n");
  char *err = NULL, *out = NULL;
  CU_ASSERT_EQUAL(run_generate(f->data, f->ckpt, NULL, longp->str, &out, &err), 1);
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "Size of sample #0 is invalid"));
  g_free(out);
  g_free(err);
  const char *skip[] = {"--skip-invalid-size-inputs-valid-test", NULL};
  CU_ASSERT_EQUAL(run_generate(f->data, f->ckpt, skip, longp->str, &out, NULL), 0);
  CU_ASSERT_PTR_NULL(strstr(out, "S-0"));
  CU_ASSERT_PTR_NOT_NULL(strstr(out, "S-1\t"));
  g_free(out);
  g_string_free(longp, TRUE);
  g_free(other_dict);
  g_free(other);
  g_free(missing);
  g_free(junk);
}

MOELM_TEST_SUITE(generate_cli)
{
  CU_add_test(suite, "S-/W-/H-/D-/P- lines from stdin and --input", test_stdin_and_input_file);
  CU_add_test(suite, "--remove-bpe sentencepiece, sampling seeds", test_remove_bpe_and_sampling);
  CU_add_test(suite, "errors: one line naming the file", test_errors);
}
