/* `moelm eval-lm` end to end: a checkpoint trained for 3 updates with `moelm train` on a
 * data-bin made with `moelm preprocess`, fairseq's report lines, and one-line errors. */
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <glib/gstdio.h>

#include "moelm-test.h"
#include "moelm/indexed_dataset.h"
#include "tasks/inference.h"
#include "tasks/scorer.h"

typedef struct {
  char *tmp, *data, *ckpt;
} Trained;

static int run(const char *const *args, char **out, char **err)
{
  char *o = NULL, *e = NULL;
  int rc = moelm_test_run_cli(args, NULL, &o, &e);
  if (out)
    *out = o;
  else
    g_free(o);
  if (err)
    *err = e;
  else
    g_free(e);
  return rc;
}

static void trained_init(Trained *t)
{
  t->tmp = moelm_test_tmpdir();
  char *src = moelm_test_srcpath("data-bin/text/test.txt");
  gsize len = 0;
  char *text = moelm_test_read_file(src, &len);
  CU_ASSERT_PTR_NOT_NULL_FATAL(text);
  char *end = text;
  for (int i = 0; i < 40 && end; i++)
    end = strchr(end, '\n') ? strchr(end, '\n') + 1 : NULL;
  CU_ASSERT_PTR_NOT_NULL_FATAL(end);
  char *txt = g_build_filename(t->tmp, "text.txt", NULL);
  moelm_test_write_file(txt, text, (gsize)(end - text));
  t->data = g_build_filename(t->tmp, "data", NULL);
  const char *pre[] = {"preprocess", "--only-source", "--trainpref", txt, "--validpref", txt, "--testpref", txt,
                       "--destdir", t->data, NULL};
  char *err = NULL;
  int rc = run(pre, NULL, &err);
  if (rc != 0)
    g_printerr("preprocess: %s\n", err);
  CU_ASSERT_EQUAL_FATAL(rc, 0);
  g_free(err);
  char *save = g_build_filename(t->tmp, "ckpt", NULL);
  const char *train[] = {"train", t->data, "--arch", "transformer_lm", "--decoder-layers", "2",
                         "--decoder-embed-dim", "16", "--decoder-ffn-embed-dim", "32", "--decoder-attention-heads",
                         "2", "--tokens-per-sample", "32", "--batch-size", "4", "--lr", "0.001", "--max-update", "3",
                         "--save-dir", save, "--threads", "1", "--no-epoch-checkpoints", "--log-format", "none",
                         NULL};
  rc = run(train, NULL, &err);
  if (rc != 0)
    g_printerr("train: %s\n", err);
  CU_ASSERT_EQUAL_FATAL(rc, 0);
  g_free(err);
  t->ckpt = g_build_filename(save, "checkpoint_last.pt", NULL);
  g_free(save);
  g_free(txt);
  g_free(text);
  g_free(src);
}

static void trained_clear(Trained *t)
{
  moelm_test_rmtree(t->tmp);
  g_free(t->tmp);
  g_free(t->data);
  g_free(t->ckpt);
}

/* The value after `key` on the fairseq_cli.eval_lm line that holds it. */
static gboolean report_value(const char *out, const char *key, const char *fmt, void *a, void *b)
{
  const char *line = strstr(out, key);
  if (line == NULL)
    return FALSE;
  const char *bol = line;
  while (bol > out && bol[-1] != '\n')
    bol--;
  char *head = g_strndup(bol, (gsize)(line - bol));
  static const char tail[] = " | INFO | fairseq_cli.eval_lm | ";
  const gboolean layout = g_str_has_suffix(head, tail) && strlen(head) == strlen("YYYY-MM-DD HH:MM:SS") + strlen(tail);
  g_free(head);
  return layout && sscanf(line + strlen(key), fmt, a, b) >= 1;
}

