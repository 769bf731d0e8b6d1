/* moelm — token-level routing: fairseq's Top1Gate / Top2Gate (fairseq/modules/moe/top1gate.py,
 * top2gate.py) on the host, over the router logits of S tokens.
 *
 *   gates = softmax(logits)                                  (S, E)
 *   first expert  e1 = argmax gates   (first maximum on ties, as torch.argmax)
 *   second expert e2 (top-2) by policy: all = argmax over the others; sampling = argmax of
 *     logits + Gumbel noise over the others; random = argmax, kept only when
 *     2 * g2 > u (g2 normalised first with normalize_before_dropping)
 *   padding tokens (pad[s] != 0, when pad is given) take no expert and no capacity
 *   locations: in token order (or, batch-prioritised, in order of decreasing top-1 gate,
 *     ties by token), the first choices of each expert queue first, then the second
 *     choices; an assignment at location >= capacity is dropped (the token rides the
 *     residual for it)
 *   combine weights: top-1: g1 of the kept choice. top-2: g1, g2 masked by what survived,
 *     renormalised to sum to one (g1/(g1+g2)); with normalize_before_dropping normalised
 *     before the masking instead (denominators clamped at FLT_EPSILON as fairseq)
 *   l_aux = E * sum_e mean_s(gates[s,e]) * (non-pad first choices of e) / S
 *
 * Noise (training only; at eval the second expert is the argmax and always kept, so scores
 * are deterministic): word i of the Philox stream (seed, update, layer, site) turned into
 * u = ((word >> 8) + 0.5) / 2^24, strictly inside (0, 1): Gumbel noise for token s and
 * expert e is -log(-log u) with i = s*E + e at site MOELM_GATE_SITE_GUMBEL; the random
 * policy draws u with i = s at site MOELM_GATE_SITE_RANDOM. */
#ifndef MOELM_GATING_TOKEN_GATE_H
#define MOELM_GATING_TOKEN_GATE_H

#include <stdint.h>
#include <glib.h>

#include "moelm/model_config.h"

G_BEGIN_DECLS

enum { MOELM_GATE_SITE_GUMBEL = 16, MOELM_GATE_SITE_RANDOM = 17 };

typedef struct {
  int experts;                         /* E */
  int top_k;                           /* 1 or 2 */
  int capacity;                        /* slots per expert; <= 0: unlimited (dropless) */
  MoelmSecondExpertPolicy policy;      /* top-2 only */
  gboolean normalize_before_dropping;
  gboolean batch_prioritized;
  gboolean noise;                      /* draw the policy's noise (training); FALSE: none */
  uint64_t seed;                       /* the noise stream */
  uint32_t update;
  uint16_t layer;
} MoelmTokenGateParams;

/* fairseq's capacity for S tokens: training top-1 int(factor * ceil(S/E)), top-2
 * int(factor * 2 * ceil(S/E)) (fairseq's top-2 has no factor: factor 1 is fairseq's);
 * eval ceil(eval_fraction * S) when eval_fraction > 0, else unlimited; dropless: unlimited.
 * Returns 0 for unlimited (so a training capacity is at least 1). */
int moelm_token_gate_capacity(int S, int E, int top_k, double capacity_factor, gboolean dropless, gboolean eval,
                              double eval_fraction);

/* What one routing decided, and what its backward needs. All host memory. Slot j = s*K + k
 * is token s's k-th choice. */
typedef struct {
  int S, E, K, capacity;
  gboolean normalize_before; /* top-2 weights normalised before dropping */
  float *gates;          /* (S, E) softmax of the logits */
  int32_t *choice;       /* (S*K) the chosen expert of each slot */
  int32_t *location;     /* (S*K) its place in the expert's queue; -1 when it never queued
                          * (padding, or a second choice the random policy dropped) */
  uint8_t *kept;         /* (S*K) 1 when dispatched (queued below capacity) */
  float *norm;           /* (S*K) gate value after normalize-before-dropping (else the raw gate) */
  float *weight;         /* (S*K) combine weight, 0 when not kept */
  int32_t *count1;       /* (E) queued first choices per expert (mask1's column sums) */
  /* dispatch order: kept slots grouped by expert, by location within an expert */
  int n_dispatch;
  int32_t *offsets;      /* (E+1) first dispatch row of each expert */
  int32_t *dispatch_token; /* (n_dispatch) token of each row */
  int32_t *dispatch_slot;  /* (n_dispatch) slot of each row */
  float *dispatch_weight;  /* (n_dispatch) combine weight of each row */
  /* fairseq's gate metadata of this routing */
  double l_aux;
  double entropy;        /* mean gate entropy (nats) over all S tokens */
  double overflow1, overflow2; /* % of queued first/second choices dropped (0 when none queued) */
  int unused1, unused2;  /* experts that are no token's first/second choice */
  double balance_top1, balance_bottom1; /* % of tokens whose first choice is among the 20% */
  double balance_top2, balance_bottom2; /* most/least used experts (ceil(0.2 E), at least 1) */
  int alloc_S, alloc_E, alloc_K;
} MoelmRouting;

MoelmRouting *moelm_routing_new(void);
void moelm_routing_free(MoelmRouting *r);

/* Route S tokens: logits (S, E) host, pad (S) host or NULL. Fills r (reallocating as needed). */
void moelm_token_gate_route(const MoelmTokenGateParams *p, const float *logits, const uint8_t *pad, int S,
                            MoelmRouting *r);

/* Gradient of  sum_j dweight[j] * weight[j] + aux_coef * l_aux  with respect to the logits,
 * the routing decisions (choices, masks, noise) held fixed: dlogits (S, E) host, overwritten.
 * dweight (S*K) host (entries of slots that were not kept are ignored). */
void moelm_token_gate_backward(const MoelmRouting *r, const float *dweight, double aux_coef, float *dlogits);

G_END_DECLS

#endif
