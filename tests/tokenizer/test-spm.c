/* The SentencePiece shim against SentencePiece's own command-line tools: a BPE model
 * trained here encodes exactly as spm_encode does, trains exactly as spm_train does, and
 * the error paths give one-line GErrors naming the file. */
#include "config.h"

#include <string.h>

#include "moelm-test.h"
#include "moelm/errors.h"
#include "moelm/rng.h"
#include "moelm/spm.h"

static const char *const words[] = {
  "the",     "of",      "and",     "to",       "in",       "a",       "is",      "that",     "for",    "it",
  "as",      "was",     "with",    "be",       "by",       "on",      "not",     "he",       "this",   "are",
  "or",      "his",     "from",    "at",       "which",    "but",     "have",    "an",       "had",    "they",
  "you",     "were",    "their",   "one",      "all",      "we",      "can",     "her",      "has",    "there",
  "been",    "if",      "more",    "when",     "will",     "would",   "who",     "so",       "no",     "river",
  "mountain", "village", "teacher", "language", "computer", "history", "morning", "question", "garden", "number",
  "system",  "children", "window",  "thousand", "quickly",  "beautiful", "between", "through", "because", "important",
  "running", "walked",  "thinking", "different", "government", "information", "development", "understanding",
  "experience", "possible", "together", "national", "students", "problems", "research", "morning", "evening",
};

/* Deterministic English-like text: ~1500 sentences, some commas, numbers and quotes. */
static char *make_corpus(void)
{
  MoelmRng rng;
  moelm_rng_init(&rng, 2024, 0, 0);
  GString *s = g_string_new(NULL);
  for (int line = 0; line < 1500; line++) {
    int n = 4 + (int)moelm_rng_next_below(&rng, 12);
    for (int i = 0; i < n; i++) {
      const char *w = words[moelm_rng_next_below(&rng, G_N_ELEMENTS(words))];
      if (i > 0)
        g_string_append_c(s, ' ');
      if (moelm_rng_next_below(&rng, 25) == 0) {
        g_string_append_printf(s, "%u", moelm_rng_next_below(&rng, 2000));
        continue;
      }
      if (i == 0) {
        g_string_append_c(s, g_ascii_toupper(w[0]));
        g_string_append(s, w + 1);
      } else {
        g_string_append(s, w);
      }
      if (i + 1 < n && moelm_rng_next_below(&rng, 10) == 0)
        g_string_append_c(s, ',');
    }
    static const char ends[] = ".?!";
    g_string_append_c(s, ends[moelm_rng_next_below(&rng, 10) < 8 ? 0 : 1 + moelm_rng_next_below(&rng, 2)]);
    g_string_append_c(s, '\n');
  }
  return g_string_free(s, FALSE);
}

static const char *const probe_lines[] = {
  "The river was running through the village in the morning.",
  "Understanding the information is important, because the students have problems!",
  "  leading and   repeated   spaces  ",
  "Numbers like 1234 and 42 appear in 1999.",
  "Caf\xc3\xa9 \xe4\xb8\xad\xe6\x96\x87 characters never seen in training",
  "unbelievable reconstruction of multidisciplinary",
  "",
  "a",
  "Who would have thought?",
};

typedef struct {
  char *dir;
  char *corpus;
  char *model; /* DIR/m.model */
} Fixture;

static gboolean train_fixture(Fixture *fx, int vocab, int threads)
{
  fx->dir = moelm_test_tmpdir();
  fx->corpus = g_build_filename(fx->dir, "corpus.txt", NULL);
  char *text = make_corpus();
  moelm_test_write_file(fx->corpus, text, strlen(text));
  g_free(text);
  char *prefix = g_build_filename(fx->dir, "m", NULL);
  fx->model = g_strconcat(prefix, ".model", NULL);
  GError *error = NULL;
  gboolean ok = moelm_spm_train_bpe(fx->corpus, prefix, vocab, threads, FALSE, &error);
  if (!ok)
    g_printerr("\n  training failed: %s\n", error->message);
  g_clear_error(&error);
  g_free(prefix);
  return ok;
}

