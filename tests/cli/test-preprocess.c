/* moelm preprocess end to end: exact bytes of dict.txt/.idx/.bin for a small text computed by
 * hand, fairseq's log lines, valid/test with the train dictionary, -s file names, --srcdict,
 * byte-identical output for every --workers, and --bpe sentencepiece. */
#include "config.h"

#include <string.h>

#include "cli-helpers.h"
#include "moelm-test.h"

/* Lines: "b a c a" (\r\n), "c a" (lone \r), "d<U+3000>b<TAB>", "" (document boundary), "e".
 * Counts a 3, b 2, c 2, d 1, e 1 -> ids a=4 b=5 c=6 d=7 e=8; 4 + 5 symbols padded to 16. */
static const char train_text[] = "b a c a\r\nc a\rd\xe3\x80\x80"
                                 "b\t\n\ne\n";
static const char expected_dict[] = "a 3\nb 2\nc 2\nd 1\ne 1\n"
                                    "madeupword0000 0\nmadeupword0001 0\nmadeupword0002 0\nmadeupword0003 0\n"
                                    "madeupword0004 0\nmadeupword0005 0\nmadeupword0006 0\n";
/* [5 4 6 4 2] [6 4 2] [7 5 2] [2] [8 2] as uint16 */
static const unsigned char expected_train_bin[] = {5, 0, 4, 0, 6, 0, 4, 0, 2, 0, 6, 0, 4, 0, 2, 0,
                                                   7, 0, 5, 0, 2, 0, 2, 0, 8, 0, 2, 0};
static const unsigned char expected_train_idx[] = {
    'M', 'M', 'I', 'D', 'I', 'D', 'X', 0, 0, /* magic */
    1, 0, 0, 0, 0, 0, 0, 0,                  /* version */
    8,                                       /* dtype uint16 */
    5, 0, 0, 0, 0, 0, 0, 0,                  /* N */
    5, 0, 0, 0, 3, 0, 0, 0, 3, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, /* sizes */
    0, 0, 0, 0, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0, 0, 0, 16, 0, 0, 0, 0, 0, 0, 0, /* pointers */
    22, 0, 0, 0, 0, 0, 0, 0, 24, 0, 0, 0, 0, 0, 0, 0,
};
/* "a z <unk> b" -> [4 3 3 5 2] (z replaced, the literal <unk> is not), "q" -> [3 2]: 2 of 7. */
static const char valid_text[] = "a z <unk> b\nq\n";
static const unsigned char expected_valid_bin[] = {4, 0, 3, 0, 3, 0, 5, 0, 2, 0, 3, 0, 2, 0};
/* 1 of 3 tokens replaced: 33.3%. */
static const char test_text[] = "e x\n";

static gboolean contains_line(const char *text, const char *line)
{
  gchar **lines = g_strsplit(text, "\n", -1);
  gboolean found = g_strv_contains((const gchar *const *)lines, line);
  if (!found)
    g_printerr("\n  missing line: %s\n", line);
  g_strfreev(lines);
  return found;
}

