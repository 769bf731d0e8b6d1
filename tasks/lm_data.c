/* moelm — LM splits, batching by size (fairseq's batch_by_size) and collation. */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "lm_data.h"
#include "moelm/errors.h"
#include "moelm/log.h"
#include "moelm/rng.h"

MoelmLmSplit *moelm_lm_split_open(const char *data_dir, const char *split, int64_t tokens_per_sample,
                                  MoelmBreakMode mode, guint vocab_size, GError **error)
{
  MoelmLmSplit *s = g_new0(MoelmLmSplit, 1);
  s->name = g_strdup(split);
  s->prefix = g_build_filename(data_dir, split, NULL);
  s->ds = moelm_indexed_dataset_open(s->prefix, error);
  if (s->ds == NULL) {
    moelm_lm_split_free(s);
    return NULL;
  }
  int64_t max_tok = moelm_indexed_dataset_max_token(s->ds);
  if (max_tok >= (int64_t)vocab_size) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_MISMATCH,
                "%s.bin: token id %" G_GINT64_FORMAT " is outside the dictionary of %u symbols (wrong dict.txt?)",
                s->prefix, max_tok, vocab_size);
    moelm_lm_split_free(s);
    return NULL;
  }
  s->blocks = moelm_token_blocks_new(moelm_indexed_dataset_sizes(s->ds), moelm_indexed_dataset_len(s->ds),
                                     tokens_per_sample, mode, error);
  if (s->blocks == NULL) {
    moelm_error_prefix(error, "%s", s->prefix);
    moelm_lm_split_free(s);
    return NULL;
  }
  return s;
}

void moelm_lm_split_free(MoelmLmSplit *s)
{
  if (s == NULL)
    return;
  moelm_token_blocks_free(s->blocks);
  moelm_indexed_dataset_close(s->ds);
  g_free(s->name);
  g_free(s->prefix);
  g_free(s);
}

gsize moelm_lm_split_n_blocks(const MoelmLmSplit *s) { return moelm_token_blocks_len(s->blocks); }

static void free_batch(gpointer p)
{
  MoelmBatchIndices *b = p;
  g_free(b->idx);
  g_free(b);
}

static void emit(GPtrArray *out, const guint32 *idx, guint n)
{
  MoelmBatchIndices *b = g_new(MoelmBatchIndices, 1);
  b->n = n;
  b->idx = g_memdup2(idx, n * sizeof(guint32));
  g_ptr_array_add(out, b);
}

typedef struct {
  int64_t size;
  uint32_t tie;
  guint32 idx;
} Ordered;

static int by_size_then_tie(const void *a, const void *b)
{
  const Ordered *x = a, *y = b;
  if (x->size != y->size)
    return x->size < y->size ? -1 : 1;
  return x->tie < y->tie ? -1 : x->tie > y->tie;
}

/* A permutation of 0..n-1 from Philox (Fisher-Yates). */
static guint32 *permutation(gsize n, uint64_t seed, uint32_t stream)
{
  guint32 *p = g_new(guint32, n ? n : 1);
  for (gsize i = 0; i < n; i++)
    p[i] = (guint32)i;
  MoelmRng rng;
  moelm_rng_init(&rng, seed, stream, 0);
  for (gsize i = n; i > 1; i--) {
    guint32 j = moelm_rng_next_below(&rng, (uint32_t)i);
    guint32 t = p[i - 1];
    p[i - 1] = p[j];
    p[j] = t;
  }
  return p;
}

