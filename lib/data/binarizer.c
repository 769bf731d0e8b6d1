/* moelm — counting words into a dictionary and binarizing text, as fairseq's
 * add_file_to_dictionary and Binarizer do, over line-aligned byte ranges of a file. */
#include "config.h"

#include <string.h>

#include "data/mapped-file.h"
#include "moelm/binarizer.h"
#include "moelm/errors.h"

static gboolean check_utf8(const char *line, gsize len, GError **error)
{
  if (len > 0 && !g_utf8_validate_len(line, len, NULL)) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_FORMAT,
                memchr(line, '\0', len) ? "contains a NUL byte" : "invalid UTF-8");
    return FALSE;
  }
  return TRUE;
}

static gboolean is_unk_word(const char *w, gsize wlen)
{
  return wlen == 5 && memcmp(w, "<unk>", 5) == 0;
}

gboolean moelm_encode_line(const MoelmDictionary *dict, const char *line, gsize len, MoelmLineTokenizer tokenizer,
                           gpointer tokenizer_data, GArray *ids, int64_t *n_replaced, GError **error)
{
  if (!check_utf8(line, len, error))
    return FALSE;
  int64_t replaced = 0;
  if (tokenizer != NULL) {
    GPtrArray *words = tokenizer(line, len, tokenizer_data, error);
    if (words == NULL)
      return FALSE;
    for (guint i = 0; i < words->len; i++) {
      const char *w = g_ptr_array_index(words, i);
      int32_t idx = moelm_dictionary_index(dict, w);
      replaced += idx == MOELM_UNK && strcmp(w, "<unk>") != 0;
      g_array_append_val(ids, idx);
    }
    g_ptr_array_unref(words);
  } else {
    gsize pos = 0, wlen;
    const char *w;
    while (moelm_next_word(line, len, &pos, &w, &wlen)) {
      int32_t idx = moelm_dictionary_index_len(dict, w, wlen);
      replaced += idx == MOELM_UNK && !is_unk_word(w, wlen);
      g_array_append_val(ids, idx);
    }
  }
  int32_t eos = MOELM_EOS;
  g_array_append_val(ids, eos);
  if (n_replaced != NULL)
    *n_replaced += replaced;
  return TRUE;
}

/* A range must start and end at line boundaries (never between the "\r" and "\n" of one
 * line end), or it would read a different set of lines than the whole file does. */
static gboolean at_line_boundary(const MoelmMappedFile *mf, gsize off)
{
  if (off == 0 || off == mf->len)
    return TRUE;
  char prev = mf->data[off - 1];
  if (prev == '\n')
    return TRUE;
  return prev == '\r' && mf->data[off] != '\n';
}

static gboolean open_range(const char *path, gsize start, gsize end, MoelmMappedFile *mf, GError **error)
{
  if (!moelm_mapped_file_open(mf, path, error))
    return FALSE;
  if (start > end || end > mf->len || !at_line_boundary(mf, start) || !at_line_boundary(mf, end)) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG,
                "%s: byte range [%" G_GSIZE_FORMAT ", %" G_GSIZE_FORMAT ") is not a range of whole lines of a %"
                G_GSIZE_FORMAT "-byte file", path, start, end, mf->len);
    moelm_mapped_file_close(mf);
    return FALSE;
  }
  return TRUE;
}

/* Prefix an error about a line of the range with "PATH:LINE: " (LINE counted from the start of
 * the file, 1-based). Only runs on failure, so counting the lines before the range is fine. */
static void prefix_line(GError **error, const char *path, const MoelmMappedFile *mf, gsize start, int64_t line_in_range)
{
  int64_t before = 0;
  gsize pos = 0, len;
  const char *line;
  while (pos < start && moelm_next_line(mf->data, start, &pos, &line, &len))
    before++;
  moelm_error_prefix(error, "%s:%" G_GINT64_FORMAT, path, before + line_in_range + 1);
}

