/* GPT-2 byte-level BPE against a reference implementation: tests/tokenizer/gpt2-expected.jsonl
 * (made by gpt2-reference.js from the npm package gpt-3-encoder) holds the ids of Unicode edge
 * cases, random strings and random bytes, and hashes of the shipped corpus encoded line by line
 * as fairseq's encoding script does. Also: decode(encode(x)) == x, and bad vocabulary files. */
#include "config.h"

#include <string.h>

#include <json-glib/json-glib.h>

#include "moelm-test.h"
#include "moelm/binarizer.h"
#include "moelm/errors.h"
#include "moelm/gpt2_bpe.h"

static MoelmGpt2Bpe *load_real(void)
{
  char *enc = moelm_test_srcpath("data-bin/gpt2/encoder.json"), *voc = moelm_test_srcpath("data-bin/gpt2/vocab.bpe");
  GError *error = NULL;
  MoelmGpt2Bpe *bpe = moelm_gpt2_bpe_load(enc, voc, &error);
  if (bpe == NULL)
    g_printerr("\n  %s\n", error->message);
  CU_ASSERT_PTR_NOT_NULL_FATAL(bpe);
  g_free(enc);
  g_free(voc);
  return bpe;
}

static GPtrArray *expected_cases(void)
{
  char *path = moelm_test_srcpath("tests/tokenizer/gpt2-expected.jsonl");
  char *text = moelm_test_read_file(path, NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(text);
  GPtrArray *out = g_ptr_array_new_with_free_func((GDestroyNotify)json_object_unref);
  char **lines = g_strsplit(text, "\n", -1);
  for (char **l = lines; *l; l++) {
    if (**l == '\0')
      continue;
    JsonParser *p = json_parser_new();
    CU_ASSERT_TRUE_FATAL(json_parser_load_from_data(p, *l, -1, NULL));
    g_ptr_array_add(out, json_object_ref(json_node_get_object(json_parser_get_root(p))));
    g_object_unref(p);
  }
  g_strfreev(lines);
  g_free(text);
  g_free(path);
  return out;
}

/* Every text case: the reference's ids, and decoding gives the text back. */
static void test_reference_ids(void)
{
  MoelmGpt2Bpe *bpe = load_real();
  CU_ASSERT_EQUAL(moelm_gpt2_bpe_vocab_size(bpe), 50257);
  CU_ASSERT_EQUAL(moelm_gpt2_bpe_n_merges(bpe), 50000);
  GPtrArray *cases = expected_cases();
  int checked = 0, wrong = 0;
  for (guint i = 0; i < cases->len; i++) {
    JsonObject *o = cases->pdata[i];
    if (!json_object_has_member(o, "ids"))
      continue;
    const char *text = json_object_get_string_member(o, "text");
    JsonArray *want = json_object_get_array_member(o, "ids");
    GArray *ids = g_array_new(FALSE, FALSE, sizeof(int32_t));
    GError *error = NULL;
    CU_ASSERT_TRUE(moelm_gpt2_bpe_encode(bpe, text, strlen(text), ids, &error));
    gboolean same = ids->len == json_array_get_length(want);
    for (guint k = 0; same && k < ids->len; k++)
      same = g_array_index(ids, int32_t, k) == json_array_get_int_element(want, k);
    if (!same && wrong++ < 5)
      g_printerr("\n  %s: %u ids, the reference has %u\n", json_object_get_string_member(o, "name"), ids->len,
                 json_array_get_length(want));
    GString *back = g_string_new(NULL);
    CU_ASSERT_TRUE(moelm_gpt2_bpe_decode(bpe, (int32_t *)ids->data, ids->len, back, NULL));
    CU_ASSERT_STRING_EQUAL(back->str, text);
    g_string_free(back, TRUE);
    g_array_unref(ids);
    checked++;
  }
  CU_ASSERT_EQUAL(wrong, 0);
  CU_ASSERT_TRUE(checked > 400);
  g_ptr_array_unref(cases);
  moelm_gpt2_bpe_free(bpe);
}

/* The shipped corpus, line by line through the preprocess tokenizer (strip, encode). */
static void test_corpus(void)
{
  MoelmGpt2Bpe *bpe = load_real();
  GPtrArray *cases = expected_cases();
  int files = 0;
  for (guint i = 0; i < cases->len; i++) {
    JsonObject *o = cases->pdata[i];
    if (!json_object_has_member(o, "sha256"))
      continue;
    char *path = moelm_test_srcpath(json_object_get_string_member(o, "file"));
    gsize len;
    char *text = moelm_test_read_file(path, &len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(text);
    GChecksum *h = g_checksum_new(G_CHECKSUM_SHA256);
    gsize pos = 0, n_lines = 0, n_tokens = 0;
    const char *line;
    gsize line_len;
    while (moelm_next_line(text, len, &pos, &line, &line_len)) {
      GPtrArray *words = moelm_gpt2_bpe_tokenize_line(line, line_len, bpe, NULL);
      CU_ASSERT_PTR_NOT_NULL_FATAL(words);
      if (n_lines > 0)
        g_checksum_update(h, (const guchar *)"\n", 1);
      for (guint k = 0; k < words->len; k++) {
        if (k > 0)
          g_checksum_update(h, (const guchar *)" ", 1);
        g_checksum_update(h, words->pdata[k], -1);
      }
      n_tokens += words->len;
      n_lines++;
      g_ptr_array_unref(words);
    }
    CU_ASSERT_EQUAL(n_lines, (gsize)json_object_get_int_member(o, "lines"));
    CU_ASSERT_EQUAL(n_tokens, (gsize)json_object_get_int_member(o, "tokens"));
    CU_ASSERT_STRING_EQUAL(g_checksum_get_string(h), json_object_get_string_member(o, "sha256"));
    g_checksum_free(h);
    g_free(text);
    g_free(path);
    files++;
  }
  CU_ASSERT_EQUAL(files, 3);
  g_ptr_array_unref(cases);
  moelm_gpt2_bpe_free(bpe);
}

/* fairseq's words: ids as decimal strings; other symbols pass through decoding. */
static void test_words(void)
{
  MoelmGpt2Bpe *bpe = load_real();
  GPtrArray *w = moelm_gpt2_bpe_tokenize_line("  Hello world\t ", 15, bpe, NULL);
  CU_ASSERT_EQUAL_FATAL(w->len, 2);
  CU_ASSERT_STRING_EQUAL(w->pdata[0], "15496");
  CU_ASSERT_STRING_EQUAL(w->pdata[1], "995");
  CU_ASSERT_FALSE(moelm_gpt2_bpe_word_starts_with_space(bpe, w->pdata[0]));
  CU_ASSERT_TRUE(moelm_gpt2_bpe_word_starts_with_space(bpe, w->pdata[1]));
  CU_ASSERT_FALSE(moelm_gpt2_bpe_word_starts_with_space(bpe, "<unk>"));
  const char *words[] = {"15496", "<unk>", "995", "0995"};
  char *text = moelm_gpt2_bpe_decode_words(bpe, words, 4);
  CU_ASSERT_STRING_EQUAL(text, "Hello<unk> world0995");
  g_free(text);
  g_ptr_array_unref(w);
  GPtrArray *empty = moelm_gpt2_bpe_tokenize_line(" \t\xc2\x85", 4, bpe, NULL);
  CU_ASSERT_EQUAL(empty->len, 0); /* a blank line stays a document boundary */
  g_ptr_array_unref(empty);
  GArray *ids = g_array_new(FALSE, FALSE, sizeof(int32_t));
  GError *error = NULL;
  CU_ASSERT_FALSE(moelm_gpt2_bpe_encode(bpe, "a\xff", 2, ids, &error));
  MOELM_ASSERT_ERROR(error, "not valid UTF-8");
  g_clear_error(&error);
  const int32_t bad = 50257;
  GString *s = g_string_new(NULL);
  CU_ASSERT_FALSE(moelm_gpt2_bpe_decode(bpe, &bad, 1, s, &error));
  MOELM_ASSERT_ERROR(error, "no token has id 50257");
  g_clear_error(&error);
  g_string_free(s, TRUE);
  g_array_unref(ids);
  moelm_gpt2_bpe_free(bpe);
}

/* Small hand-made vocabularies: a bad file is a clear error naming it. */
static void test_bad_files(void)
{
  char *dir = moelm_test_tmpdir();
  char *enc = g_build_filename(dir, "encoder.json", NULL), *voc = g_build_filename(dir, "vocab.bpe", NULL);
  GString *all = g_string_new("{");
  /* every byte as its GPT-2 character: printable Latin-1 as itself, the rest from U+0100 */
  int extra = 0;
  for (int b = 0; b < 256; b++) {
    const gboolean printable = (b >= '!' && b <= '~') || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
    gunichar c = printable ? (gunichar)b : (gunichar)(256 + extra++);
    char u[8] = {0};
    g_unichar_to_utf8(c, u);
    g_string_append_printf(all, "%s\"%s%s\": %d", b ? ", " : "", c == '"' || c == '\\' ? "\\" : "", u, b);
  }
  GError *error = NULL;
  struct {
    const char *encoder_tail, *merges, *expected;
  } cases[] = {
    {", \"ab\": 256}", "#version: 0.2\na b\n", NULL},
    {"}", "#version: 0.2\na b\n", "makes a token encoder.json lacks"},
    {", \"ab\": 256}", "#version: 0.2\na b c\n", "vocab.bpe:2: a merge is two tokens"},
    {", \"ab\": 255}", "", "appears twice"},
    {", \"a b\": 300}", "", "not in GPT-2's byte alphabet"},
    {", \"ab\": \"x\"}", "", "its id is not an integer"},
    {"", "", "not a GPT-2 encoder.json"},
  };
  for (gsize i = 0; i < G_N_ELEMENTS(cases); i++) {
    char *json = g_strconcat(all->str, cases[i].encoder_tail, NULL);
    moelm_test_write_file(enc, json, strlen(json));
    moelm_test_write_file(voc, cases[i].merges, strlen(cases[i].merges));
    MoelmGpt2Bpe *bpe = moelm_gpt2_bpe_load(enc, voc, &error);
    if (cases[i].expected == NULL) {
      CU_ASSERT_PTR_NOT_NULL(bpe);
      GArray *ids = g_array_new(FALSE, FALSE, sizeof(int32_t));
      CU_ASSERT_TRUE(bpe && moelm_gpt2_bpe_encode(bpe, "abab", 4, ids, NULL));
      CU_ASSERT_EQUAL(ids->len, 2);
      CU_ASSERT_EQUAL(ids->len == 2 ? g_array_index(ids, int32_t, 1) : -1, 256);
      g_array_unref(ids);
    } else {
      CU_ASSERT_PTR_NULL(bpe);
      MOELM_ASSERT_ERROR(error, cases[i].expected);
      g_clear_error(&error);
    }
    moelm_gpt2_bpe_free(bpe);
    g_free(json);
  }
  g_string_free(all, TRUE);
  moelm_test_rmtree(dir);
  g_free(enc);
  g_free(voc);
  g_free(dir);
}

MOELM_TEST_SUITE(gpt2_bpe)
{
  CU_add_test(suite, "edge cases, random strings and bytes equal the reference", test_reference_ids);
  CU_add_test(suite, "the shipped corpus equals the reference", test_corpus);
  CU_add_test(suite, "ids as dict.txt words; strip; errors", test_words);
  CU_add_test(suite, "bad vocabulary files", test_bad_files);
}