static void fixture_clear(Fixture *fx)
{
  moelm_test_rmtree(fx->dir);
  g_free(fx->dir);
  g_free(fx->corpus);
  g_free(fx->model);
}

/* Run a SentencePiece tool; NULL (with a note) when it is not installed. */
static char *run_tool(const char *const *argv)
{
  char *prog = g_find_program_in_path(argv[0]);
  if (prog == NULL) {
    g_printerr("\n  (%s not found: comparison skipped)\n", argv[0]);
    return NULL;
  }
  GPtrArray *args = g_ptr_array_new();
  g_ptr_array_add(args, prog);
  for (int i = 1; argv[i]; i++)
    g_ptr_array_add(args, (gpointer)argv[i]);
  g_ptr_array_add(args, NULL);
  char *out = NULL;
  int status = 0;
  GError *error = NULL;
  gboolean ok = g_spawn_sync(NULL, (char **)args->pdata, NULL, G_SPAWN_STDERR_TO_DEV_NULL, NULL, NULL, &out, NULL,
                             &status, &error);
  CU_ASSERT_TRUE(ok);
  CU_ASSERT_TRUE(ok && g_spawn_check_wait_status(status, NULL));
  g_clear_error(&error);
  g_ptr_array_free(args, TRUE);
  g_free(prog);
  return out;
}

static char *join_pieces(GPtrArray *pieces)
{
  g_ptr_array_add(pieces, NULL);
  char *s = g_strjoinv(" ", (char **)pieces->pdata);
  g_ptr_array_remove_index(pieces, pieces->len - 1);
  return s;
}

static char *join_ids(GArray *ids)
{
  GString *s = g_string_new(NULL);
  for (guint i = 0; i < ids->len; i++)
    g_string_append_printf(s, i ? " %d" : "%d", g_array_index(ids, int, i));
  return g_string_free(s, FALSE);
}

/* Compare the shim with spm_encode on every line of `lines` (piece and id formats).
 * Returns the number of lines compared (0 when spm_encode is missing). */
static int compare_with_spm_encode(const char *model_path, const char *const *lines, int n, const char *tmpdir)
{
  GString *file = g_string_new(NULL);
  for (int i = 0; i < n; i++)
    g_string_append_printf(file, "%s\n", lines[i]);
  char *input = g_build_filename(tmpdir, "probe.txt", NULL);
  moelm_test_write_file(input, file->str, file->len);
  g_string_free(file, TRUE);
  char *model_arg = g_strconcat("--model=", model_path, NULL);
  const char *piece_argv[] = {"spm_encode", model_arg, "--output_format=piece", input, NULL};
  const char *id_argv[] = {"spm_encode", model_arg, "--output_format=id", input, NULL};
  char *piece_out = run_tool(piece_argv);
  char *id_out = piece_out ? run_tool(id_argv) : NULL;
  int compared = 0;
  if (piece_out && id_out) {
    GError *error = NULL;
    MoelmSpm *spm = moelm_spm_load(model_path, &error);
    CU_ASSERT_PTR_NOT_NULL_FATAL(spm);
    char **want_pieces = g_strsplit(piece_out, "\n", -1);
    char **want_ids = g_strsplit(id_out, "\n", -1);
    CU_ASSERT_EQUAL_FATAL(g_strv_length(want_pieces), (guint)n + 1);
    CU_ASSERT_EQUAL_FATAL(g_strv_length(want_ids), (guint)n + 1);
    for (int i = 0; i < n; i++) {
      GPtrArray *pieces = moelm_spm_encode_pieces(spm, lines[i], strlen(lines[i]), &error);
      GArray *ids = moelm_spm_encode_ids(spm, lines[i], strlen(lines[i]), &error);
      CU_ASSERT_PTR_NOT_NULL_FATAL(pieces);
      CU_ASSERT_PTR_NOT_NULL_FATAL(ids);
      CU_ASSERT_EQUAL(pieces->len, ids->len);
      char *got_pieces = join_pieces(pieces), *got_ids = join_ids(ids);
      if (strcmp(got_pieces, want_pieces[i]) != 0 || strcmp(got_ids, want_ids[i]) != 0)
        g_printerr("\n  line %d: shim [%s] / [%s], spm_encode [%s] / [%s]\n", i, got_pieces, got_ids, want_pieces[i],
                   want_ids[i]);
      CU_ASSERT_STRING_EQUAL(got_pieces, want_pieces[i]);
      CU_ASSERT_STRING_EQUAL(got_ids, want_ids[i]);
      g_free(got_pieces);
      g_free(got_ids);
      g_ptr_array_unref(pieces);
      g_array_unref(ids);
      compared++;
    }
    g_strfreev(want_pieces);
    g_strfreev(want_ids);
    moelm_spm_free(spm);
  }
  g_free(piece_out);
  g_free(id_out);
  g_free(model_arg);
  g_free(input);
  return compared;
}

