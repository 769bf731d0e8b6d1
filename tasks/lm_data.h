/* moelm — language-modelling data: a split of a data-bin cut into token blocks, fairseq's
 * batching by size, and collation into padded (B, T) source/target arrays. */
#ifndef MOELM_TASKS_LM_DATA_H
#define MOELM_TASKS_LM_DATA_H

#include <stdint.h>
#include <glib.h>

#include "moelm/dictionary.h"
#include "moelm/indexed_dataset.h"
#include "moelm/token_blocks.h"

G_BEGIN_DECLS

typedef struct {
  char *name;                /* "train", "valid", ... */
  char *prefix;              /* DATA/name */
  MoelmIndexedDataset *ds;
  MoelmTokenBlocks *blocks;
} MoelmLmSplit;

/* Open DATA/SPLIT.{idx,bin}, check every token id < vocab_size, cut into blocks. A missing
 * split is an error naming the file. */
MoelmLmSplit *moelm_lm_split_open(const char *data_dir, const char *split, int64_t tokens_per_sample,
                                  MoelmBreakMode mode, guint vocab_size, GError **error);
void moelm_lm_split_free(MoelmLmSplit *split);
gsize moelm_lm_split_n_blocks(const MoelmLmSplit *split);

/* A batch: indices of blocks. */
typedef struct {
  guint n;
  guint32 *idx;
} MoelmBatchIndices;

/* fairseq's batch_by_size over blocks ordered by (size, tie-break): with `shuffle` the ties
 * are broken by a permutation drawn from `seed` (fairseq's lexsort of a random permutation
 * and the sizes); without, by index. A batch holds at most max_sentences blocks (<= 0: no
 * limit) and at most max_tokens padded tokens (<= 0: no limit); a full batch is cut to a
 * multiple of `multiple` as fairseq does. Blocks longer than max_len (> 0) are an error
 * naming the split unless skip_long, when they are dropped with a warning.
 * Returns a GPtrArray of MoelmBatchIndices* (free with g_ptr_array_unref). */
GPtrArray *moelm_lm_batches(const MoelmLmSplit *split, int64_t max_tokens, int max_sentences, int multiple,
                            gboolean shuffle, uint64_t seed, int64_t max_len, gboolean skip_long, GError **error);
/* Blocks in stream order, `per_batch` at a time (eval-lm, which needs the order). */
GPtrArray *moelm_lm_batches_sequential(const MoelmLmSplit *split, int per_batch);
/* fairseq's per-epoch shuffle of the batch list (seed + epoch). */
void moelm_shuffle_batches(GPtrArray *batches, uint64_t seed);

/* B*T of a batch once padded: the token rows one forward over it takes. */
int64_t moelm_lm_batch_rows(const MoelmLmSplit *split, const MoelmBatchIndices *batch);
/* Padded arrays for a batch: src/tgt (B, T) with T the longest block, right-padded with
 * <pad>. Returns the number of non-pad target tokens. Free src/tgt with g_free. */
int64_t moelm_lm_collate(const MoelmLmSplit *split, const MoelmBatchIndices *batch, int32_t **src, int32_t **tgt,
                         int *B, int *T);

G_END_DECLS

#endif
