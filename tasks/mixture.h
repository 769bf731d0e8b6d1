/* moelm — sequence-level mixtures of LMs (--task language_model_moe): hMoEup, hMoElp, sMoEup,
 * sMoElp with online responsibility assignment and shared parameterisation.
 *
 * Expert k is the shared decoder with <expert_k> written into position 0 of a copy of each
 * source row. For a block y with conditioning context x (the --gating-context tokens before
 * it in the stream):
 *   lprob[b,k] = Σ_t log p(y_t | y_<t, expert k)
 *   log π[b,k] = -log K (uniform prior) or MeanPoolGatingNetwork(x_b) (learned prior)
 *   E-step (no dropout, no gradient, all K experts as one batch of B·K rows):
 *     post[b,·] = softmax_k(lprob[b,k] + log π[b,k])
 *   M-step, with dropout:
 *     hard: loss -(lprob[b,w] + log π[b,w]) for the winner w = argmax post
 *     soft: loss -logsumexp_k(lprob[b,k] + log π[b,k]); its gradient weights row k by post[b,k]
 * Validation: the exact mixture NLL -logsumexp_k(lprob + log π) per token. */
#ifndef MOELM_TASKS_MIXTURE_H
#define MOELM_TASKS_MIXTURE_H

#include <stdint.h>
#include <glib.h>
#include <json-glib/json-glib.h>

#include "lm_data.h"
#include "objective.h"

G_BEGIN_DECLS

/* Domain discovery (docs/mixtures.md; tasks/mixture_assign.h has the exact rules). All zero:
 * fairseq's method, unchanged. */
typedef enum {
  MOELM_MIXTURE_INIT_NONE,
  MOELM_MIXTURE_INIT_TFIDF,  /* tf-idf vectors of the documents */
  MOELM_MIXTURE_INIT_LABELS, /* DATA/train.domains (supervised) */
  MOELM_MIXTURE_INIT_UNIGRAM, /* a mixture of multinomials over the documents' pieces (EM) */
  MOELM_MIXTURE_INIT_AUTO     /* the best of unigram and tf-idf partitions by a damped mixture's likelihood */
} MoelmMixtureInit;

typedef struct {
  gboolean doc_estep;     /* --mixture-estep document: responsibilities over whole documents */
  double balance;         /* --mixture-balance F: balanced hard assignment in a batch (0: off) */
  double temperature;     /* --mixture-temperature T0: annealed E-step (0: off) */
  int64_t anneal_updates; /* --mixture-anneal-updates N: updates to anneal over */
  MoelmMixtureInit init;  /* --mixture-init: responsibilities from a clustering of the documents */
  int64_t init_after;     /* --mixture-init-after W: updates before the clustering takes over */
  int64_t init_updates;   /* --mixture-init-updates N: updates that follow the clustering */
  int update_freq;        /* sub-batches per update: --update-freq x ranks (0 = 1) */
} MoelmDiscoveryConfig;

typedef struct {
  gboolean hard;          /* h (hard winner) vs s (soft, posterior-weighted) */
  gboolean learned_prior; /* lp (gating network) vs up (uniform) */
  int num_experts;        /* K */
  int gating_context;     /* G context tokens before the block (default 256) */
  int32_t expert_token0;  /* id of <expert_0>; <expert_k> = expert_token0 + k */
  MoelmDiscoveryConfig discovery;
} MoelmMixtureConfig;

/* Whether any domain-discovery option is on. */
gboolean moelm_mixture_discovery_on(const MoelmMixtureConfig *cfg);
/* The options as checkpoint metadata ("discovery" in the task metadata) and back; a member
 * that is missing is off, one of the wrong type is an error. */
JsonNode *moelm_mixture_discovery_to_json(const MoelmDiscoveryConfig *d);
gboolean moelm_mixture_discovery_from_json(JsonObject *o, MoelmDiscoveryConfig *d, GError **error);

/* Parse --method: hMoEup | hMoElp | sMoEup | sMoElp. */
gboolean moelm_mixture_method_parse(const char *method, gboolean *hard, gboolean *learned, GError **error);

/* The objective (its gating network is created on first use, from the model it is given). */
MoelmObjective *moelm_mixture_objective_new(const MoelmMixtureConfig *cfg);

/* Append <expert_0> … <expert_{K-1}> to a dictionary; returns the id of <expert_0>. */
int32_t moelm_mixture_add_expert_tokens(MoelmDictionary *dict, int K);

/* The conditioning context of each row: ctx (B, G) and lens (B) — the G stream tokens before
 * the start of block indices->idx[b] (fewer at the start of the stream). */
void moelm_mixture_gather_context(const MoelmLmSplit *split, const MoelmBatchIndices *indices, int G, int32_t *ctx,
                                  int *lens);

/* For B rows (src, tgt (B,T)), the B·K rows of the K experts: row b*K+k of src_out (B·K, T) is
 * src row b with <expert_k> at position 0, and of tgt_out the unchanged target row b. */
void moelm_mixture_expand_rows(const int32_t *src, const int32_t *tgt, int B, int T, int K, int32_t expert_token0,
                               int32_t *src_out, int32_t *tgt_out);

/* The E-step for a collated batch: log π (B,K) (uniform, or the gate without dropout) and
 * lprob (B,K) of every expert. `gate` may be NULL for a uniform prior. */
struct MoelmGate;
/* The E-step scores the B*K rows in model calls of at most this many bytes of logits (256 MB;
 * at least one row per call). Variable so that a test can make every call one row. */
extern int64_t moelm_mixture_estep_logits_bytes;
gboolean moelm_mixture_estep(MoelmModel *model, struct MoelmGate *gate, const MoelmMixtureConfig *cfg,
                             const MoelmLmBatch *b, float *log_prior, float *lprob, GError **error);

G_END_DECLS

#endif
