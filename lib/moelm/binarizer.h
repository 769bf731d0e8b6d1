/* moelm — turning text into token ids with Python's rules, as fairseq does.
 *
 * Lines: universal newlines (\n, \r\n and a lone \r each end a line). Words: the line split
 * on Unicode whitespace (Python's str.isspace set: \t \n \v \f \r \x1c-\x1f space \x85 \xa0
 * \u1680 \u2000-\u200a \u2028 \u2029 \u202f \u205f \u3000). Every line gets </s> appended,
 * so an empty line is the one-token sequence [</s>] (a document boundary). Invalid UTF-8
 * is an error naming the file and line. */
#ifndef MOELM_BINARIZER_H
#define MOELM_BINARIZER_H

#include <stdint.h>
#include <glib.h>

#include "moelm/dictionary.h"
#include "moelm/indexed_dataset.h"

G_BEGIN_DECLS

/* Iterate the lines of a buffer with universal newlines. *line/*len exclude the line end.
 * Returns FALSE at the end of the buffer. `pos` starts at 0. */
gboolean moelm_next_line(const char *buf, gsize buf_len, gsize *pos, const char **line, gsize *len);

/* Split a UTF-8 line (already validated) on Unicode whitespace; returns a GPtrArray of
 * newly allocated words (free with g_ptr_array_unref). */
GPtrArray *moelm_split_words(const char *line, gsize len);

/* Split `path` into n contiguous byte ranges that start at line starts, as evenly as
 * possible; offsets has n+1 entries (offsets[0]=0, offsets[n]=file size). */
gboolean moelm_find_line_offsets(const char *path, int n, gsize *offsets, GError **error);

/* Count words of lines in [start, end) of `path` into `counts` (a dictionary used as a
 * counter: add_symbol(word, 1) per word, plus </s> once per line, like fairseq's
 * add_file_to_dictionary). */
gboolean moelm_count_words(const char *path, gsize start, gsize end, MoelmDictionary *counts, GError **error);

typedef struct {
  int64_t n_seq;      /* lines */
  int64_t n_tok;      /* tokens including </s> */
  int64_t n_replaced; /* words that became <unk> (not counting a literal "<unk>") */
} MoelmBinarizeStats;

/* A per-line token transform applied before dictionary lookup (e.g. SentencePiece):
 * given the line, return the words (GPtrArray of char*), or NULL with an error. NULL means
 * the plain whitespace split. */
typedef GPtrArray *(*MoelmLineTokenizer)(const char *line, gsize len, gpointer user_data, GError **error);

/* Binarize lines in [start, end) of `path` with `dict` into `builder`, accumulating stats. */
gboolean moelm_binarize_range(const char *path, gsize start, gsize end, const MoelmDictionary *dict,
                              MoelmLineTokenizer tokenizer, gpointer tokenizer_data,
                              MoelmIndexedDatasetBuilder *builder, MoelmBinarizeStats *stats, GError **error);

G_END_DECLS

#endif