/* Loss and perplexity from the library on the same checkpoint and split. */
static double library_loss(const Trained *t, const char *split_name, int C)
{
  MoelmInference *inf = moelm_inference_open(t->ckpt, t->data, MOELM_TEST_CPU_SPEC(1), NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(inf);
  MoelmLmSplit *s = moelm_lm_split_open(t->data, split_name, 32 - C, MOELM_BREAK_NONE,
                                        moelm_dictionary_size(inf->dict), NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(s);
  MoelmScoreOptions o = {.context_window = C, .tokens_per_sample = 32 - C, .max_sentences = 3};
  MoelmScoreResult r;
  CU_ASSERT_TRUE_FATAL(moelm_score_split(inf->model, s, &o, NULL, NULL, &r, NULL));
  moelm_lm_split_free(s);
  moelm_inference_free(inf);
  return moelm_score_loss_base2(&r);
}

static int64_t split_tokens(const char *data, const char *name)
{
  char *prefix = g_build_filename(data, name, NULL);
  MoelmIndexedDataset *ds = moelm_indexed_dataset_open(prefix, NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(ds);
  const int64_t n = moelm_indexed_dataset_num_tokens(ds);
  moelm_indexed_dataset_close(ds);
  g_free(prefix);
  return n;
}

static void test_report(void)
{
  Trained t;
  trained_init(&t);
  const int64_t ntok = split_tokens(t.data, "valid");
  for (int C = 0; C <= 8; C += 8) {
    char cw[8];
    g_snprintf(cw, sizeof cw, "%d", C);
    const char *args[] = {"eval-lm", t.data, "--path", t.ckpt, "--gen-subset", "valid", "--context-window", cw,
                          "--threads", "1", NULL};
    char *out = NULL, *err = NULL;
    const int rc = run(args, &out, &err);
    if (rc != 0)
      g_printerr("eval-lm: %s\n", err);
    CU_ASSERT_EQUAL_FATAL(rc, 0);
    double loss = -1, ppl = -1;
    gint64 evaluated = -1;
    double secs = 0;
    CU_ASSERT_TRUE(report_value(out, "Loss (base 2): ", "%lf, Perplexity: %lf", &loss, &ppl));
    CU_ASSERT_TRUE(report_value(out, "Evaluated ", "%" G_GINT64_FORMAT " tokens in %lfs", &evaluated, &secs));
    CU_ASSERT_EQUAL(evaluated, ntok);
    CU_ASSERT(loss > 1.0 && loss < 20.0);
    /* ppl = 2^loss, up to the printed rounding (4 and 2 decimals) */
    CU_ASSERT_DOUBLE_EQUAL(ppl, pow(2.0, loss), 1e-4 * ppl + 0.006);
    CU_ASSERT_DOUBLE_EQUAL(loss, library_loss(&t, "valid", C), 6e-5);
    g_free(out);
    g_free(err);
  }
  trained_clear(&t);
}

/* --output-word-probs: one line per block, "ID word [lprob]" with tab-separated words. */
static void test_word_probs(void)
{
  Trained t;
  trained_init(&t);
  const char *args[] = {"eval-lm", t.data, "--path", t.ckpt, "--gen-subset", "test", "--output-word-probs",
                        "--output-word-stats", "--batch-size", "2", "--threads", "1", NULL};
  char *out = NULL;
  CU_ASSERT_EQUAL_FATAL(run(args, &out, NULL), 0);
  GRegex *re = g_regex_new("^\\d{4}-\\d\\d-\\d\\d \\d\\d:\\d\\d:\\d\\d \\| INFO \\| fairseq_cli\\.eval_lm \\| "
                           "(\\d+) (\\S+ \\[-?\\d+\\.\\d{6}\\])(\\t\\S+ \\[-?\\d+\\.\\d{6}\\])*$",
                           G_REGEX_MULTILINE, 0, NULL);
  GMatchInfo *mi = NULL;
  int lines = 0, words = 0;
  for (g_regex_match(re, out, 0, &mi); g_match_info_matches(mi); g_match_info_next(mi, NULL)) {
    char *id = g_match_info_fetch(mi, 1), *all = g_match_info_fetch(mi, 0);
    CU_ASSERT_EQUAL(atoi(id), lines);
    for (const char *p = all; (p = strstr(p, " [")) != NULL; p++)
      words++;
    lines++;
    g_free(id);
    g_free(all);
  }
  g_match_info_free(mi);
  g_regex_unref(re);
  /* blocks of 32 tokens, each word a token (no --remove-bpe) */
  const int64_t ntok = split_tokens(t.data, "test");
  CU_ASSERT_EQUAL(lines, (int)((ntok + 31) / 32));
  CU_ASSERT_EQUAL(words, (int)ntok);
  /* word stats: "word\tcount\tlogprob\tis_bpe\tnext\tcount-with-next", </s> among them */
  CU_ASSERT_PTR_NOT_NULL(strstr(out, "| </s>\t"));
  CU_ASSERT_PTR_NOT_NULL(strstr(out, "\tFalse\t"));
  g_free(out);
  trained_clear(&t);
}

/* A failure: the status, and one stderr line that names `needle`. */
static void check_fails(const char *const *args, int status, const char *needle)
{
  char *err = NULL;
  const int rc = run(args, NULL, &err);
  CU_ASSERT_EQUAL(rc, status);
  const gboolean one_line = err && strchr(err, '\n') == err + strlen(err) - 1;
  if (!one_line || strstr(err, needle) == NULL)
    g_printerr("\n  stderr was: %s (expected one line naming %s)\n", err, needle);
  CU_ASSERT_TRUE(one_line);
  CU_ASSERT_PTR_NOT_NULL(err ? strstr(err, needle) : NULL);
  g_free(err);
}

static void test_errors(void)
{
  Trained t;
  trained_init(&t);
  /* missing checkpoint */
  char *missing = g_build_filename(t.tmp, "nope.pt", NULL);
  check_fails((const char *const[]){"eval-lm", t.data, "--path", missing, NULL}, 1, missing);
  /* a truncated copy */
  char *bad = g_build_filename(t.tmp, "truncated.pt", NULL);
  gsize len = 0;
  char *bytes = moelm_test_read_file(t.ckpt, &len);
  CU_ASSERT_PTR_NOT_NULL_FATAL(bytes);
  moelm_test_write_file(bad, bytes, len / 2);
  check_fails((const char *const[]){"eval-lm", t.data, "--path", bad, NULL}, 1, bad);
  /* another dict.txt: one word renamed */
  char *other = g_build_filename(t.tmp, "other", NULL);
  g_mkdir(other, 0755);
  char *dict_src = g_build_filename(t.data, "dict.txt", NULL), *dict_dst = g_build_filename(other, "dict.txt", NULL);
  gsize dlen = 0;
  char *dict = moelm_test_read_file(dict_src, &dlen);
  CU_ASSERT_PTR_NOT_NULL_FATAL(dict);
  dict[0] = dict[0] == 'Q' ? 'Z' : 'Q';
  moelm_test_write_file(dict_dst, dict, dlen);
  check_fails((const char *const[]){"eval-lm", other, "--path", t.ckpt, NULL}, 1, dict_dst);
  /* a missing split */
  check_fails((const char *const[]){"eval-lm", t.data, "--path", t.ckpt, "--gen-subset", "nosuch", NULL}, 1,
              "nosuch");
  /* bad options */
  check_fails((const char *const[]){"eval-lm", t.data, "--path", t.ckpt, "--context-window", "32", NULL}, 1,
              "--context-window 32");
  check_fails((const char *const[]){"eval-lm", t.data, "--path", t.ckpt, "--remove-bpe", "letter", NULL}, 1,
              "letter");
  check_fails((const char *const[]){"eval-lm", t.data, "--path", t.ckpt, "--bogus", NULL}, 2, "--bogus");
  check_fails((const char *const[]){"eval-lm", t.data, NULL}, 2, "--path");
  g_free(dict);
  g_free(dict_src);
  g_free(dict_dst);
  g_free(other);
  g_free(bytes);
  g_free(bad);
  g_free(missing);
  trained_clear(&t);
}

MOELM_TEST_SUITE(eval_cli)
{
  CU_add_test(suite, "Loss/Perplexity report on a trained checkpoint", test_report);
  CU_add_test(suite, "--output-word-probs and --output-word-stats lines", test_word_probs);
  CU_add_test(suite, "errors: checkpoint, dictionary, split, options", test_errors);
}