static void test_exact_outputs(void)
{
  char *dir = moelm_test_tmpdir();
  char *train = cli_write(dir, "train.txt", train_text);
  char *valid = cli_write(dir, "valid.txt", valid_text);
  char *test = cli_write(dir, "test.txt", test_text);
  char *dest = cli_path(dir, "data-bin");
  char *valids = g_strdup_printf("%s,%s", valid, test); /* -> valid, valid1 */
  const char *args[] = {"preprocess", "--only-source", "--trainpref", train, "--validpref", valids,
                        "--testpref", test, "--destdir", dest, NULL};
  char *err = NULL;
  CU_ASSERT_EQUAL_FATAL(moelm_test_run_cli(args, NULL, NULL, &err), 0);

  char *p = cli_path(dest, "dict.txt");
  CU_ASSERT_TRUE(cli_file_equals(p, expected_dict, strlen(expected_dict)));
  g_free(p);
  p = cli_path(dest, "train.bin");
  CU_ASSERT_TRUE(cli_file_equals(p, expected_train_bin, sizeof expected_train_bin));
  g_free(p);
  p = cli_path(dest, "train.idx");
  CU_ASSERT_TRUE(cli_file_equals(p, expected_train_idx, sizeof expected_train_idx));
  g_free(p);
  p = cli_path(dest, "valid.bin");
  CU_ASSERT_TRUE(cli_file_equals(p, expected_valid_bin, sizeof expected_valid_bin));
  g_free(p);
  /* valid1 and test are the same text: the same bytes. */
  char *v1 = cli_path(dest, "valid1.bin"), *t1 = cli_path(dest, "test.bin");
  CU_ASSERT_TRUE(cli_same_file(v1, t1));
  g_free(v1);
  g_free(t1);

  /* Exactly fairseq's files, nothing left over. */
  GPtrArray *names = cli_list_dir(dest);
  const char *expected_names[] = {"dict.txt",  "preprocess.log", "test.bin",  "test.idx",    "train.bin",
                                  "train.idx", "valid.bin",      "valid.idx", "valid1.bin", "valid1.idx"};
  CU_ASSERT_EQUAL_FATAL(names->len, G_N_ELEMENTS(expected_names));
  for (guint i = 0; i < names->len; i++)
    CU_ASSERT_STRING_EQUAL(g_ptr_array_index(names, i), expected_names[i]);
  g_ptr_array_unref(names);

  /* preprocess.log holds fairseq's bare messages; stderr the same in the logging layout. */
  p = cli_path(dest, "preprocess.log");
  char *log = moelm_test_read_file(p, NULL);
  g_free(p);
  CU_ASSERT_PTR_NOT_NULL_FATAL(log);
  CU_ASSERT_TRUE(g_str_has_prefix(log, "Namespace(aim_repo=None, aim_run_hash=None, align_suffix=None, "));
  char *ns_dest = g_strdup_printf("destdir='%s'", dest);
  CU_ASSERT_PTR_NOT_NULL(strstr(log, ns_dest));
  CU_ASSERT_PTR_NOT_NULL(strstr(log, "nwordssrc=-1, nwordstgt=-1, on_cpu_convert_precision=False, "
                                     "only_source=True, optimizer=None, padding_factor=8,"));
  CU_ASSERT_PTR_NOT_NULL(strstr(log, "workers=1)\n"));
  g_free(ns_dest);
  char *line = g_strdup_printf("[None] %s: 5 sents, 14 tokens, 0.0%% replaced (by <unk>)", train);
  CU_ASSERT_TRUE(contains_line(log, "[None] Dictionary: 16 types"));
  CU_ASSERT_TRUE(contains_line(log, line));
  g_free(line);
  line = g_strdup_printf("[None] %s: 2 sents, 7 tokens, 28.6%% replaced (by <unk>)", valid);
  CU_ASSERT_TRUE(contains_line(log, line));
  g_free(line);
  line = g_strdup_printf("[None] %s: 1 sents, 3 tokens, 33.3%% replaced (by <unk>)", test);
  CU_ASSERT_TRUE(contains_line(log, line));
  g_free(line);
  line = g_strdup_printf("Wrote preprocessed data to %s", dest);
  CU_ASSERT_TRUE(g_str_has_suffix(log, line) || strstr(log, line) != NULL);
  CU_ASSERT_EQUAL(cli_count_lines(log), 10); /* Namespace, 4 x (Dictionary, split), Wrote */
  char *ns_valid = g_strdup_printf("validpref='%s'", valids);
  CU_ASSERT_PTR_NOT_NULL(strstr(log, ns_valid));
  g_free(ns_valid);
  CU_ASSERT_PTR_NOT_NULL(strstr(err, " | INFO | fairseq_cli.preprocess | [None] Dictionary: 16 types\n"));
  CU_ASSERT_PTR_NOT_NULL(strstr(err, line));
  g_free(line);
  g_free(log);

  /* A second run with --srcdict appends to preprocess.log and rewrites the same bytes. */
  char *dict = cli_path(dest, "dict.txt");
  const char *again[] = {"preprocess", "--only-source", "--trainpref", train, "--srcdict", dict,
                         "--destdir", dest, NULL};
  CU_ASSERT_EQUAL(moelm_test_run_cli(again, NULL, NULL, NULL), 0);
  CU_ASSERT_TRUE(cli_file_equals(dict, expected_dict, strlen(expected_dict)));
  p = cli_path(dest, "train.idx");
  CU_ASSERT_TRUE(cli_file_equals(p, expected_train_idx, sizeof expected_train_idx));
  g_free(p);
  p = cli_path(dest, "preprocess.log");
  log = moelm_test_read_file(p, NULL);
  CU_ASSERT_EQUAL(cli_count_lines(log), 10 + 4); /* appended, as fairseq's FileHandler does */
  g_free(log);
  g_free(p);
  g_free(dict);

  g_free(err);
  g_free(train);
  g_free(valid);
  g_free(valids);
  g_free(test);
  g_free(dest);
  moelm_test_rmtree(dir);
  g_free(dir);
}

