/* moelm — fairseq's Dictionary, exactly.
 *
 * Specials <s>=0 <pad>=1 </s>=2 <unk>=3 are created by new() with count 1 each and are not
 * written to dict.txt; a loaded word gets index 4 + its line number. dict.txt lines are
 * "word count" split at the LAST space, optionally followed by " #fairseq:overwrite".
 * finalize(): specials first, then words by count descending with ties in byte order
 * (strcmp), stopping at the first count < threshold, keeping nwords symbols in all
 * (specials included; nwords <= 0 keeps all), then padded with madeupword%04d (count 0)
 * to a multiple of padding_factor. */
#ifndef MOELM_DICTIONARY_H
#define MOELM_DICTIONARY_H

#include <stdint.h>
#include <glib.h>

G_BEGIN_DECLS

#define MOELM_BOS 0
#define MOELM_PAD 1
#define MOELM_EOS 2
#define MOELM_UNK 3
#define MOELM_NSPECIAL 4

/* Lookups (index, contains, symbol, count, hash, to_data) only read, so threads may share a
 * dictionary that nobody modifies. */
typedef struct MoelmDictionary MoelmDictionary;

MoelmDictionary *moelm_dictionary_new(void);
void moelm_dictionary_free(MoelmDictionary *dict);

/* fairseq add_symbol: an existing word's count grows by n (unless overwrite, which appends a
 * new entry even if the word exists, as fairseq does); returns its index. */
int32_t moelm_dictionary_add_symbol(MoelmDictionary *dict, const char *word, int64_t n, gboolean overwrite);

/* The same for a word given as (pointer, byte length), not NUL-terminated. */
int32_t moelm_dictionary_add_symbol_len(MoelmDictionary *dict, const char *word, gsize len, int64_t n,
                                        gboolean overwrite);

guint moelm_dictionary_size(const MoelmDictionary *dict);
/* Index of word, or MOELM_UNK if absent. */
int32_t moelm_dictionary_index(const MoelmDictionary *dict, const char *word);
/* Index of a word given as (pointer, byte length), or MOELM_UNK: no copy needed. */
int32_t moelm_dictionary_index_len(const MoelmDictionary *dict, const char *word, gsize len);
gboolean moelm_dictionary_contains(const MoelmDictionary *dict, const char *word);
/* The symbol at index; "<unk>" for an index out of range (fairseq's __getitem__). */
const char *moelm_dictionary_symbol(const MoelmDictionary *dict, int32_t index);
int64_t moelm_dictionary_count(const MoelmDictionary *dict, int32_t index);

/* Load dict.txt into a new dictionary (specials first), reading lines as fairseq does:
 * universal newlines, line.rstrip() (Unicode whitespace), rsplit at the last " ", the count
 * as Python's int() reads it (surrounding whitespace, sign, "1_000"; ASCII digits only).
 * Errors name the file and line: "PATH:LINE: ...". Empty file → a dictionary of the 4
 * specials (fairseq allows it); invalid UTF-8 (or a NUL byte), a line without a space (a
 * blank line too), a bad count or a duplicate word (specials included) are errors. */
MoelmDictionary *moelm_dictionary_load(const char *path, GError **error);
/* Same, from memory (for fuzzing); `name` is used in messages. */
MoelmDictionary *moelm_dictionary_load_from_data(const char *data, gsize len, const char *name, GError **error);

/* Write dict.txt (symbols from index 4 on, "word count\n") atomically: temp file, fsync,
 * rename. */
gboolean moelm_dictionary_save(const MoelmDictionary *dict, const char *path, GError **error);
/* The bytes save() would write (g_free). */
char *moelm_dictionary_to_data(const MoelmDictionary *dict, gsize *len);

/* See the top of this file. As fairseq (which sorts (word, count) pairs into a dict first),
 * a word present twice through #fairseq:overwrite is kept once, with its larger count. */
void moelm_dictionary_finalize(MoelmDictionary *dict, int64_t threshold, int64_t nwords, int padding_factor);
/* Pad with madeupword%04d to a multiple of padding_factor (no-op when <= 1). */
void moelm_dictionary_pad_to_multiple(MoelmDictionary *dict, int padding_factor);

/* fairseq's update(): add every symbol of `src` (specials included) with its count into dst,
 * in src's order (merging per-worker word counts). */
void moelm_dictionary_update(MoelmDictionary *dst, const MoelmDictionary *src);

/* A stable 64-bit hash of the symbol list (FNV-1a over "sym\n" of every symbol), stored in
 * checkpoints to detect a checkpoint/data-bin vocabulary mismatch. */
uint64_t moelm_dictionary_hash(const MoelmDictionary *dict);

G_END_DECLS

#endif
