/* moelm — the per-step pieces of generation (internal to tasks/generator*.c): shaping the
 * model's log-probs, and the two searches of fairseq/search.py that turn one step's
 * log-probs into candidates. */
#ifndef MOELM_TASKS_GENERATOR_SEARCH_H
#define MOELM_TASKS_GENERATOR_SEARCH_H

#include <stdint.h>
#include <glib.h>

#include "moelm/rng.h"

/* The candidates of one step, best first for beam search, one per row for sampling. */
typedef struct {
  int n;
  float *score;   /* (n) cumulative log-prob of the hypothesis extended by `token` */
  int32_t *token; /* (n) */
  int32_t *beam;  /* (n) the row it extends */
} GenCandidates;

/* Per-generator scratch, max(V, 2K) entries each: one row's candidate set by rank. */
typedef struct {
  float *lp;      /* log-probs */
  int32_t *idx;   /* their tokens */
  int64_t *flat;  /* flat indices of a top-n selection */
  void *pairs;    /* (log-prob, token) pairs for sorting */
} GenScratch;

/* lp (V) ← log_softmax(lp / T). */
void gen_apply_temperature(float *lp, int V, double temperature);

/* fairseq's no-repeat-ngram blocking for one row: `seq` (len) is the hypothesis after its
 * BOS; every token that would complete an n-gram already in seq gets -inf. */
void gen_block_ngrams(float *lp, const int32_t *seq, int len, int n);

/* BeamSearch.step: the best min(2K, K·V - 1) (first step: min(2K, V - 1), from row 0 only)
 * of lprobs (K, V) + prev (K) (prev NULL on the first step); ties go to the lower
 * row·V + token. `out` has room for 2K. */
void gen_beam_step(const float *lprobs, const float *prev, int K, int V, GenScratch *scratch, GenCandidates *out);

/* Allocate / free the scratch for a vocabulary of V and beam K. */
void gen_scratch_init(GenScratch *s, int V, int K);
void gen_scratch_clear(GenScratch *s);

/* Sampling.step: K draws, from row 0 on the first step (prev NULL), else one per row; among
 * the top-p set when topp > 0, else the top-k when topk > 0, else the whole row. A draw's
 * score is its log-prob (not renormalised to the set) plus prev[row]. */
void gen_sampling_step(const float *lprobs, const float *prev, int K, int V, int topk, double topp, MoelmRng *rng,
                       GenScratch *scratch, GenCandidates *out);

#endif
