/* moelm — fairseq's TokenBlockDataset: cut a stream of sequences into blocks.
 *
 * Modes (--sample-break-mode): none (fixed blocks of block_size over the whole stream),
 * complete (whole sentences packed up to block_size; a longer sentence is a block of its own),
 * complete_doc (as complete, but never across a document boundary — a 1-token sequence —
 * and dropping empty documents), eos (one sentence per block).
 * For block i: target = stream[start..end), source = target shifted right by one with the
 * previous token of the same sentence, or </s> where the block starts a sentence. */
#ifndef MOELM_TOKEN_BLOCKS_H
#define MOELM_TOKEN_BLOCKS_H

#include <stdint.h>
#include <glib.h>

#include "moelm/indexed_dataset.h"

G_BEGIN_DECLS

typedef enum {
  MOELM_BREAK_NONE,
  MOELM_BREAK_COMPLETE,
  MOELM_BREAK_COMPLETE_DOC,
  MOELM_BREAK_EOS
} MoelmBreakMode;

/* Parse "none|complete|complete_doc|eos"; FALSE with an error otherwise. */
gboolean moelm_break_mode_parse(const char *name, MoelmBreakMode *mode, GError **error);

typedef struct {
  int64_t start, end; /* token offsets in the concatenated stream, end exclusive */
} MoelmBlockSlice;

typedef struct MoelmTokenBlocks MoelmTokenBlocks;

/* Blocks over the sequences with these sizes (sizes are in tokens, incl. </s>), exactly as
 * fairseq's _get_slice_indices_fast: none → [i*B, min((i+1)*B, total)) for i < ceil(total/B);
 * complete → sentences packed while the block stays <= B (a block is never empty, so a longer
 * sentence stands alone); complete_doc → the same, also closing the block at every 1-token
 * sequence, which belongs to no block, and dropping blocks of < 2 tokens; eos → one block per
 * sequence, block_size ignored (a long sentence is not cut: batching filters by length).
 * block_size must be > 0 except for eos; negative sizes are an error. */
MoelmTokenBlocks *moelm_token_blocks_new(const int32_t *sizes, gsize n, int64_t block_size, MoelmBreakMode mode,
                                         GError **error);
void moelm_token_blocks_free(MoelmTokenBlocks *tb);
gsize moelm_token_blocks_len(const MoelmTokenBlocks *tb);
MoelmBlockSlice moelm_token_blocks_slice(const MoelmTokenBlocks *tb, gsize i);
/* Length of block i (= slice end - start). */
int64_t moelm_token_blocks_size(const MoelmTokenBlocks *tb, gsize i);
/* Tokens in the whole stream (the sum of the sizes). */
int64_t moelm_token_blocks_num_tokens(const MoelmTokenBlocks *tb);
/* Whether a sequence starts at stream offset pos (0 and the total count as starts). */
gboolean moelm_token_blocks_starts_sentence(const MoelmTokenBlocks *tb, int64_t pos);

/* Fill source and target (each moelm_token_blocks_size(i) ints) for block i, reading the
 * tokens from ds (the dataset whose sizes built tb): target = stream[start, end); source[0] =
 * </s> when a sequence starts at `start` (fairseq's offset 0 in its buffer), else
 * stream[start-1]; source[1..] = target[0..n-2]. Thread-safe (reads only). */
void moelm_token_blocks_get(const MoelmTokenBlocks *tb, const MoelmIndexedDataset *ds, gsize i, int32_t *source,
                            int32_t *target);

/* The tokens of the stream in [start, end) (for context windows and gating context);
 * positions before 0 are not allowed. */
void moelm_token_blocks_stream(const MoelmTokenBlocks *tb, const MoelmIndexedDataset *ds, int64_t start,
                               int64_t end, int32_t *out);

G_END_DECLS

#endif