/* With --source-lang the files are named as fairseq names them. */
static void test_source_lang_names(void)
{
  char *dir = moelm_test_tmpdir();
  char *train_en = cli_write(dir, "corpus.en", train_text);
  char *prefix = cli_path(dir, "corpus");
  char *dest = cli_path(dir, "bin");
  const char *args[] = {"preprocess", "--only-source", "-s", "en", "--trainpref", prefix, "--destdir", dest, NULL};
  char *err = NULL;
  CU_ASSERT_EQUAL_FATAL(moelm_test_run_cli(args, NULL, NULL, &err), 0);
  GPtrArray *names = cli_list_dir(dest);
  const char *expected[] = {"dict.en.txt", "preprocess.log", "train.en-None.en.bin", "train.en-None.en.idx"};
  CU_ASSERT_EQUAL_FATAL(names->len, G_N_ELEMENTS(expected));
  for (guint i = 0; i < names->len; i++)
    CU_ASSERT_STRING_EQUAL(g_ptr_array_index(names, i), expected[i]);
  g_ptr_array_unref(names);
  char *p = cli_path(dest, "train.en-None.en.bin");
  CU_ASSERT_TRUE(cli_file_equals(p, expected_train_bin, sizeof expected_train_bin));
  g_free(p);
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "| [en] Dictionary: 16 types\n"));
  g_free(err);
  g_free(train_en);
  g_free(prefix);
  g_free(dest);
  moelm_test_rmtree(dir);
  g_free(dir);
}

/* The lines of preprocess.log after the Namespace line, without the last ("Wrote ... to
 * DESTDIR", which names the destination). */
static char *log_body(const char *dest)
{
  char *p = cli_path(dest, "preprocess.log");
  char *log = moelm_test_read_file(p, NULL);
  g_free(p);
  if (log == NULL)
    return g_strdup("(missing)");
  char *first_nl = strchr(log, '\n');
  char *last = g_strrstr(log, "Wrote preprocessed data to ");
  char *body = first_nl && last && last > first_nl ? g_strndup(first_nl + 1, (gsize)(last - first_nl - 1))
                                                   : g_strdup("(malformed)");
  g_free(log);
  return body;
}

static void assert_same_outputs(const char *a, const char *b, const char *const *files)
{
  for (const char *const *f = files; *f; f++) {
    char *pa = cli_path(a, *f), *pb = cli_path(b, *f);
    CU_ASSERT_TRUE(cli_same_file(pa, pb));
    g_free(pa);
    g_free(pb);
  }
  char *la = log_body(a), *lb = log_body(b);
  CU_ASSERT_STRING_EQUAL(la, lb);
  g_free(la);
  g_free(lb);
}

