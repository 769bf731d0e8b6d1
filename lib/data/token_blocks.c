/* moelm — fairseq's TokenBlockDataset: slice indices per break mode (as
 * token_block_utils_fast computes them) and the source/target pair of a block. */
#include "config.h"

#include <inttypes.h>
#include <string.h>

#include "moelm/dictionary.h"
#include "moelm/errors.h"
#include "moelm/token_blocks.h"

/* fairseq's document_sep_len: a sequence of this many tokens (an empty line's lone </s>)
 * separates documents in complete_doc mode. */
#define DOCUMENT_SEP_LEN 1

struct MoelmTokenBlocks {
  GArray *slices;     /* MoelmBlockSlice, one per block */
  int64_t *seq_start; /* (n_seq + 1,) stream offset of each sequence, then the total */
  gsize n_seq;
};

gboolean moelm_break_mode_parse(const char *name, MoelmBreakMode *mode, GError **error)
{
  static const struct {
    const char *name;
    MoelmBreakMode mode;
  } modes[] = {
    {"none", MOELM_BREAK_NONE},
    {"complete", MOELM_BREAK_COMPLETE},
    {"complete_doc", MOELM_BREAK_COMPLETE_DOC},
    {"eos", MOELM_BREAK_EOS},
  };
  for (gsize i = 0; i < G_N_ELEMENTS(modes); i++) {
    if (strcmp(name, modes[i].name) == 0) {
      *mode = modes[i].mode;
      return TRUE;
    }
  }
  g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG,
              "invalid sample break mode '%s' (expected none, complete, complete_doc or eos)", name);
  return FALSE;
}

static void add_slice(GArray *slices, int64_t start, int64_t end)
{
  MoelmBlockSlice s = {start, end};
  g_array_append_val(slices, s);
}

/* Fixed blocks of block_size over the whole stream; the last one holds the rest. */
static void slices_none(GArray *slices, int64_t total, int64_t block_size)
{
  for (int64_t start = 0; start < total; start += block_size)
    add_slice(slices, start, MIN(start + block_size, total));
}

/* Whole sentences up to block_size; a sentence longer than that is a block of its own. With
 * `docs`, a DOCUMENT_SEP_LEN sequence also closes the block, is left out of every block, and
 * blocks of fewer than 2 tokens are dropped (fairseq keeps curr_size > 1 only). */
static void slices_complete(GArray *slices, const int32_t *sizes, gsize n, int64_t block_size, gboolean docs)
{
  int64_t tok = 0, curr = 0;
  gsize i = 0;
  while (i < n) {
    gboolean sep = docs && sizes[i] == DOCUMENT_SEP_LEN;
    if ((curr + sizes[i] <= block_size || curr == 0) && !sep) {
      curr += sizes[i];
      i++;
      continue;
    }
    if (docs ? curr > 1 : TRUE)
      add_slice(slices, tok, tok + curr);
    tok += curr;
    curr = 0;
    if (sep) {
      tok += sizes[i];
      i++;
    }
  }
  if (docs ? curr > 1 : curr > 0)
    add_slice(slices, tok, tok + curr);
}

MoelmTokenBlocks *moelm_token_blocks_new(const int32_t *sizes, gsize n, int64_t block_size, MoelmBreakMode mode,
                                         GError **error)
{
  if (mode != MOELM_BREAK_EOS && block_size <= 0) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG, "token blocks: block size must be positive (got %"
                PRId64 ")", block_size);
    return NULL;
  }
  int64_t *seq_start = g_new(int64_t, n + 1);
  seq_start[0] = 0;
  for (gsize i = 0; i < n; i++) {
    if (sizes[i] < 0) {
      g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG, "token blocks: sequence %" G_GSIZE_FORMAT
                  " has a negative size (%" PRId32 ")", i, sizes[i]);
      g_free(seq_start);
      return NULL;
    }
    seq_start[i + 1] = seq_start[i] + sizes[i];
  }
  MoelmTokenBlocks *tb = g_new0(MoelmTokenBlocks, 1);
  tb->slices = g_array_new(FALSE, FALSE, sizeof(MoelmBlockSlice));
  tb->seq_start = seq_start;
  tb->n_seq = n;
  switch (mode) {
  case MOELM_BREAK_NONE:
    slices_none(tb->slices, seq_start[n], block_size);
    break;
  case MOELM_BREAK_COMPLETE:
    slices_complete(tb->slices, sizes, n, block_size, FALSE);
    break;
  case MOELM_BREAK_COMPLETE_DOC:
    slices_complete(tb->slices, sizes, n, block_size, TRUE);
    break;
  case MOELM_BREAK_EOS: /* one sentence per block, whatever its length (block_size unused) */
    for (gsize i = 0; i < n; i++)
      add_slice(tb->slices, seq_start[i], seq_start[i + 1]);
    break;
  }
  return tb;
}

void moelm_token_blocks_free(MoelmTokenBlocks *tb)
{
  if (tb == NULL)
    return;
  g_array_unref(tb->slices);
  g_free(tb->seq_start);
  g_free(tb);
}

gsize moelm_token_blocks_len(const MoelmTokenBlocks *tb) { return tb->slices->len; }

int64_t moelm_token_blocks_num_tokens(const MoelmTokenBlocks *tb) { return tb->seq_start[tb->n_seq]; }

MoelmBlockSlice moelm_token_blocks_slice(const MoelmTokenBlocks *tb, gsize i)
{
  MoelmBlockSlice none = {0, 0};
  g_return_val_if_fail(i < tb->slices->len, none);
  return g_array_index(tb->slices, MoelmBlockSlice, i);
}

int64_t moelm_token_blocks_size(const MoelmTokenBlocks *tb, gsize i)
{
  MoelmBlockSlice s = moelm_token_blocks_slice(tb, i);
  return s.end - s.start;
}

gboolean moelm_token_blocks_starts_sentence(const MoelmTokenBlocks *tb, int64_t pos)
{
  gsize lo = 0, hi = tb->n_seq + 1; /* binary search in seq_start[0, n_seq] */
  while (lo < hi) {
    gsize mid = lo + (hi - lo) / 2;
    if (tb->seq_start[mid] < pos)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo <= tb->n_seq && tb->seq_start[lo] == pos;
}

void moelm_token_blocks_stream(const MoelmTokenBlocks *tb, const MoelmIndexedDataset *ds, int64_t start,
                               int64_t end, int32_t *out)
{
  g_return_if_fail(start >= 0 && start <= end && end <= moelm_token_blocks_num_tokens(tb));
  g_return_if_fail(moelm_token_blocks_num_tokens(tb) == moelm_indexed_dataset_num_tokens(ds));
  moelm_indexed_dataset_read_tokens(ds, start, end, out);
}

void moelm_token_blocks_get(const MoelmTokenBlocks *tb, const MoelmIndexedDataset *ds, gsize i, int32_t *source,
                            int32_t *target)
{
  MoelmBlockSlice s = moelm_token_blocks_slice(tb, i);
  gsize n = (gsize)(s.end - s.start);
  if (n == 0)
    return;
  moelm_token_blocks_stream(tb, ds, s.start, s.end, target);
  /* fairseq: a block that starts a sentence (offset 0 in its buffer) gets </s> first, any
   * other the token before it; the rest of the source is the target shifted right. */
  if (moelm_token_blocks_starts_sentence(tb, s.start))
    source[0] = MOELM_EOS;
  else
    moelm_token_blocks_stream(tb, ds, s.start - 1, s.start, source);
  memcpy(source + 1, target, (n - 1) * sizeof *source);
}
