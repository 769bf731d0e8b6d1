/* moelm — open-addressing word index for the dictionary. */
#include "config.h"

#include <string.h>

#include "data/word-index.h"

#define INITIAL_CAPACITY 64u

void moelm_word_index_init(MoelmWordIndex *wi)
{
  wi->slots = g_new(MoelmWordSlot, INITIAL_CAPACITY);
  for (guint i = 0; i < INITIAL_CAPACITY; i++)
    wi->slots[i].idx = -1;
  wi->mask = INITIAL_CAPACITY - 1;
  wi->used = 0;
}

void moelm_word_index_clear(MoelmWordIndex *wi)
{
  g_free(wi->slots);
  memset(wi, 0, sizeof *wi);
}

/* 8 bytes at a time with a multiply-xorshift mix (words are short; this beats byte-wise
 * string hashes and spreads well enough for linear probing). */
uint32_t moelm_word_hash(const char *w, gsize len)
{
  uint64_t h = 0x9E3779B97F4A7C15ull ^ ((uint64_t)len * 0xC2B2AE3D27D4EB4Full);
  while (len >= 8) {
    uint64_t v;
    memcpy(&v, w, 8);
    h = (h ^ v) * 0xBF58476D1CE4E5B9ull;
    h ^= h >> 31;
    w += 8;
    len -= 8;
  }
  uint64_t v = 0;
  memcpy(&v, w, len);
  h = (h ^ v) * 0x94D049BB133111EBull;
  h ^= h >> 29;
  h *= 0xBF58476D1CE4E5B9ull;
  h ^= h >> 32;
  return (uint32_t)h;
}

static gboolean same_word(const GPtrArray *symbols, const GArray *lens, int32_t idx, const char *w, gsize len)
{
  return g_array_index(lens, guint32, idx) == len && memcmp(g_ptr_array_index(symbols, idx), w, len) == 0;
}

int32_t moelm_word_index_find(const MoelmWordIndex *wi, const GPtrArray *symbols, const GArray *lens, const char *w,
                              gsize len)
{
  const uint32_t h = moelm_word_hash(w, len);
  for (guint i = h & wi->mask;; i = (i + 1) & wi->mask) {
    const MoelmWordSlot *s = &wi->slots[i];
    if (s->idx < 0)
      return -1;
    if (s->hash == h && same_word(symbols, lens, s->idx, w, len))
      return s->idx;
  }
}

static void grow(MoelmWordIndex *wi)
{
  const guint old_cap = wi->mask + 1, cap = old_cap * 2;
  MoelmWordSlot *old = wi->slots;
  wi->slots = g_new(MoelmWordSlot, cap);
  for (guint i = 0; i < cap; i++)
    wi->slots[i].idx = -1;
  wi->mask = cap - 1;
  for (guint i = 0; i < old_cap; i++) {
    if (old[i].idx < 0)
      continue;
    guint j = old[i].hash & wi->mask;
    while (wi->slots[j].idx >= 0)
      j = (j + 1) & wi->mask;
    wi->slots[j] = old[i];
  }
  g_free(old);
}

void moelm_word_index_set(MoelmWordIndex *wi, const GPtrArray *symbols, const GArray *lens, int32_t idx)
{
  const char *w = g_ptr_array_index(symbols, idx);
  const gsize len = g_array_index(lens, guint32, idx);
  const uint32_t h = moelm_word_hash(w, len);
  guint i = h & wi->mask;
  for (;; i = (i + 1) & wi->mask) {
    MoelmWordSlot *s = &wi->slots[i];
    if (s->idx < 0)
      break;
    if (s->hash == h && same_word(symbols, lens, s->idx, w, len)) {
      s->idx = idx; /* a newer entry of the same word (#fairseq:overwrite) */
      return;
    }
  }
  wi->slots[i] = (MoelmWordSlot){h, idx};
  if (++wi->used * 2 > wi->mask + 1)
    grow(wi);
}