static void test_encode_matches_spm_encode(void)
{
  Fixture fx;
  CU_ASSERT_TRUE_FATAL(train_fixture(&fx, 400, 2));
  GError *error = NULL;
  MoelmSpm *spm = moelm_spm_load(fx.model, &error);
  CU_ASSERT_PTR_NOT_NULL_FATAL(spm);
  CU_ASSERT_EQUAL(moelm_spm_vocab_size(spm), 400);
  moelm_spm_free(spm);

  int n = (int)G_N_ELEMENTS(probe_lines);
  /* A few corpus lines as well as the probes. */
  char *text = NULL;
  CU_ASSERT_TRUE_FATAL(g_file_get_contents(fx.corpus, &text, NULL, NULL));
  char **corpus_lines = g_strsplit(text, "\n", 31);
  GPtrArray *lines = g_ptr_array_new();
  for (int i = 0; i < n; i++)
    g_ptr_array_add(lines, (gpointer)probe_lines[i]);
  for (int i = 0; i < 30; i++)
    g_ptr_array_add(lines, corpus_lines[i]);
  compare_with_spm_encode(fx.model, (const char *const *)lines->pdata, (int)lines->len, fx.dir);
  g_ptr_array_free(lines, TRUE);
  g_strfreev(corpus_lines);
  g_free(text);
  fixture_clear(&fx);
}

static void test_decode_round_trip(void)
{
  Fixture fx;
  CU_ASSERT_TRUE_FATAL(train_fixture(&fx, 300, 1));
  GError *error = NULL;
  MoelmSpm *spm = moelm_spm_load(fx.model, &error);
  CU_ASSERT_PTR_NOT_NULL_FATAL(spm);
  /* Normalised text (single spaces, no edges) comes back unchanged; other whitespace is
   * normalised as SentencePiece does. */
  const char *cases[][2] = {
    {"The river was running through the village.", NULL},
    {"Numbers like 1234, quickly!", NULL},
    {"reconstruction multidisciplinary zebra", NULL},
    {"  leading and   repeated   spaces  ", "leading and repeated spaces"},
    {"", NULL},
  };
  for (gsize i = 0; i < G_N_ELEMENTS(cases); i++) {
    const char *in = cases[i][0], *want = cases[i][1] ? cases[i][1] : cases[i][0];
    GPtrArray *pieces = moelm_spm_encode_pieces(spm, in, strlen(in), &error);
    CU_ASSERT_PTR_NOT_NULL_FATAL(pieces);
    char *out = moelm_spm_decode_pieces(spm, (const char *const *)pieces->pdata, pieces->len, &error);
    CU_ASSERT_PTR_NOT_NULL_FATAL(out);
    CU_ASSERT_STRING_EQUAL(out, want);
    g_free(out);
    g_ptr_array_unref(pieces);
  }
  /* Encoding honours the length, not a terminator. */
  GPtrArray *pieces = moelm_spm_encode_pieces(spm, "river mountain", 5, &error);
  char *out = moelm_spm_decode_pieces(spm, (const char *const *)pieces->pdata, pieces->len, &error);
  CU_ASSERT_STRING_EQUAL(out, "river");
  g_free(out);
  g_ptr_array_unref(pieces);
  moelm_spm_free(spm);
  fixture_clear(&fx);
}

typedef struct {
  const MoelmSpm *spm;
  char **lines;
  char **want; /* pieces joined by spaces, per line */
  int n;
  gboolean ok;
} EncodeJob;