GPtrArray *moelm_lm_batches(const MoelmLmSplit *split, int64_t max_tokens, int max_sentences, int multiple,
                            gboolean shuffle, uint64_t seed, int64_t max_len, gboolean skip_long, GError **error)
{
  const gsize n = moelm_lm_split_n_blocks(split);
  guint32 *perm = shuffle ? permutation(n, seed, 0x6f726472u /* "ordr" */) : NULL;
  Ordered *ord = g_new(Ordered, n ? n : 1);
  gsize m = 0, skipped = 0;
  for (gsize i = 0; i < n; i++) {
    int64_t size = moelm_token_blocks_size(split->blocks, i);
    if ((max_len > 0 && size > max_len) || (max_tokens > 0 && size > max_tokens)) {
      if (!skip_long) {
        g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG,
                    "%s: block %zu has %" G_GINT64_FORMAT " tokens, more than the limit of %" G_GINT64_FORMAT
                    " (--max-tokens / --tokens-per-sample; --skip-invalid-size-inputs-valid-test drops it)",
                    split->prefix, i, size, max_len > 0 && size > max_len ? max_len : max_tokens);
        g_free(perm);
        g_free(ord);
        return NULL;
      }
      skipped++;
      continue;
    }
    ord[m++] = (Ordered){size, perm ? perm[i] : (uint32_t)i, (guint32)i};
  }
  if (skipped)
    moelm_warn("moelm.data", "%s: skipped %zu blocks longer than the size limit", split->prefix, skipped);
  qsort(ord, m, sizeof *ord, by_size_then_tie);
  g_free(perm);

  GPtrArray *out = g_ptr_array_new_with_free_func(free_batch);
  guint32 *batch = g_new(guint32, m + 1);
  int64_t *lens = g_new(int64_t, m + 1);
  guint len = 0;
  int64_t sample_len = 0;
  if (multiple < 1)
    multiple = 1;
  for (gsize i = 0; i < m; i++) {
    lens[len] = ord[i].size; /* fairseq appends the new length before the check */
    if (ord[i].size > sample_len)
      sample_len = ord[i].size;
    const int64_t num_tokens = (int64_t)(len + 1) * sample_len;
    const gboolean full = len > 0 && ((max_sentences > 0 && (int64_t)len == max_sentences) ||
                                      (max_tokens > 0 && num_tokens > max_tokens));
    if (full) {
      guint mod_len = MAX((guint)multiple * (len / (guint)multiple), len % (guint)multiple);
      emit(out, batch, mod_len);
      /* keep the tail (and the lengths incl. the new one) */
      memmove(batch, batch + mod_len, (len - mod_len) * sizeof *batch);
      memmove(lens, lens + mod_len, (len + 1 - mod_len) * sizeof *lens);
      len -= mod_len;
      sample_len = 0;
      for (guint k = 0; k <= len; k++)
        sample_len = MAX(sample_len, lens[k]);
    }
    batch[len++] = ord[i].idx;
  }
  if (len > 0)
    emit(out, batch, len);
  g_free(batch);
  g_free(lens);
  g_free(ord);
  return out;
}

GPtrArray *moelm_lm_batches_sequential(const MoelmLmSplit *split, int per_batch)
{
  const gsize n = moelm_lm_split_n_blocks(split);
  GPtrArray *out = g_ptr_array_new_with_free_func(free_batch);
  if (per_batch < 1)
    per_batch = 1;
  guint32 *idx = g_new(guint32, per_batch);
  for (gsize i = 0; i < n; i += per_batch) {
    guint k = 0;
    for (; k < (guint)per_batch && i + k < n; k++)
      idx[k] = (guint32)(i + k);
    emit(out, idx, k);
  }
  g_free(idx);
  return out;
}

void moelm_shuffle_batches(GPtrArray *batches, uint64_t seed)
{
  guint32 *p = permutation(batches->len, seed, 0x65706f63u /* "epoc" */);
  gpointer *copy = g_memdup2(batches->pdata, batches->len * sizeof(gpointer));
  for (guint i = 0; i < batches->len; i++)
    batches->pdata[i] = copy[p[i]];
  g_free(copy);
  g_free(p);
}

static int64_t longest_block(const MoelmLmSplit *split, const MoelmBatchIndices *batch)
{
  int64_t maxlen = 0;
  for (guint i = 0; i < batch->n; i++)
    maxlen = MAX(maxlen, moelm_token_blocks_size(split->blocks, batch->idx[i]));
  return maxlen;
}

int64_t moelm_lm_batch_rows(const MoelmLmSplit *split, const MoelmBatchIndices *batch)
{
  return (int64_t)batch->n * longest_block(split, batch);
}

int64_t moelm_lm_collate(const MoelmLmSplit *split, const MoelmBatchIndices *batch, int32_t **src, int32_t **tgt,
                         int *B, int *T)
{
  const int b = (int)batch->n, t = (int)longest_block(split, batch);
  int32_t *s = g_new(int32_t, (gsize)b * t), *g = g_new(int32_t, (gsize)b * t);
  int64_t ntok = 0;
  for (int i = 0; i < b; i++) {
    int64_t len = moelm_token_blocks_size(split->blocks, batch->idx[i]);
    moelm_token_blocks_get(split->blocks, split->ds, batch->idx[i], s + (gsize)i * t, g + (gsize)i * t);
    for (int64_t k = len; k < t; k++)
      s[(gsize)i * t + k] = g[(gsize)i * t + k] = MOELM_PAD;
    for (int64_t k = 0; k < len; k++)
      ntok += g[(gsize)i * t + k] != MOELM_PAD;
  }
  *src = s;
  *tgt = g;
  *B = b;
  *T = t;
  return ntok;
}
