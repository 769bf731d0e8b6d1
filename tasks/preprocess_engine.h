/* moelm preprocess — the engine's pieces shared by its files (internal to tasks/).
 *
 *   preprocess.c          checks, the order of the work, committing the outputs
 *   preprocess_workers.c  the parallel text check and word counts
 *   preprocess_pipeline.c the ordered pipeline: steps produced in parallel, consumed in order
 *   preprocess_binarize.c binarizing on that pipeline; the SentencePiece piece cache
 *   preprocess_steps.c    line-aligned steps, CPU time
 *   preprocess_spm.c      --bpe sentencepiece: the per-line tokenizer hook, model training
 *
 * The command line lives in cli/preprocess*.c; the public entry point is tasks/preprocess.h. */
#ifndef MOELM_TASKS_PREPROCESS_ENGINE_H
#define MOELM_TASKS_PREPROCESS_ENGINE_H

#include <glib.h>

#include "moelm/binarizer.h"
#include "moelm/dictionary.h"
#include "moelm/spm.h"

/* ---- parallel passes (preprocess_workers.c) ---- */

/* Check that the whole of `path` is text the binarizer takes: valid UTF-8 (strict, as
 * Python's decoder: no overlong forms, no surrogates) without NUL bytes, using `workers`
 * threads. The error names the first bad line in file order, whatever the number of
 * workers: "PATH:LINE: invalid UTF-8 ..." / "PATH:LINE: NUL byte ...". */
gboolean pp_check_text(const char *path, int workers, GError **error);

/* Count the whitespace-separated words of every line of `path` as fairseq's
 * add_file_to_dictionary (each word once per occurrence, </s> once per line) into a new
 * dictionary: each of `workers` threads counts the line-aligned steps it takes into its own
 * counter, and the counters are merged (the order of the symbols differs with the
 * scheduling; the counts do not, and finalize() sorts by count and text). NULL on error. */
MoelmDictionary *pp_count_words(const char *path, int workers, GError **error);

/* ---- the ordered pipeline (preprocess_pipeline.c) ---- */

/* Produce step `step` (on a worker thread numbered `worker` in [0, workers)). */
typedef gboolean (*PpProduceFunc)(guint step, int worker, gpointer user, GError **error);
/* Consume step `step`, on the calling thread, in step order. */
typedef gboolean (*PpConsumeFunc)(guint step, gpointer user, GError **error);

/* Run bounds->len - 1 steps: produced by `workers` threads (at most a few steps ahead of the
 * consumer; with 1 worker, here), consumed here in order. `bounds` (gsize, the steps' byte
 * boundaries in `path`) drives the progress line "WHAT PATH: x/y MB". The first error wins
 * and stops the rest. */
gboolean pp_run_ordered(const char *what, const char *path, const GArray *bounds, int workers,
                        PpProduceFunc produce, PpConsumeFunc consume, gpointer user, GError **error);

/* ---- binarizing (preprocess_binarize.c) ---- */

/* Binarize `path` into OUT_PREFIX.bin/.idx with `dict`: line-aligned steps of about a
 * megabyte are turned into ids by `workers` threads and appended in order. The output is
 * the same bytes for every `workers`; with 1 the calling thread does everything. */
gboolean pp_binarize(const char *path, const char *out_prefix, int workers, const MoelmDictionary *dict,
                     MoelmLineTokenizer tokenizer, gpointer tokenizer_data, MoelmBinarizeStats *stats,
                     GError **error);

/* A text already cut into pieces (--bpe sentencepiece): the train split is encoded once. */
typedef struct {
  char *path;          /* the cache file */
  char *input;         /* the text it was made from */
  GArray *bounds;      /* (n_steps + 1,) gsize step boundaries in the cache */
  GArray *input_bounds; /* (n_steps + 1,) the same steps in the text */
} PpPieceCache;

/* Cut every line of `path` into pieces with `tokenizer`, write them to CACHE_PATH and count
 * them as fairseq's add_file_to_dictionary would count the encoded text (each piece once per
 * occurrence, </s> once per line). Returns the counts (a new dictionary), NULL on error. */
MoelmDictionary *pp_encode_pieces(const char *path, const char *cache_path, int workers,
                                  MoelmLineTokenizer tokenizer, gpointer tokenizer_data, PpPieceCache *cache,
                                  GError **error);
/* Binarize a piece cache as pp_binarize would binarize its text with the same tokenizer. */
gboolean pp_binarize_pieces(const PpPieceCache *cache, const char *out_prefix, int workers,
                            const MoelmDictionary *dict, MoelmBinarizeStats *stats, GError **error);
/* Remove the cache file and free the struct's contents. */
void pp_piece_cache_clear(PpPieceCache *cache);

/* ---- shared by the passes (preprocess_steps.c) ---- */

/* Bytes per step of a pass (about 1 MiB; $MOELM_PREPROCESS_STEP overrides it for tests). */
gsize pp_step_bytes(void);
/* The start of the line after the one that holds byte `from`, at most `limit`. */
gsize pp_next_line_start(const char *data, gsize limit, gsize from);
/* Line-aligned step boundaries over a whole file: a GArray of gsize, 0 first, len last. */
GArray *pp_cut_steps(const char *data, gsize len);
/* CPU seconds of the whole process, all threads (for LOGLEVEL=DEBUG timings). */
double pp_cpu_seconds(void);

/* ---- --bpe sentencepiece (preprocess_spm.c) ---- */

/* The MoelmLineTokenizer for SentencePiece: user_data is a MoelmSpm*. A line with no
 * content (empty or only whitespace) gives no pieces, so it stays a [</s>] boundary. */
GPtrArray *pp_spm_tokenize_line(const char *line, gsize len, gpointer user_data, GError **error);

/* The SentencePiece vocabulary size to train for a dictionary of at most `nwords` symbols
 * (4 fairseq specials included); see docs/preprocess.md. */
int pp_spm_vocab_size_for(int nwords);

/* Train a BPE model on `train_path` and write it to `model_path` (the .vocab SentencePiece
 * writes beside it is removed); keep_whitespace as in moelm_spm_train_bpe. */
gboolean pp_spm_train(const char *train_path, const char *model_path, int vocab_size, int threads,
                      gboolean keep_whitespace, GError **error);

/* Copy a file byte for byte (used to put --sentencepiece-model into the data-bin). */
gboolean pp_copy_file(const char *from, const char *to, GError **error);

#endif
