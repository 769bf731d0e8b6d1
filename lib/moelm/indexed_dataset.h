/* moelm — fairseq's mmap indexed dataset ("MMIDIDX"), byte for byte.
 *
 * PREFIX.idx: "MMIDIDX\0\0" (9 bytes), u64 version = 1, u8 dtype code, u64 N,
 *             int32 sizes[N], int64 pointers[N] (byte offsets into .bin). Little-endian.
 * PREFIX.bin: the sequences' tokens back to back in that dtype.
 * dtype codes: 1 uint8, 2 int8, 3 int16, 4 int32, 5 int64, 8 uint16, 9 uint32, 10 uint64
 * (6/7 are floats and refused for token data). The writer picks uint16 when the vocabulary
 * has < 65500 symbols, else uint32 (fairseq's best_fitting_int_dtype). */
#ifndef MOELM_INDEXED_DATASET_H
#define MOELM_INDEXED_DATASET_H

#include <stdint.h>
#include <glib.h>

G_BEGIN_DECLS

typedef enum {
  MOELM_IDX_UINT8 = 1,
  MOELM_IDX_INT8 = 2,
  MOELM_IDX_INT16 = 3,
  MOELM_IDX_INT32 = 4,
  MOELM_IDX_INT64 = 5,
  MOELM_IDX_UINT16 = 8,
  MOELM_IDX_UINT32 = 9,
  MOELM_IDX_UINT64 = 10
} MoelmIdxDtype;

/* Size in bytes of one element, 0 for an unknown/float code. */
gsize moelm_idx_dtype_size(int code);
const char *moelm_idx_dtype_name(int code);
MoelmIdxDtype moelm_idx_best_dtype(guint vocab_size);

typedef struct MoelmIndexedDataset MoelmIndexedDataset;

/* Open PREFIX.idx and PREFIX.bin with mmap and validate everything before returning:
 * magic, version, dtype, N against the file length, sizes >= 0, pointers[i] ==
 * sum of previous sizes × elem size, .bin length == total bytes. Errors name the file:
 * "PREFIX.idx: truncated: ..." etc. */
MoelmIndexedDataset *moelm_indexed_dataset_open(const char *prefix, GError **error);
/* Validate an in-memory .idx (and, if bin_len != (gsize)-1, its .bin length): for fuzzing.
 * `name` is the prefix: messages read "NAME.idx: ..." / "NAME.bin: ...". (Token values are
 * checked by open() only, which also requires every token to be >= 0 and <= INT32_MAX.) */
gboolean moelm_indexed_dataset_validate_index(const void *idx, gsize idx_len, gsize bin_len, const char *name,
                                              GError **error);
void moelm_indexed_dataset_close(MoelmIndexedDataset *ds);

gsize moelm_indexed_dataset_len(const MoelmIndexedDataset *ds);       /* N */
int moelm_indexed_dataset_dtype(const MoelmIndexedDataset *ds);       /* code */
const int32_t *moelm_indexed_dataset_sizes(const MoelmIndexedDataset *ds); /* (N,) */
int64_t moelm_indexed_dataset_num_tokens(const MoelmIndexedDataset *ds);
/* Copy sequence i into out (size sizes[i]) as int32. */
void moelm_indexed_dataset_get(const MoelmIndexedDataset *ds, gsize i, int32_t *out);
/* Largest token id in the whole .bin (for a vocabulary check); -1 when empty. Computed by
 * open(), which reads every token once. */
int64_t moelm_indexed_dataset_max_token(const MoelmIndexedDataset *ds);
/* Copy tokens [start, end) of the flat token stream (all sequences back to back; sequence i
 * starts at the sum of sizes[0..i-1]) into out as int32. Thread-safe (reads only). */
void moelm_indexed_dataset_read_tokens(const MoelmIndexedDataset *ds, int64_t start, int64_t end, int32_t *out);

/* Writer: PREFIX.bin and PREFIX.idx are written to temporary names and renamed into place
 * by finish(), so an error never leaves a half-written split behind. */
typedef struct MoelmIndexedDatasetBuilder MoelmIndexedDatasetBuilder;

MoelmIndexedDatasetBuilder *moelm_indexed_dataset_builder_new(const char *prefix, MoelmIdxDtype dtype,
                                                              GError **error);
/* Append one sequence; a token < 0 or too large for the dtype is an error (the builder must
 * then be given up with moelm_indexed_dataset_builder_abort). */
gboolean moelm_indexed_dataset_builder_add(MoelmIndexedDatasetBuilder *b, const int32_t *tokens, gsize n,
                                           GError **error);
/* Append every sequence of another dataset file (PREFIX2.idx/.bin, same dtype): used to
 * merge the per-worker pieces in order. */
gboolean moelm_indexed_dataset_builder_merge_file(MoelmIndexedDatasetBuilder *b, const char *other_prefix,
                                                  GError **error);
/* Write PREFIX.idx and rename both files into place. Frees b whether it succeeds or not (on
 * failure the temporaries are removed and no new PREFIX.bin/.idx pair is left). */
gboolean moelm_indexed_dataset_builder_finish(MoelmIndexedDatasetBuilder *b, GError **error);
/* Drop the temporaries without producing output, and free b. */
void moelm_indexed_dataset_builder_abort(MoelmIndexedDatasetBuilder *b);

G_END_DECLS

#endif