/* Count the lines of [start, end) of a file already in memory (mf). */
static gboolean count_range(const char *path, const MoelmMappedFile *mf, gsize start, gsize end,
                            MoelmLineTokenizer tokenizer, gpointer tokenizer_data, MoelmDictionary *counts,
                            GError **error)
{
  gsize pos = start, len;
  const char *line;
  int64_t nline = 0;
  gboolean ok = TRUE;
  while (moelm_next_line(mf->data, end, &pos, &line, &len)) {
    if (!check_utf8(line, len, error)) {
      ok = FALSE;
    } else if (tokenizer != NULL) {
      GPtrArray *words = tokenizer(line, len, tokenizer_data, error);
      ok = words != NULL;
      for (guint i = 0; ok && i < words->len; i++)
        moelm_dictionary_add_symbol(counts, g_ptr_array_index(words, i), 1, FALSE);
      if (words != NULL)
        g_ptr_array_unref(words);
    } else {
      gsize wpos = 0, wlen;
      const char *w;
      while (moelm_next_word(line, len, &wpos, &w, &wlen))
        moelm_dictionary_add_symbol_len(counts, w, wlen, 1, FALSE);
    }
    if (!ok) {
      prefix_line(error, path, mf, start, nline);
      break;
    }
    moelm_dictionary_add_symbol_len(counts, "</s>", 4, 1, FALSE);
    nline++;
  }
  return ok;
}

gboolean moelm_count_words_tokenized(const char *path, gsize start, gsize end, MoelmLineTokenizer tokenizer,
                                     gpointer tokenizer_data, MoelmDictionary *counts, GError **error)
{
  MoelmMappedFile mf;
  if (!open_range(path, start, end, &mf, error))
    return FALSE;
  gboolean ok = count_range(path, &mf, start, end, tokenizer, tokenizer_data, counts, error);
  moelm_mapped_file_close(&mf);
  return ok;
}

gboolean moelm_count_words_in_buffer(const char *path, const char *data, gsize data_len, gsize start, gsize end,
                                     MoelmLineTokenizer tokenizer, gpointer tokenizer_data, MoelmDictionary *counts,
                                     GError **error)
{
  const MoelmMappedFile mf = {data, data_len};
  if (start > end || end > data_len || !at_line_boundary(&mf, start) || !at_line_boundary(&mf, end)) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG,
                "%s: byte range [%" G_GSIZE_FORMAT ", %" G_GSIZE_FORMAT ") is not a range of whole lines", path,
                start, end);
    return FALSE;
  }
  return count_range(path, &mf, start, end, tokenizer, tokenizer_data, counts, error);
}

gboolean moelm_count_words(const char *path, gsize start, gsize end, MoelmDictionary *counts, GError **error)
{
  return moelm_count_words_tokenized(path, start, end, NULL, NULL, counts, error);
}

gboolean moelm_binarize_range(const char *path, gsize start, gsize end, const MoelmDictionary *dict,
                              MoelmLineTokenizer tokenizer, gpointer tokenizer_data,
                              MoelmIndexedDatasetBuilder *builder, MoelmBinarizeStats *stats, GError **error)
{
  MoelmMappedFile mf;
  if (!open_range(path, start, end, &mf, error))
    return FALSE;
  GArray *ids = g_array_sized_new(FALSE, FALSE, sizeof(int32_t), 256);
  gsize pos = start, len;
  const char *line;
  int64_t nline = 0;
  gboolean ok = TRUE;
  while (moelm_next_line(mf.data, end, &pos, &line, &len)) {
    g_array_set_size(ids, 0);
    if (!moelm_encode_line(dict, line, len, tokenizer, tokenizer_data, ids, &stats->n_replaced, error)) {
      prefix_line(error, path, &mf, start, nline);
      ok = FALSE;
      break;
    }
    if (!moelm_indexed_dataset_builder_add(builder, (const int32_t *)(void *)ids->data, ids->len, error)) {
      ok = FALSE;
      break;
    }
    stats->n_seq++;
    stats->n_tok += ids->len;
    nline++;
  }
  g_array_unref(ids);
  moelm_mapped_file_close(&mf);
  return ok;
}
