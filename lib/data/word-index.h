/* moelm — the dictionary's word → index table: open addressing over (hash, index) slots,
 * keys compared against the dictionary's own symbols by length and bytes. Lookups take a
 * (pointer, length) pair, so the binarizer never copies a word; the table is a few hundred
 * KB for a typical vocabulary (8 bytes a slot), which keeps the hot loop in cache. */
#ifndef MOELM_DATA_WORD_INDEX_H
#define MOELM_DATA_WORD_INDEX_H

#include <stdint.h>
#include <glib.h>

typedef struct {
  uint32_t hash;
  int32_t idx; /* -1: empty */
} MoelmWordSlot;

typedef struct {
  MoelmWordSlot *slots;
  guint mask; /* capacity - 1 (capacity a power of two) */
  guint used;
} MoelmWordIndex;

void moelm_word_index_init(MoelmWordIndex *wi);
void moelm_word_index_clear(MoelmWordIndex *wi);

uint32_t moelm_word_hash(const char *w, gsize len);

/* The index of word (w, len), or -1. symbols/lens: the dictionary's entries. */
int32_t moelm_word_index_find(const MoelmWordIndex *wi, const GPtrArray *symbols, const GArray *lens, const char *w,
                              gsize len);
/* Map the word of entry idx (already in symbols/lens) to idx, replacing an older entry of
 * the same word (fairseq's indices[word] = idx). */
void moelm_word_index_set(MoelmWordIndex *wi, const GPtrArray *symbols, const GArray *lens, int32_t idx);

#endif
