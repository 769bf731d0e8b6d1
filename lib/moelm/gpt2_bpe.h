/* moelm — GPT-2's byte-level BPE (fairseq's --bpe gpt2), from the two files OpenAI published
 * (encoder.json: token → id, vocab.bpe: the merges in rank order).
 *
 * encode: the text (valid UTF-8) is cut by GPT-2's pre-tokenising pattern
 *   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 * (PCRE2 with Unicode properties; \s is Unicode White_Space, as in Python's `regex` module that
 * GPT-2 and fairseq use), each piece's UTF-8 bytes are merged by rank, lowest first, all
 * non-overlapping occurrences left to right, and the resulting tokens looked up in encoder.json.
 * decode: the tokens' bytes, concatenated (not necessarily valid UTF-8 for a partial sequence).
 *
 * fairseq's dictionaries hold GPT-2 ids as words ("464 123456" in dict.txt): the *_words
 * functions speak in those words. Thread-safe: encode keeps its scratch per thread. */
#ifndef MOELM_GPT2_BPE_H
#define MOELM_GPT2_BPE_H

#include <stdint.h>
#include <glib.h>

G_BEGIN_DECLS

typedef struct MoelmGpt2Bpe MoelmGpt2Bpe;

/* Load and check both files (every byte has a token, every merge's result is a token). Errors
 * name the file and the line or token. */
MoelmGpt2Bpe *moelm_gpt2_bpe_load(const char *encoder_json, const char *vocab_bpe, GError **error);
void moelm_gpt2_bpe_free(MoelmGpt2Bpe *bpe);

int moelm_gpt2_bpe_vocab_size(const MoelmGpt2Bpe *bpe); /* largest id + 1 */
guint moelm_gpt2_bpe_n_merges(const MoelmGpt2Bpe *bpe);

/* Append the ids of `text` (len bytes of valid UTF-8; FALSE with an error otherwise) to `ids`
 * (a GArray of int32_t). */
gboolean moelm_gpt2_bpe_encode(const MoelmGpt2Bpe *bpe, const char *text, gsize len, GArray *ids, GError **error);
/* Append the bytes of ids[0..n) to `out`; FALSE for an id the vocabulary does not have. */
gboolean moelm_gpt2_bpe_decode(const MoelmGpt2Bpe *bpe, const int32_t *ids, gsize n, GString *out, GError **error);

/* encode, with every id written as a decimal word (g_free'd strings). */
GPtrArray *moelm_gpt2_bpe_encode_words(const MoelmGpt2Bpe *bpe, const char *text, gsize len, GError **error);
/* A MoelmLineTokenizer (moelm/binarizer.h; user_data: the MoelmGpt2Bpe): fairseq's GPT-2
 * encoding script strips each line (Python's str.strip()) before encoding it, so an empty or
 * blank line gives no words and stays a [</s>] document boundary. */
GPtrArray *moelm_gpt2_bpe_tokenize_line(const char *line, gsize len, gpointer bpe, GError **error);
/* The text of dictionary words: a word that is a GPT-2 id is decoded, any other word (<unk>,
 * madeupword0000, ...) is written as it is, as fairseq's GPT2BPE.decode does; invalid UTF-8
 * from split sequences becomes U+FFFD. */
char *moelm_gpt2_bpe_decode_words(const MoelmGpt2Bpe *bpe, const char *const *words, gsize n);
/* Whether the token written as `word` starts with a space (a word boundary, for merging
 * per-token scores into words); FALSE for non-id words. */
gboolean moelm_gpt2_bpe_word_starts_with_space(const MoelmGpt2Bpe *bpe, const char *word);

G_END_DECLS

#endif
