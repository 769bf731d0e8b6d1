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

/* Iterate the lines of a buffer with universal newlines. *line and *len exclude the line end.
 * Returns FALSE at the end of the buffer. `pos` starts at 0. */
gboolean moelm_next_line(const char *buf, gsize buf_len, gsize *pos, const char **line, gsize *len);

/* Iterate the words of a UTF-8 line (already validated) split on Unicode whitespace, without
 * copying: *word and *word_len point into `line`. Returns FALSE when no word is left. `pos`
 * starts at 0. */
gboolean moelm_next_word(const char *line, gsize len, gsize *pos, const char **word, gsize *word_len);

/* Split a UTF-8 line (already validated) on Unicode whitespace; returns a GPtrArray of
 * newly allocated words (free with g_ptr_array_unref). */
GPtrArray *moelm_split_words(const char *line, gsize len);
/* Python's str.strip(): [*start, *end) is the line without leading and trailing whitespace
 * (str.isspace(): Unicode White_Space and \x1c-\x1f). */
void moelm_strip_spaces(const char *line, gsize len, gsize *start, gsize *end);

/* Split `path` into n contiguous byte ranges that start at line starts, as fairseq's
 * find_offsets does (piece i starts after the line holding byte i*(size/n)); offsets has n+1
 * entries (offsets[0]=0, offsets[n]=file size), non-decreasing; a piece may be empty.
 * Binarizing the pieces in order gives exactly the output of one [0, size) range. */
gboolean moelm_find_line_offsets(const char *path, int n, gsize *offsets, GError **error);

/* Count words of lines in [start, end) of `path` into `counts` (a dictionary used as a
 * counter: add_symbol(word, 1) per word, plus </s> once per line, like fairseq's
 * add_file_to_dictionary). start and end must be line boundaries (0, the file size, or
 * values from moelm_find_line_offsets). Errors: "PATH:LINE: invalid UTF-8" etc. */
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

/* Same as moelm_count_words with the words of each line given by `tokenizer` (NULL: the plain
 * whitespace split); a tokenizer error is reported as "PATH:LINE: <its message>". */
gboolean moelm_count_words_tokenized(const char *path, gsize start, gsize end, MoelmLineTokenizer tokenizer,
                                     gpointer tokenizer_data, MoelmDictionary *counts, GError **error);

/* The same over a file already in memory: data (data_len bytes) is the whole file, `path`
 * names it in errors; [start, end) must be whole lines. Lets a caller that mapped the file
 * once count many ranges of it from several threads. */
gboolean moelm_count_words_in_buffer(const char *path, const char *data, gsize data_len, gsize start, gsize end,
                                     MoelmLineTokenizer tokenizer, gpointer tokenizer_data, MoelmDictionary *counts,
                                     GError **error);

/* fairseq's Dictionary.encode_line(add_if_not_exist=False, append_eos=True) for one line
 * (no line end): validate UTF-8 (a NUL byte is refused too), split (or tokenize), look each
 * word up (absent → <unk>), append </s>. The ids are appended to `ids` (GArray of int32_t);
 * the number of words that became <unk> without literally being "<unk>" is added to
 * *n_replaced when it is non-NULL. Errors carry no file name ("invalid UTF-8"). Safe to call
 * from several threads on one dictionary. */
gboolean moelm_encode_line(const MoelmDictionary *dict, const char *line, gsize len, MoelmLineTokenizer tokenizer,
                           gpointer tokenizer_data, GArray *ids, int64_t *n_replaced, GError **error);

/* Binarize lines in [start, end) of `path` (line boundaries, as for count_words) with `dict`
 * into `builder`, one sequence per line; stats are added to (not reset). Reads the dictionary
 * only, so workers may share one. */
gboolean moelm_binarize_range(const char *path, gsize start, gsize end, const MoelmDictionary *dict,
                              MoelmLineTokenizer tokenizer, gpointer tokenizer_data,
                              MoelmIndexedDatasetBuilder *builder, MoelmBinarizeStats *stats, GError **error);

G_END_DECLS

#endif
