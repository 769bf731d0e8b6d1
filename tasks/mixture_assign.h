/* moelm — how a sequence-level mixture assigns blocks to experts (the E-step's decision), with
 * the domain-discovery options of docs/mixtures.md:
 *
 *   scores   s[b,k] = log π[b,k] + lprob[b,k]                      (block E-step, fairseq's)
 *            s[b,k] = log π[b,k] + Σ_{j in doc(b)} lprob[j,k]        (document E-step)
 *            where lprob[j,k] is block j's latest E-step log-likelihood (this batch's, or the
 *            one remembered from when j was last trained; blocks not seen yet count 0)
 *   hard     w[b] = argmax_k s[b,k]; balanced: the assignment with the largest total subject to
 *            every expert getting at most ceil(F·B/K) and at least max(1, floor(B/(F·K))) of
 *            the B rows when B >= K (F >= 1, the balance factor)
 *   annealed (deterministic annealing) while τ > 0: the weights softmax_k(s[b,k] / (τ·n_b))
 *            with n_b the tokens s[b,·] sums over, so that τ is in nats per token; τ falls
 *            linearly from T0 to 0 over N updates (hard methods: the rows whose weight is at
 *            least 1e-3 are trained with those weights, renormalised; the rule becomes the hard
 *            one) or to the posterior (soft methods: softmax(s / max(1, τ·n_b))).
 *
 * With every option off (block scores, no balance, no temperature) this is exactly fairseq's
 * rule: hard = argmax of the posterior, soft = the posterior. */
#ifndef MOELM_TASKS_MIXTURE_ASSIGN_H
#define MOELM_TASKS_MIXTURE_ASSIGN_H

#include <stdint.h>
#include <glib.h>

#include "lm_data.h"
#include "mixture_docs.h"

G_BEGIN_DECLS

/* Min-cost assignment of the n rows of an (n, m) cost matrix (row-major) to distinct columns,
 * n <= m (the Hungarian method with potentials, O(n^2 m)): col[i] is the column of row i. */
void moelm_min_cost_assignment(const double *cost, int n, int m, int *col);

/* The temperature at update t (0-based) of a schedule starting at t0 and reaching `final`
 * after n updates (n <= 0 or t0 <= 0: `final` throughout). */
double moelm_mixture_temperature(double t0, double final, int64_t n, int64_t t);

/* post (B, K) = softmax_k(s / tau), tau > 0, computed in double. */
void moelm_mixture_softmax(const double *s, int B, int K, double tau, double *post);

/* Hard winners w (B) from scores s (B, K): the argmax (ties to the lower expert), balanced when
 * balance >= 1 (see above). With balance >= 1 and B >= K every expert gets at least one row. */
void moelm_mixture_assign(const double *s, int B, int K, double balance, int *w);

/* The annealed weights post (B, K) = softmax_k(s[b,k] / t_b), t_b = max(floor, tau·ntok[b]);
 * t_b == 0 gives the one-hot of the argmax. */
void moelm_mixture_annealed_weights(const double *s, const double *ntok, int B, int K, double tau, double floor,
                                    double *post);

/* The rows each expert may take in a balanced assignment of B rows (min, max). */
void moelm_mixture_balance_limits(int B, int K, double balance, int *min_rows, int *max_rows);

/* Document-level E-step memory over one split: the latest log-likelihood of every block under
 * every expert. */
typedef struct {
  const MoelmLmSplit *split;
  MoelmDocMap *map;
  int K;
  float *lprob; /* (n_blocks, K); NAN: not seen yet */
  int32_t *ntok; /* (n_blocks) target tokens of each block */
} MoelmDocMemory;

MoelmDocMemory *moelm_doc_memory_new(const MoelmLmSplit *split, int K);
void moelm_doc_memory_free(MoelmDocMemory *mem);
/* Remember the batch's lprob (B, K) for its blocks, then s (B, K) = log_prior + the sum over
 * each row's document of the remembered log-likelihoods (this batch's included), and, when
 * ntok is not NULL, ntok (B) = the target tokens of the blocks that sum covers. */
void moelm_doc_memory_scores(MoelmDocMemory *mem, const MoelmBatchIndices *indices, const float *lprob,
                             const float *log_prior, double *s, double *ntok);

G_END_DECLS

#endif