static gpointer encode_all(gpointer data)
{
  EncodeJob *job = data;
  job->ok = TRUE;
  for (int rep = 0; rep < 20; rep++) {
    for (int i = 0; i < job->n; i++) {
      GPtrArray *pieces = moelm_spm_encode_pieces(job->spm, job->lines[i], strlen(job->lines[i]), NULL);
      char *got = join_pieces(pieces);
      job->ok = job->ok && strcmp(got, job->want[i]) == 0;
      g_free(got);
      g_ptr_array_unref(pieces);
    }
  }
  return NULL;
}

/* One MoelmSpm shared by four threads encodes as it does alone. */
static void test_concurrent_encoding(void)
{
  Fixture fx;
  CU_ASSERT_TRUE_FATAL(train_fixture(&fx, 300, 1));
  MoelmSpm *spm = moelm_spm_load(fx.model, NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(spm);
  char *text = NULL;
  CU_ASSERT_TRUE_FATAL(g_file_get_contents(fx.corpus, &text, NULL, NULL));
  char **lines = g_strsplit(text, "\n", 101);
  int n = 100;
  char **want = g_new0(char *, n + 1);
  for (int i = 0; i < n; i++) {
    GPtrArray *pieces = moelm_spm_encode_pieces(spm, lines[i], strlen(lines[i]), NULL);
    want[i] = join_pieces(pieces);
    g_ptr_array_unref(pieces);
  }
  EncodeJob jobs[4];
  GThread *threads[4];
  for (int t = 0; t < 4; t++) {
    jobs[t] = (EncodeJob){spm, lines, want, n, FALSE};
    threads[t] = g_thread_new("encode", encode_all, &jobs[t]);
  }
  for (int t = 0; t < 4; t++) {
    g_thread_join(threads[t]);
    CU_ASSERT_TRUE(jobs[t].ok);
  }
  g_strfreev(want);
  g_strfreev(lines);
  g_free(text);
  moelm_spm_free(spm);
  fixture_clear(&fx);
}

/* Same options through spm_train give the same vocabulary; training is deterministic and
 * independent of the thread count. */
static void test_training_matches_spm_train(void)
{
  Fixture fx;
  CU_ASSERT_TRUE_FATAL(train_fixture(&fx, 350, 2));
  char *vocab_path = g_build_filename(fx.dir, "m.vocab", NULL);
  gsize vocab_len = 0, model_len = 0;
  char *vocab = moelm_test_read_file(vocab_path, &vocab_len);
  char *model = moelm_test_read_file(fx.model, &model_len);
  CU_ASSERT_PTR_NOT_NULL_FATAL(vocab);
  CU_ASSERT_PTR_NOT_NULL_FATAL(model);

  /* Same options twice: the same bytes. One thread instead of two: the same pieces (the
   * model records num_threads in its trainer spec, so only the .vocab can be compared). */
  GError *error = NULL;
  char *prefix1 = g_build_filename(fx.dir, "again", NULL);
  CU_ASSERT_TRUE_FATAL(moelm_spm_train_bpe(fx.corpus, prefix1, 350, 2, FALSE, &error));
  char *model1_path = g_strconcat(prefix1, ".model", NULL);
  gsize model1_len = 0;
  char *model1 = moelm_test_read_file(model1_path, &model1_len);
  CU_ASSERT_EQUAL(model1_len, model_len);
  CU_ASSERT(model1 && model1_len == model_len && memcmp(model1, model, model_len) == 0);
  CU_ASSERT_TRUE_FATAL(moelm_spm_train_bpe(fx.corpus, prefix1, 350, 1, FALSE, &error));
  char *vocab1_path = g_strconcat(prefix1, ".vocab", NULL);
  gsize vocab1_len = 0;
  char *vocab1 = moelm_test_read_file(vocab1_path, &vocab1_len);
  CU_ASSERT(vocab1 && vocab1_len == vocab_len && memcmp(vocab1, vocab, vocab_len) == 0);
  g_free(vocab1);
  g_free(vocab1_path);

  char *input_arg = g_strconcat("--input=", fx.corpus, NULL);
  char *prefix2 = g_build_filename(fx.dir, "cli", NULL);
  char *prefix_arg = g_strconcat("--model_prefix=", prefix2, NULL);
  const char *argv[] = {"spm_train",          input_arg,                  prefix_arg,           "--vocab_size=350",
                        "--model_type=bpe",   "--character_coverage=1.0", "--byte_fallback=false",
                        "--hard_vocab_limit=false", "--minloglevel=3",     NULL};
  char *out = run_tool(argv);
  if (out) {
    char *cli_vocab_path = g_strconcat(prefix2, ".vocab", NULL);
    gsize cli_len = 0;
    char *cli_vocab = moelm_test_read_file(cli_vocab_path, &cli_len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(cli_vocab);
    CU_ASSERT_EQUAL(cli_len, vocab_len);
    CU_ASSERT(memcmp(cli_vocab, vocab, MIN(cli_len, vocab_len)) == 0);
    g_free(cli_vocab);
    g_free(cli_vocab_path);
  }
  g_free(out);
  g_free(prefix_arg);
  g_free(prefix2);
  g_free(input_arg);
  g_free(model1);
  g_free(model1_path);
  g_free(prefix1);
  g_free(model);
  g_free(vocab);
  g_free(vocab_path);
  fixture_clear(&fx);
}

/* keep_whitespace: a model trained on indented text keeps indentation and runs of spaces,
 * a run becoming a piece of its own, and equals spm_train's with SentencePiece's two options. */
static void test_keep_whitespace(void)
{
  char *dir = moelm_test_tmpdir();
  char *corpus = g_build_filename(dir, "indented.txt", NULL);
  char *text = make_corpus();
  /* every line indented by 0, 4 or 8 spaces, some with a double space inside */
  char **lines = g_strsplit(text, "\n", -1);
  GString *indented = g_string_new(NULL);
  for (int i = 0; lines[i]; i++) {
    if (!lines[i][0])
      continue;
    g_string_append_printf(indented, "%*s%s%s\n", 4 * (i % 3), "", i % 5 == 0 ? "Note:  " : "", lines[i]);
  }
  moelm_test_write_file(corpus, indented->str, indented->len);
  g_string_free(indented, TRUE);
  g_strfreev(lines);
  g_free(text);

  char *prefix = g_build_filename(dir, "ws", NULL);
  char *model = g_strconcat(prefix, ".model", NULL);
  GError *error = NULL;
  CU_ASSERT_TRUE_FATAL(moelm_spm_train_bpe(corpus, prefix, 400, 1, TRUE, &error));
  MoelmSpm *spm = moelm_spm_load(model, &error);
  CU_ASSERT_PTR_NOT_NULL_FATAL(spm);
  const char *cases[] = {"        The river was running.", "    Note:  the   village  ", "a"};
  for (gsize i = 0; i < G_N_ELEMENTS(cases); i++) {
    GPtrArray *pieces = moelm_spm_encode_pieces(spm, cases[i], strlen(cases[i]), &error);
    CU_ASSERT_PTR_NOT_NULL_FATAL(pieces);
    char *out = moelm_spm_decode_pieces(spm, (const char *const *)pieces->pdata, pieces->len, &error);
    CU_ASSERT_STRING_EQUAL(out, cases[i]); /* nothing collapsed, nothing stripped */
    if (i == 0) { /* the 8-space indent opens with a piece of 7 or 8 "\u2581" and nothing else */
      const char *first = g_ptr_array_index(pieces, 0);
      CU_ASSERT_TRUE(moelm_test_spm_spaces(first, strlen(first)) >= 7);
    }
    g_free(out);
    g_ptr_array_unref(pieces);
  }
  moelm_spm_free(spm);
  compare_with_spm_encode(model, cases, (int)G_N_ELEMENTS(cases), dir);

  /* the same pieces as spm_train given SentencePiece's own options */
  char *input_arg = g_strconcat("--input=", corpus, NULL);
  char *cli_prefix = g_build_filename(dir, "cli", NULL);
  char *prefix_arg = g_strconcat("--model_prefix=", cli_prefix, NULL);
  const char *argv[] = {"spm_train",           input_arg,           prefix_arg,
                        "--vocab_size=400",    "--model_type=bpe",  "--character_coverage=1.0",
                        "--byte_fallback=false", "--hard_vocab_limit=false", "--remove_extra_whitespaces=false",
                        "--allow_whitespace_only_pieces=true", "--minloglevel=3", NULL};
  char *out = run_tool(argv);
  if (out) {
    char *vocab_path = g_strconcat(prefix, ".vocab", NULL), *cli_vocab_path = g_strconcat(cli_prefix, ".vocab", NULL);
    gsize len = 0, cli_len = 0;
    char *vocab = moelm_test_read_file(vocab_path, &len), *cli_vocab = moelm_test_read_file(cli_vocab_path, &cli_len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(vocab);
    CU_ASSERT_PTR_NOT_NULL_FATAL(cli_vocab);
    CU_ASSERT(len == cli_len && memcmp(vocab, cli_vocab, len) == 0);
    g_free(vocab);
    g_free(cli_vocab);
    g_free(vocab_path);
    g_free(cli_vocab_path);
  }
  g_free(out);
  g_free(prefix_arg);
  g_free(cli_prefix);
  g_free(input_arg);
  g_free(model);
  g_free(prefix);
  g_free(corpus);
  moelm_test_rmtree(dir);
  g_free(dir);
}

static void test_oversized_vocab_gets_fewer_pieces(void)
{
  char *dir = moelm_test_tmpdir();
  char *corpus = g_build_filename(dir, "tiny.txt", NULL);
  const char *text = "the cat sat on the mat\nthe dog sat on the log\na cat and a dog\n";
  moelm_test_write_file(corpus, text, strlen(text));
  char *prefix = g_build_filename(dir, "big", NULL);
  GError *error = NULL;
  CU_ASSERT_TRUE_FATAL(moelm_spm_train_bpe(corpus, prefix, 50000, 1, FALSE, &error));
  char *model = g_strconcat(prefix, ".model", NULL);
  MoelmSpm *spm = moelm_spm_load(model, &error);
  CU_ASSERT_PTR_NOT_NULL_FATAL(spm);
  int n = moelm_spm_vocab_size(spm);
  CU_ASSERT(n > 20 && n < 100);
  /* The .vocab lists every piece of the model. */
  char *vocab_path = g_strconcat(prefix, ".vocab", NULL);
  char *vocab = moelm_test_read_file(vocab_path, NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(vocab);
  char **lines = g_strsplit(vocab, "\n", -1);
  CU_ASSERT_EQUAL(g_strv_length(lines), (guint)n + 1);
  CU_ASSERT_STRING_EQUAL(lines[0], "<unk>\t0");
  g_strfreev(lines);
  GPtrArray *pieces = moelm_spm_encode_pieces(spm, "the cat", 7, &error);
  char *joined = join_pieces(pieces);
  CU_ASSERT_STRING_EQUAL(joined, "\xe2\x96\x81the \xe2\x96\x81" "cat");
  g_free(joined);
  g_ptr_array_unref(pieces);
  moelm_spm_free(spm);

  /* Too small for the characters alone: an error, not a crash. */
  CU_ASSERT_FALSE(moelm_spm_train_bpe(corpus, prefix, 5, 1, FALSE, &error));
  MOELM_ASSERT_ERROR(error, corpus);
  CU_ASSERT_PTR_NULL(strchr(error->message, '\n'));
  g_clear_error(&error);
  g_free(vocab);
  g_free(vocab_path);
  g_free(model);
  g_free(prefix);
  g_free(corpus);
  moelm_test_rmtree(dir);
  g_free(dir);
}

static void test_errors_name_the_file(void)
{
  char *dir = moelm_test_tmpdir();
  GError *error = NULL;
  char *missing = g_build_filename(dir, "missing.model", NULL);
  CU_ASSERT_PTR_NULL(moelm_spm_load(missing, &error));
  MOELM_ASSERT_ERROR(error, missing);
  MOELM_ASSERT_ERROR(error, "No such file");
  CU_ASSERT_EQUAL(error->code, MOELM_ERROR_IO);
  g_clear_error(&error);

  const char *bad_contents[] = {"this is not a protobuf at all\n", "", "\x0a\x05\x0a\x03"};
  for (gsize i = 0; i < G_N_ELEMENTS(bad_contents); i++) {
    char *bad = g_build_filename(dir, "bad.model", NULL);
    moelm_test_write_file(bad, bad_contents[i], strlen(bad_contents[i]));
    CU_ASSERT_PTR_NULL(moelm_spm_load(bad, &error));
    MOELM_ASSERT_ERROR(error, bad);
    MOELM_ASSERT_ERROR(error, "not a SentencePiece model");
    CU_ASSERT_PTR_NULL(strchr(error->message, '\n'));
    g_clear_error(&error);
    g_free(bad);
  }
  CU_ASSERT_PTR_NULL(moelm_spm_load(dir, &error));
  MOELM_ASSERT_ERROR(error, "not a regular file");
  g_clear_error(&error);

  char *prefix = g_build_filename(dir, "m", NULL);
  char *no_input = g_build_filename(dir, "no-input.txt", NULL);
  CU_ASSERT_FALSE(moelm_spm_train_bpe(no_input, prefix, 100, 1, FALSE, &error));
  MOELM_ASSERT_ERROR(error, no_input);
  g_clear_error(&error);
  char *blank = g_build_filename(dir, "blank.txt", NULL);
  moelm_test_write_file(blank, "\n\n", 2);
  CU_ASSERT_FALSE(moelm_spm_train_bpe(blank, prefix, 100, 1, FALSE, &error));
  MOELM_ASSERT_ERROR(error, blank);
  MOELM_ASSERT_ERROR(error, "no text to train on");
  g_clear_error(&error);
  g_free(blank);
  char *model = g_strconcat(prefix, ".model", NULL);
  CU_ASSERT_FALSE(g_file_test(model, G_FILE_TEST_EXISTS));
  g_free(model);
  g_free(no_input);
  g_free(prefix);
  g_free(missing);
  moelm_test_rmtree(dir);
  g_free(dir);
}

/* The shipped data-bin model against spm_encode on the first 200 validation lines. */
static void test_shipped_model(void)
{
  char *model = moelm_test_srcpath("data-bin/demo/spm.model");
  char *valid = moelm_test_srcpath("data-bin/text/valid.txt");
  if (!g_file_test(model, G_FILE_TEST_IS_REGULAR) || !g_file_test(valid, G_FILE_TEST_IS_REGULAR)) {
    g_printerr("\n  (data-bin/demo/spm.model or data-bin/text/valid.txt absent: shipped-model comparison skipped)\n");
    g_free(model);
    g_free(valid);
    return;
  }
  char *text = NULL;
  CU_ASSERT_TRUE_FATAL(g_file_get_contents(valid, &text, NULL, NULL));
  char **lines = g_strsplit(text, "\n", 201);
  int n = (int)MIN(g_strv_length(lines), 200u);
  /* The last split element holds the rest of the file when there are more lines. */
  if (n > 0 && g_strv_length(lines) <= 200 && lines[n - 1][0] == '\0')
    n--;
  char *dir = moelm_test_tmpdir();
  int compared = compare_with_spm_encode(model, (const char *const *)lines, n, dir);
  CU_ASSERT(compared == 0 || compared == n);
  moelm_test_rmtree(dir);
  g_free(dir);
  g_strfreev(lines);
  g_free(text);
  g_free(model);
  g_free(valid);
}

MOELM_TEST_SUITE(spm)
{
  CU_add_test(suite, "pieces and ids equal spm_encode's", test_encode_matches_spm_encode);
  CU_add_test(suite, "decode(encode(x)) is the normalised x", test_decode_round_trip);
  CU_add_test(suite, "concurrent encoding on one model", test_concurrent_encoding);
  CU_add_test(suite, "training is deterministic and matches spm_train", test_training_matches_spm_train);
  CU_add_test(suite, "keep_whitespace keeps indentation, as spm_train does", test_keep_whitespace);
  CU_add_test(suite, "an oversized vocabulary gets fewer pieces", test_oversized_vocab_gets_fewer_pieces);
  CU_add_test(suite, "missing and corrupt files give errors naming them", test_errors_name_the_file);
  CU_add_test(suite, "shipped data-bin model equals spm_encode (when present)", test_shipped_model);
}