static int run_workers(const char *train, const char *valid, const char *dest, const char *workers,
                       const char *step, const char *const *extra)
{
  GPtrArray *args = g_ptr_array_new();
  const char *base[] = {"preprocess", "--only-source", "--trainpref", train, "--validpref", valid,
                        "--destdir", dest, "--workers", workers};
  for (gsize i = 0; i < G_N_ELEMENTS(base); i++)
    g_ptr_array_add(args, (gpointer)base[i]);
  for (const char *const *e = extra; e && *e; e++)
    g_ptr_array_add(args, (gpointer)*e);
  g_ptr_array_add(args, NULL);
  /* Small steps make each worker walk its piece in many line-aligned steps. */
  if (step)
    g_setenv("MOELM_PREPROCESS_STEP", step, TRUE);
  char *err = NULL;
  int rc = moelm_test_run_cli((const char *const *)args->pdata, NULL, NULL, &err);
  g_unsetenv("MOELM_PREPROCESS_STEP");
  if (rc != 0)
    g_printerr("\n  preprocess --workers %s failed: %s\n", workers, err);
  g_free(err);
  g_ptr_array_free(args, TRUE);
  return rc;
}

static void test_workers_identical(void)
{
  char *dir = moelm_test_tmpdir();
  char *text = cli_generate_text(400000, 7);
  char *train = cli_write(dir, "train.txt", text);
  g_free(text);
  text = cli_generate_text(60000, 8);
  char *valid = cli_write(dir, "valid.txt", text);
  g_free(text);
  char *d1 = cli_path(dir, "w1"), *d4 = cli_path(dir, "w4"), *d3 = cli_path(dir, "w3");
  CU_ASSERT_EQUAL_FATAL(run_workers(train, valid, d1, "1", NULL, NULL), 0);
  CU_ASSERT_EQUAL_FATAL(run_workers(train, valid, d4, "4", NULL, NULL), 0);
  CU_ASSERT_EQUAL_FATAL(run_workers(train, valid, d3, "3", "7777", NULL), 0);
  const char *files[] = {"dict.txt", "train.bin", "train.idx", "valid.bin", "valid.idx", NULL};
  assert_same_outputs(d1, d4, files);
  assert_same_outputs(d1, d3, files);
  /* A real vocabulary: the generator's words plus padding, and some valid words unseen. */
  char *p = cli_path(d1, "dict.txt");
  char *dict = moelm_test_read_file(p, NULL);
  CU_ASSERT_TRUE(cli_count_lines(dict) > 500);
  CU_ASSERT_TRUE(g_str_has_prefix(dict, "the "));
  g_free(dict);
  g_free(p);
  GPtrArray *names = cli_list_dir(d4);
  CU_ASSERT_EQUAL(names->len, 6); /* no worker pieces or temporaries left */
  g_ptr_array_unref(names);
  g_free(d1);
  g_free(d3);
  g_free(d4);
  g_free(train);
  g_free(valid);
  moelm_test_rmtree(dir);
  g_free(dir);
}

/* Sizes array of a .idx (after the 26-byte header and N). */
static GArray *idx_sizes(const char *path)
{
  gsize len = 0;
  char *data = moelm_test_read_file(path, &len);
  GArray *sizes = g_array_new(FALSE, FALSE, sizeof(gint32));
  if (data && len >= 26) {
    guint64 n;
    memcpy(&n, data + 18, 8);
    for (guint64 i = 0; i < n && 26 + 4 * (i + 1) <= len; i++) {
      gint32 s;
      memcpy(&s, data + 26 + 4 * i, 4);
      g_array_append_val(sizes, s);
    }
  }
  g_free(data);
  return sizes;
}

