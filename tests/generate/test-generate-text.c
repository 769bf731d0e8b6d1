/* moelm generate's text handling against what fairseq (Python) gives: str.strip(),
 * data_utils.post_process, Dictionary.string, prompt encoding. */
#include "config.h"

#include <string.h>

#include "../../cli/generate.h"
#include "moelm-test.h"

static void check(char *got, const char *expected)
{
  if (strcmp(got, expected) != 0)
    g_printerr("\n  got '%s', expected '%s'\n", got, expected);
  CU_ASSERT_STRING_EQUAL(got, expected);
  g_free(got);
}

static char *stripped(const char *text)
{
  gsize start, len;
  gen_text_strip(text, strlen(text), &start, &len);
  return g_strndup(text + start, len);
}

static void test_strip(void)
{
  check(stripped("  a b \t\n"), "a b");
  check(stripped("\xc2\xa0x  y\xe3\x80\x80"), "x  y"); /* U+00A0, U+3000 are whitespace to Python */
  check(stripped("\x1f" "z\x1c"), "z");                 /* so are \x1c-\x1f */
  check(stripped(" \t "), "");
  check(stripped(""), "");
}

static void test_post_process(void)
{
  /* the expected values are Python's data_utils.post_process(s, symbol) */
  check(gen_text_post_process("\xe2\x96\x81Hel lo \xe2\x96\x81wor ld", "sentencepiece"), "Hello world");
  check(gen_text_post_process("\xe2\x96\x81 a", "sentencepiece"), "a");
  check(gen_text_post_process("hel@@ lo wor@@ ld", "subword_nmt"), "hello world");
  check(gen_text_post_process("hel@@ lo wor@@", "@@ "), "hello wor");
  check(gen_text_post_process("hel@@ lo", "@@"), "hel lo");
  check(gen_text_post_process("h e l | w o |", "letter"), "hel wo");
  check(gen_text_post_process("he llo_ wor ld", "wordpiece"), "hello world");
  check(gen_text_post_process("a_EOW b c_EOW", "_EOW"), "a bc");
  check(gen_text_post_process("<SIL> a   <SIL> b ", "silence"), "a b");
  check(gen_text_post_process(" x  y ", "none"), " x  y ");
  check(gen_text_post_process(" x  y ", NULL), " x  y ");
  CU_ASSERT_TRUE(gen_text_post_process_known("sentencepiece"));
  CU_ASSERT_TRUE(gen_text_post_process_known("@@ "));
  CU_ASSERT_TRUE(gen_text_post_process_known(NULL));
  CU_ASSERT_FALSE(gen_text_post_process_known("gpt2"));
}

static MoelmDictionary *small_dict(void)
{
  MoelmDictionary *d = moelm_dictionary_new();
  const char *words[] = {"\xe2\x96\x81the", "\xe2\x96\x81" "c", "ity", "a", "b"};
  for (gsize i = 0; i < G_N_ELEMENTS(words); i++)
    moelm_dictionary_add_symbol(d, words[i], 10, FALSE);
  return d;
}

static void test_tokens_string(void)
{
  MoelmDictionary *d = small_dict();
  /* </s> and <s> are left out wherever they are; <unk> is written out */
  const int32_t ids[] = {MOELM_EOS, 4, 5, MOELM_BOS, 6, MOELM_UNK, MOELM_EOS};
  check(gen_text_tokens_string(d, ids, G_N_ELEMENTS(ids), NULL),
        "\xe2\x96\x81the \xe2\x96\x81" "c ity <unk>");
  check(gen_text_tokens_string(d, ids, G_N_ELEMENTS(ids), "sentencepiece"), "the city<unk>");
  check(gen_text_tokens_string(d, ids, 1, NULL), "");
  moelm_dictionary_free(d);
}

static void test_encode_prompt(void)
{
  MoelmDictionary *d = small_dict();
  GArray *ids = g_array_new(FALSE, FALSE, sizeof(int32_t));
  const char *line = "  a zz\tb \xe3\x80\x80";
  CU_ASSERT_TRUE_FATAL(gen_text_encode_prompt(d, NULL, line, strlen(line), ids, NULL));
  CU_ASSERT_EQUAL_FATAL(ids->len, 3);
  CU_ASSERT_EQUAL(g_array_index(ids, int32_t, 0), 7);
  CU_ASSERT_EQUAL(g_array_index(ids, int32_t, 1), MOELM_UNK);
  CU_ASSERT_EQUAL(g_array_index(ids, int32_t, 2), 8);

  GError *error = NULL;
  g_array_set_size(ids, 0);
  CU_ASSERT_FALSE(gen_text_encode_prompt(d, NULL, "a\xff", 2, ids, &error));
  MOELM_ASSERT_ERROR(error, "invalid UTF-8");
  g_clear_error(&error);
  CU_ASSERT_FALSE(gen_text_encode_prompt(d, NULL, "a\0b", 3, ids, &error));
  g_clear_error(&error);

  /* with SentencePiece: pieces of the stripped text, looked up in dict.txt */
  char *model = moelm_test_srcpath("data-bin/demo/spm.model");
  MoelmSpm *spm = moelm_spm_load(model, NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(spm);
  g_array_set_size(ids, 0);
  CU_ASSERT_TRUE_FATAL(gen_text_encode_prompt(d, spm, "  the city ", 11, ids, NULL));
  GPtrArray *pieces = moelm_spm_encode_pieces(spm, "the city", 8, NULL);
  CU_ASSERT_EQUAL_FATAL(ids->len, pieces->len);
  for (guint i = 0; i < pieces->len; i++)
    CU_ASSERT_EQUAL(g_array_index(ids, int32_t, i), moelm_dictionary_index(d, g_ptr_array_index(pieces, i)));
  CU_ASSERT_EQUAL(g_array_index(ids, int32_t, 0), 4); /* "▁the" */
  g_array_set_size(ids, 0);
  CU_ASSERT_TRUE(gen_text_encode_prompt(d, spm, " \t", 2, ids, NULL));
  CU_ASSERT_EQUAL(ids->len, 0);
  g_ptr_array_unref(pieces);
  moelm_spm_free(spm);
  g_free(model);
  g_array_unref(ids);
  moelm_dictionary_free(d);
}

MOELM_TEST_SUITE(generate_text)
{
  CU_add_test(suite, "Python's str.strip()", test_strip);
  CU_add_test(suite, "post_process (--remove-bpe)", test_post_process);
  CU_add_test(suite, "Dictionary.string", test_tokens_string);
  CU_add_test(suite, "prompt encoding", test_encode_prompt);
}
