/* moelm — scoring a split with fairseq's LMContextWindowDataset (eval-lm).
 *
 * fairseq-eval-lm with --context-window C cuts the split into blocks of
 * tokens_per_sample - C tokens (the caller opens the split with that size) and lays every
 * block out as one row
 *     src = [ context (up to C tokens) | block source ]      tgt = [ pad ... | block target ]
 * where the context is the last C tokens of the concatenated sources of the rows before it,
 * in stream order and across batches (fairseq's prev_tokens), trimmed from the left so that
 * context + block stays within tokens_per_sample (the training block size) when a block is
 * longer than tokens_per_sample - C (break modes complete/eos). Only the block's own targets
 * are scored: every token of the split is scored exactly once, with C = 0 giving plain blocks.
 *
 * The row layout is its own small state machine (MoelmContextWindow) so that other scorers
 * (the sequence-level mixture's K passes per row) build rows the same way. */
#ifndef MOELM_TASKS_SCORER_H
#define MOELM_TASKS_SCORER_H

#include <stdint.h>
#include <glib.h>

#include "moelm/dictionary.h"
#include "moelm/gpt2_bpe.h"
#include "moelm/model.h"
#include "tasks/lm_data.h"

G_BEGIN_DECLS

/* ---- row construction ---------------------------------------------------------------- */

typedef struct {
  int context_window; /* C */
  int64_t max_row;    /* fairseq's max_sample_len: the block size before the C reduction */
  int32_t *prev;      /* (C) the last source tokens seen, oldest first */
  int n_prev;
} MoelmContextWindow;

/* C >= 0; max_row = (tokens_per_sample the split was cut with) + C. */
void moelm_context_window_init(MoelmContextWindow *cw, int context_window, int64_t max_row);
void moelm_context_window_clear(MoelmContextWindow *cw);

/* Lay out the next row of the stream from a block's source and target (n tokens each):
 * row_src = [context, source], row_tgt = [<pad> x context, target] (each of capacity
 * context_window + n). Returns the context length; the block's source then joins the
 * context of the rows after it (<pad> tokens never enter the context, as in fairseq). */
int moelm_context_window_next(MoelmContextWindow *cw, const int32_t *source, const int32_t *target, int64_t n,
                              int32_t *row_src, int32_t *row_tgt);

/* ---- word merging (--remove-bpe / --post-process) ------------------------------------ */

typedef enum {
  MOELM_BPE_NONE,
  MOELM_BPE_SUFFIX,       /* "@@ " / subword_nmt: a piece ending in "@@" continues the word */
  MOELM_BPE_SENTENCEPIECE, /* a piece continues the word when the next piece does not start with
                            * U+2581 and is not a special symbol */
  MOELM_BPE_GPT2           /* GPT-2 ids (--bpe gpt2): a token continues the word when the next token
                            * does not start with a space and neither is a special symbol */
} MoelmBpeKind;

/* "@@ "/"@@"/"subword_nmt" → SUFFIX, "sentencepiece" → SENTENCEPIECE, "gpt2" → GPT2; NULL → NONE; anything
 * else is an error naming the value (fairseq: "not implemented"). */
gboolean moelm_bpe_kind_parse(const char *name, MoelmBpeKind *kind, GError **error);

/* Whether target i of a row (targets (n)) is a piece whose word goes on in the next piece. */
gboolean moelm_bpe_piece_continues(const MoelmDictionary *dict, MoelmBpeKind kind, const MoelmGpt2Bpe *gpt2,
                                   const int32_t *targets, int64_t n, int64_t i);

/* fairseq's merge in place: for i < n-1 whose piece continues, lprobs[i+1] += lprobs[i] and
 * lprobs[i] = 0 (float arithmetic). Returns the number of merged pieces (fairseq's
 * skipped_toks, left out of the count). */
int64_t moelm_bpe_merge_scores(const MoelmDictionary *dict, MoelmBpeKind kind, const MoelmGpt2Bpe *gpt2,
                               const int32_t *targets, float *lprobs, int64_t n);

typedef struct {
  char *word;         /* the pieces joined ("@@" or the leading U+2581 removed) */
  float lprob;        /* merged score of the word (natural log) */
  gboolean is_bpe;    /* made of more than one piece */
  gboolean has_next;  /* a later non-zero score exists in the row */
  float next_lprob;   /* that score (fairseq's next_word_prob) */
} MoelmWordProb;