/* DEST/train.idx has one sequence per line and exactly `breaks` (> 0) of size 1 ([</s>]). */
static void assert_lines_and_breaks(const char *dest, int lines, int breaks)
{
  char *p = cli_path(dest, "train.idx");
  GArray *sizes = idx_sizes(p);
  g_free(p);
  CU_ASSERT_EQUAL(sizes->len, (guint)lines);
  int ones = 0;
  for (guint i = 0; i < sizes->len; i++)
    ones += g_array_index(sizes, gint32, i) == 1;
  CU_ASSERT_TRUE(breaks > 0);
  CU_ASSERT_EQUAL(ones, breaks);
  g_array_unref(sizes);
}

static void test_sentencepiece(void)
{
  char *dir = moelm_test_tmpdir();
  char *text = cli_generate_text(120000, 11);
  char *train = cli_write(dir, "train.txt", text);
  /* Lines and empty lines of the generated text ("\n" or "\r\n" endings). */
  int lines = 0, empty = 0;
  for (const char *p = text; *p;) {
    const char *nl = strchr(p, '\n');
    lines++;
    empty += (nl == p);
    p = nl + 1;
  }
  g_free(text);
  text = cli_generate_text(20000, 12);
  char *valid = cli_write(dir, "valid.txt", text);
  g_free(text);
  char *trained = cli_path(dir, "trained"), *given1 = cli_path(dir, "given1"), *given4 = cli_path(dir, "given4");
  /* The train text is also the test split: train is binarized from the pieces its counting
   * pass cached, test by encoding again; both must give the same bytes. */
  const char *train_opts[] = {"--bpe", "sentencepiece", "--nwordssrc", "300", "--testpref", train, NULL};
  CU_ASSERT_EQUAL_FATAL(run_workers(train, valid, trained, "1", NULL, train_opts), 0);
  char *tr = cli_path(trained, "train.bin"), *te = cli_path(trained, "test.bin");
  CU_ASSERT_TRUE(cli_same_file(tr, te));
  g_free(tr);
  g_free(te);
  tr = cli_path(trained, "train.idx");
  te = cli_path(trained, "test.idx");
  CU_ASSERT_TRUE(cli_same_file(tr, te));
  g_free(tr);
  g_free(te);
  char *model = cli_path(trained, "spm.model");
  CU_ASSERT_TRUE_FATAL(g_file_test(model, G_FILE_TEST_IS_REGULAR));
  const char *given_opts[] = {"--bpe", "sentencepiece", "--sentencepiece-model", model, "--testpref", train, NULL};
  CU_ASSERT_EQUAL_FATAL(run_workers(train, valid, given1, "1", NULL, given_opts), 0);
  CU_ASSERT_EQUAL_FATAL(run_workers(train, valid, given4, "4", "5000", given_opts), 0);
  const char *files[] = {"dict.txt",  "spm.model", "train.bin", "train.idx", "valid.bin",
                         "valid.idx", "test.bin",  "test.idx",  NULL};
  assert_same_outputs(trained, given1, files);
  assert_same_outputs(given1, given4, files);

  /* The dictionary respects --nwordssrc: pieces + 4 specials <= 300 before padding. */
  char *p = cli_path(trained, "dict.txt");
  char *dict = moelm_test_read_file(p, NULL);
  g_free(p);
  int words = 0, padding = 0;
  gchar **dict_lines = g_strsplit(dict, "\n", -1);
  for (int i = 0; dict_lines[i] && *dict_lines[i]; i++) {
    if (g_str_has_prefix(dict_lines[i], "madeupword"))
      padding++;
    else
      words++;
  }
  g_strfreev(dict_lines);
  g_free(dict);
  CU_ASSERT_TRUE(words > 50);
  CU_ASSERT_TRUE(words + 4 <= 300);
  CU_ASSERT_EQUAL((words + padding + 4) % 8, 0);

  /* Every line is one sequence; exactly the empty lines are [</s>] (size 1). */
  assert_lines_and_breaks(trained, lines, empty);

  g_free(model);
  g_free(trained);
  g_free(given1);
  g_free(given4);
  g_free(train);
  g_free(valid);
  moelm_test_rmtree(dir);
  g_free(dir);
}

