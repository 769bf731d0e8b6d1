/* moelm generate — text in and out as fairseq-interactive handles it: prompts are stripped
 * and split (or SentencePiece-encoded) before the dictionary lookup; hypotheses are turned
 * back into text by Dictionary.string and data_utils.post_process. */
#include "config.h"

#include <string.h>

#include "generate.h"
#include "moelm/binarizer.h"
#include "moelm/errors.h"

void gen_text_strip(const char *text, gsize len, gsize *start, gsize *out_len)
{
  /* the stripped text runs from the first word's start to the last word's end */
  gsize pos = 0, first = 0, end = 0, word_len;
  const char *word;
  gboolean any = FALSE;
  while (moelm_next_word(text, len, &pos, &word, &word_len)) {
    if (!any)
      first = (gsize)(word - text);
    end = (gsize)(word - text) + word_len;
    any = TRUE;
  }
  *start = any ? first : 0;
  *out_len = any ? end - first : 0;
}

/* Look every word up in dict.txt (absent: <unk>), append the ids, free the words. */
static gboolean append_words(const MoelmDictionary *dict, GPtrArray *words, GArray *ids)
{
  if (words == NULL)
    return FALSE;
  for (guint i = 0; i < words->len; i++) {
    const int32_t id = moelm_dictionary_index(dict, g_ptr_array_index(words, i));
    g_array_append_val(ids, id);
  }
  g_ptr_array_unref(words);
  return TRUE;
}

gboolean gen_text_encode_prompt(const MoelmDictionary *dict, const MoelmSpm *spm, const char *line, gsize len,
                                GArray *ids, GError **error)
{
  if (!g_utf8_validate(line, (gssize)len, NULL)) {
    g_set_error_literal(error, MOELM_ERROR, MOELM_ERROR_FORMAT, "invalid UTF-8 (or a NUL byte)");
    return FALSE;
  }
  gsize start, n;
  gen_text_strip(line, len, &start, &n);
  return append_words(dict,
                      spm == NULL || n == 0 ? moelm_split_words(line + start, n)
                                            : moelm_spm_encode_pieces(spm, line + start, n, error),
                      ids);
}

gboolean gen_text_encode_gpt2_prompt(const MoelmDictionary *dict, const MoelmGpt2Bpe *gpt2, const char *line,
                                     gsize len, GArray *ids, GError **error)
{
  if (!g_utf8_validate(line, (gssize)len, NULL)) {
    g_set_error_literal(error, MOELM_ERROR, MOELM_ERROR_FORMAT, "invalid UTF-8 (or a NUL byte)");
    return FALSE;
  }
  return append_words(dict, moelm_gpt2_bpe_tokenize_line(line, len, (gpointer)gpt2, error), ids);
}

char *gen_text_gpt2_decode(const MoelmDictionary *dict, const MoelmGpt2Bpe *gpt2, const int32_t *ids, int n)
{
  GPtrArray *words = g_ptr_array_new();
  for (int i = 0; i < n; i++)
    if (ids[i] != MOELM_EOS && ids[i] != MOELM_BOS)
      g_ptr_array_add(words, (gpointer)moelm_dictionary_symbol(dict, ids[i]));
  char *text = moelm_gpt2_bpe_decode_words(gpt2, (const char *const *)words->pdata, words->len);
  g_ptr_array_unref(words);
  return text;
}

/* Python's str.replace(from, to) (from non-empty). */
static void replace_all(GString *s, const char *from, const char *to)
{
  const gsize flen = strlen(from);
  GString *out = g_string_sized_new(s->len);
  const char *p = s->str, *hit;
  while ((hit = strstr(p, from)) != NULL) {
    g_string_append_len(out, p, hit - p);
    g_string_append(out, to);
    p = hit + flen;
  }
  g_string_append(out, p);
  g_string_assign(s, out->str);
  g_string_free(out, TRUE);
}

/* str.strip() (both) or str.rstrip() */
static void strip_python(GString *s, gboolean both)
{
  gsize start, n;
  gen_text_strip(s->str, s->len, &start, &n);
  if (!both) { /* keep everything before the end of the last word */
    n = n ? start + n : 0;
    start = 0;
  }
  g_string_erase(s, 0, (gssize)start);
  g_string_truncate(s, n);
}

/* Joined pieces with their word-boundary marker turned into spaces: sentencepiece (U+2581),
 * wordpiece ('_'), letter ('|'), _EOW. */
static void join_pieces(GString *s, const char *marker)
{
  replace_all(s, " ", "");
  replace_all(s, marker, " ");
  strip_python(s, TRUE);
}

static const char *const known_symbols[] = {"sentencepiece", "wordpiece", "letter", "silence", "_EOW",
                                            "subword_nmt",   "@@ ",       "@@",     "none",    NULL};

gboolean gen_text_post_process_known(const char *symbol)
{
  return symbol == NULL || g_strv_contains((const gchar *const *)known_symbols, symbol);
}

char *gen_text_post_process(const char *sentence, const char *symbol)
{
  GString *s = g_string_new(sentence);
  if (symbol == NULL || strcmp(symbol, "none") == 0)
    return g_string_free(s, FALSE);
  if (strcmp(symbol, "sentencepiece") == 0)
    join_pieces(s, "\xe2\x96\x81");
  else if (strcmp(symbol, "wordpiece") == 0)
    join_pieces(s, "_");
  else if (strcmp(symbol, "letter") == 0)
    join_pieces(s, "|");
  else if (strcmp(symbol, "_EOW") == 0)
    join_pieces(s, "_EOW");
  else if (strcmp(symbol, "silence") == 0) {
    replace_all(s, "<SIL>", "");
    while (strstr(s->str, "  ") != NULL) /* re.sub(' +', ' ', ...) */
      replace_all(s, "  ", " ");
    strip_python(s, TRUE);
  } else {
    /* subword_nmt, "@@ ", "@@": drop the continuation marker, then rstrip */
    g_string_append_c(s, ' ');
    replace_all(s, strcmp(symbol, "subword_nmt") == 0 ? "@@ " : symbol, "");
    strip_python(s, FALSE);
  }
  return g_string_free(s, FALSE);
}

char *gen_text_tokens_string(const MoelmDictionary *dict, const int32_t *ids, int n, const char *post_process)
{
  GString *s = g_string_new(NULL);
  gboolean first = TRUE;
  for (int i = 0; i < n; i++) {
    if (ids[i] == MOELM_EOS || ids[i] == MOELM_BOS)
      continue;
    if (!first)
      g_string_append_c(s, ' ');
    g_string_append(s, moelm_dictionary_symbol(dict, ids[i]));
    first = FALSE;
  }
  char *out = gen_text_post_process(s->str, post_process);
  g_string_free(s, TRUE);
  return out;
}