/* fairseq's word list of one row, from merged scores (moelm_bpe_merge_scores): a piece that
 * continues is joined to the next; a trailing continuing piece yields no word. With `gpt2`
 * (--bpe gpt2) words are the decoded text of their tokens (GPT2: without the leading space).
 * GPtrArray of MoelmWordProb* (free with g_ptr_array_unref). */
GPtrArray *moelm_row_words(const MoelmDictionary *dict, MoelmBpeKind kind, const MoelmGpt2Bpe *gpt2,
                           const int32_t *targets, const float *lprobs, int64_t n);

/* ---- scoring a split ----------------------------------------------------------------- */

typedef struct {
  int context_window;        /* C >= 0 */
  int64_t tokens_per_sample; /* the block size the split was cut with (already reduced by C) */
  int max_sentences;         /* rows per batch; <= 0: no limit */
  int64_t max_tokens;        /* padded block tokens per batch (fairseq's count, context not
                              * included); <= 0: no limit. One of the two must be set. */
  int64_t max_positions;     /* blocks longer are skipped with a warning (fairseq's
                              * ignore_invalid_inputs); <= 0: the model's positions */
  const MoelmDictionary *dict; /* for bpe merging (may be NULL when bpe is NONE) */
  MoelmBpeKind bpe;
  const MoelmGpt2Bpe *gpt2;    /* MOELM_BPE_GPT2: the vocabulary */
} MoelmScoreOptions;

typedef struct {
  double nll_sum;         /* -sum of the counted scores, nats */
  int64_t count;          /* fairseq's count: finite scores minus merged bpe pieces */
  int64_t ntokens;        /* target tokens of the scored blocks ("Evaluated N tokens") */
  int64_t rows;           /* blocks scored */
  int64_t skipped_blocks; /* blocks longer than max_positions */
  int64_t skipped_inf;    /* tokens with an infinite score (left out, as fairseq) */
  double seconds;         /* time spent in the model */
} MoelmScoreResult;

/* One scored row, in stream order. */
typedef struct {
  gsize block;            /* block index in the split (fairseq's sample id) */
  int64_t start;          /* stream offset of the block's first target; token j is at start + j */
  int64_t n;              /* block length */
  int context;            /* context tokens that preceded it in the row */
  const int32_t *targets; /* (n) */
  const float *lprobs;    /* (n) natural-log probabilities, merged when bpe != NONE */
} MoelmScoredRow;

typedef gboolean (*MoelmScoredRowFunc)(const MoelmScoredRow *row, gpointer data, GError **error);

/* Score every block of `split` in stream order, rows batched together (B rows of up to
 * tokens_per_sample + C tokens per model call). `cb` (may be NULL) sees every row; a FALSE
 * from it stops the run with its error. */
gboolean moelm_score_split(MoelmModel *m, const MoelmLmSplit *split, const MoelmScoreOptions *opt,
                           MoelmScoredRowFunc cb, gpointer cb_data, MoelmScoreResult *out, GError **error);

/* ---- the same walk with another way of scoring rows ------------------------------------ */

/* One batch of rows as moelm_score_split lays them out, padded with <pad> to (B, W). */
typedef struct {
  int B, W;
  const int32_t *src;   /* (B, W) [context | block source] */
  const int32_t *tgt;   /* (B, W) [<pad> x context | block target] */
  const int *ctx;       /* (B) context tokens of each row */
  const int64_t *len;   /* (B) block tokens of each row */
  const int64_t *start; /* (B) stream offset of each block's first target */
} MoelmScoreRows;

/* Fill lprobs (B, W) with the natural-log score of every block target, at row positions
 * [ctx, ctx + len); the other positions are not read. */
typedef gboolean (*MoelmRowScorerFunc)(const MoelmScoreRows *rows, float *lprobs, gpointer data, GError **error);

/* moelm_score_split with the model call replaced by `score` (the sequence-level mixture's
 * K passes per row). opt->max_positions must be set (> 0). The bpe merging, counting and
 * callbacks are those of moelm_score_split; `seconds` is the time spent in `score`. */
gboolean moelm_score_split_with(MoelmRowScorerFunc score, gpointer score_data, const MoelmLmSplit *split,
                                const MoelmScoreOptions *opt, MoelmScoredRowFunc cb, gpointer cb_data,
                                MoelmScoreResult *out, GError **error);

/* fairseq's figures: loss in base 2 (-nll_sum / count / ln 2, 0 when count is 0) and 2^loss. */
double moelm_score_loss_base2(const MoelmScoreResult *r);
double moelm_score_perplexity(const MoelmScoreResult *r);

G_END_DECLS

#endif