/* --sentencepiece-keep-whitespace: the trained model keeps indentation (dict.txt gets a piece
 * of spaces only), a line of spaces only is still a document break, the Namespace line says
 * so; with another --bpe or a given model it is refused. */
static void test_sentencepiece_keep_whitespace(void)
{
  char *dir = moelm_test_tmpdir();
  char *text = cli_generate_text(60000, 13);
  GString *indented = g_string_new(NULL);
  char **lines = g_strsplit(text, "\n", -1);
  int seqs = 0, breaks = 0;
  for (int i = 0; lines[i] && lines[i + 1]; i++, seqs++) {
    gboolean blank = lines[i][0] == '\0' || lines[i][0] == '\r';
    breaks += blank;
    g_string_append_printf(indented, "%s%s\n", blank ? "   " : i % 2 ? "        " : "", lines[i]);
  }
  g_strfreev(lines);
  char *train = cli_write(dir, "train.txt", indented->str);
  g_string_free(indented, TRUE);
  g_free(text);
  char *dest = cli_path(dir, "ws");
  const char *opts[] = {"--bpe", "sentencepiece", "--sentencepiece-keep-whitespace", "--nwordssrc", "400", NULL};
  CU_ASSERT_EQUAL_FATAL(run_workers(train, train, dest, "2", NULL, opts), 0);

  char *p = cli_path(dest, "dict.txt");
  char *dict = moelm_test_read_file(p, NULL);
  g_free(p);
  CU_ASSERT_PTR_NOT_NULL_FATAL(dict);
  /* the indent: a line of dict.txt whose word is "\u2581" x 2 or more */
  gboolean indent_piece = FALSE;
  gchar **dict_lines = g_strsplit(dict, "\n", -1);
  for (int i = 0; dict_lines[i] && !indent_piece; i++) {
    const char *space = strchr(dict_lines[i], ' ');
    indent_piece = space && moelm_test_spm_spaces(dict_lines[i], (gsize)(space - dict_lines[i])) >= 2;
  }
  g_strfreev(dict_lines);
  CU_ASSERT_TRUE(indent_piece);
  g_free(dict);
  assert_lines_and_breaks(dest, seqs, breaks);
  p = cli_path(dest, "preprocess.log");
  char *log = moelm_test_read_file(p, NULL);
  g_free(p);
  CU_ASSERT_PTR_NOT_NULL(log && strstr(log, "sentencepiece_keep_whitespace=True, "));
  g_free(log);

  char *model = cli_path(dest, "spm.model"), *other = cli_path(dir, "other");
  const char *bad1[] = {"preprocess", "--only-source", "--trainpref", train, "--destdir", other,
                        "--sentencepiece-keep-whitespace", NULL};
  const char *bad2[] = {"preprocess", "--only-source", "--trainpref", train, "--destdir", other, "--bpe",
                        "sentencepiece", "--sentencepiece-model", model, "--sentencepiece-keep-whitespace", NULL};
  const char *want[] = {"--sentencepiece-keep-whitespace needs --bpe sentencepiece",
                        "--sentencepiece-keep-whitespace trains a model; with --sentencepiece-model the given model"};
  const char *const *bad[] = {bad1, bad2};
  for (int i = 0; i < 2; i++) {
    char *err = NULL;
    CU_ASSERT_EQUAL(moelm_test_run_cli(bad[i], NULL, NULL, &err), 2);
    CU_ASSERT_PTR_NOT_NULL(err && strstr(err, want[i]));
    CU_ASSERT_FALSE(g_file_test(other, G_FILE_TEST_EXISTS));
    g_free(err);
  }
  g_free(model);
  g_free(other);
  g_free(dest);
  g_free(train);
  moelm_test_rmtree(dir);
  g_free(dir);
}

/* More than 0.5% <unk> in a split of a SentencePiece data-bin is warned about, once per
 * split, with the reason and a smaller --nwordssrc; a vocabulary that fits gets no warning. */
static void test_sentencepiece_unk_warning(void)
{
  char *dir = moelm_test_tmpdir();
  char *src = moelm_test_srcpath("data-bin/text/train.txt"), *vsrc = moelm_test_srcpath("data-bin/text/valid.txt");
  gsize len = 0, vlen = 0;
  char *all = moelm_test_read_file(src, &len), *vall = moelm_test_read_file(vsrc, &vlen);
  CU_ASSERT_PTR_NOT_NULL_FATAL(all);
  CU_ASSERT_PTR_NOT_NULL_FATAL(vall);
  /* the first 3,000 lines of train, 300 of valid: 4.5k pieces in use at --nwordssrc 6000 */
  char *cut = all, *vcut = vall;
  for (int n = 0; n < 3000 && (cut = strchr(cut, '\n')) != NULL; n++)
    cut++;
  for (int n = 0; n < 300 && (vcut = strchr(vcut, '\n')) != NULL; n++)
    vcut++;
  CU_ASSERT_PTR_NOT_NULL_FATAL(cut);
  CU_ASSERT_PTR_NOT_NULL_FATAL(vcut);
  *cut = *vcut = '\0';
  char *train = cli_write(dir, "train.txt", all), *valid = cli_write(dir, "valid.txt", vall);
  char *big = cli_path(dir, "big"), *small = cli_path(dir, "small");
  const char *args[] = {"preprocess", "--only-source", "--trainpref", train, "--validpref", valid, "--destdir", big,
                        "--bpe", "sentencepiece", "--nwordssrc", "6000", "--workers", "2", NULL};
  char *out = NULL, *err = NULL;
  CU_ASSERT_EQUAL(moelm_test_run_cli(args, NULL, &out, &err), 0);
  const char *w = strstr(err, "WARNING");
  CU_ASSERT_PTR_NOT_NULL_FATAL(w);
  CU_ASSERT_PTR_NULL(strstr(w + 1, "WARNING")); /* valid only: train has no <unk> */
  CU_ASSERT_PTR_NOT_NULL(strstr(w, "valid.txt: "));
  CU_ASSERT_PTR_NOT_NULL(strstr(w, "% of the tokens became <unk>: dict.txt holds only the "));
  CU_ASSERT_PTR_NOT_NULL(strstr(w, "pieces that occur in the training split"));
  CU_ASSERT_PTR_NOT_NULL(strstr(w, "Use a smaller --nwordssrc (e.g. "));
  g_free(out);
  g_free(err);
  args[7] = small;
  args[11] = "1000";
  CU_ASSERT_EQUAL(moelm_test_run_cli(args, NULL, &out, &err), 0);
  CU_ASSERT_PTR_NULL(strstr(err, "WARNING"));
  g_free(out);
  g_free(err);
  g_free(big);
  g_free(small);
  g_free(train);
  g_free(valid);
  g_free(all);
  g_free(vall);
  g_free(src);
  g_free(vsrc);
  moelm_test_rmtree(dir);
  g_free(dir);
}

MOELM_TEST_SUITE(cli_preprocess)
{
  CU_add_test(suite, "exact dict.txt, .idx, .bin and log lines", test_exact_outputs);
  CU_add_test(suite, "--source-lang file names", test_source_lang_names);
  CU_add_test(suite, "--workers 1, 3, 4 give the same bytes", test_workers_identical);
  CU_add_test(suite, "--bpe sentencepiece: trained and given model, workers", test_sentencepiece);
  CU_add_test(suite, "--bpe sentencepiece: a warning for more than 0.5% <unk>", test_sentencepiece_unk_warning);
  CU_add_test(suite, "--sentencepiece-keep-whitespace: indentation kept, breaks kept",
              test_sentencepiece_keep_whitespace);
}
