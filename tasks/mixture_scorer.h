/* moelm — scoring with a sequence-level mixture (--task language_model_moe): eval-lm's exact
 * marginal over the experts, and the posterior of the experts given a prompt (generation).
 *
 * eval-lm rows are those of tasks/scorer.h (MoelmContextWindow): [context | block]. Each row
 * runs once per expert, with <expert_k> written into position 0 of a copy of the row (the
 * slot of the oldest context token, or of the block's previous token / </s> when there is no
 * context). Every row position then predicts the row's next token: context positions
 * predict the context (and the block's previous token), block positions the block. With
 * c_k(t) the cumulative log-likelihood of the row up to position t under expert k, and
 * log π the prior, the score of position t is
 *     s_t = LSE_k(log π_k + c_k(t)) - LSE_k(log π_k + c_k(t-1))        (c_k(-1) = 0)
 * Only the block's positions are scored, so a row's scores add up to
 *     log Σ_k π_k p_k(context, block) - log Σ_k π_k p_k(context)
 * = log Σ_k P(k | context) p_k(block | context): the context updates the posterior without
 * being counted.
 *
 * The prior: uniform (-log K), or the gating network on the --gating-context stream tokens
 * before the first token the row predicts (stream offset start - context): the tokens
 * before the row, the one under the expert token included, exactly what training shows the
 * gate (with no context window this is training's gating context, so eval-lm with
 * --context-window 0 gives training's valid loss). The gate never sees a scored token
 * (complete_doc rows skip the stream's document-boundary </s>, so there the gate may also
 * see a context token of the row). */
#ifndef MOELM_TASKS_MIXTURE_SCORER_H
#define MOELM_TASKS_MIXTURE_SCORER_H

#include <stdint.h>
#include <glib.h>

#include "gating/mean_pool.h"
#include "tasks/mixture.h"
#include "tasks/mixture_docs.h"
#include "tasks/scorer.h"

G_BEGIN_DECLS

/* What --mixture-report prints: each expert alone and the per-row best expert. */
typedef struct {
  int K;
  double *expert_nll;  /* (K) -Σ of the scored tokens' log-probs under expert k alone (nats) */
  double *post_mass;   /* (K) Σ over rows of P(k | context, block) */
  int64_t *best_rows;  /* (K) rows whose scored tokens expert k explains best */
  double oracle_nll;   /* -Σ over rows of max_k Σ_scored log p_k (an oracle: it looks at the scores) */
  int64_t rows;
  /* Training's assignment rule (a model's decision, not an oracle): a row goes to the expert
   * with the highest log π_k + Σ_scored log p_k; with a checkpoint trained with the document
   * E-step (--mixture-estep document) whole documents are assigned instead, by the sum over
   * their rows plus the prior of their first row. */
  gboolean by_document;
  int64_t *assigned;       /* (K) rows, or documents, that the rule gives expert k */
  MoelmDomainTally *tally; /* the documents' scores; labels from DATA/{split}.domains if present */
  gboolean has_accuracy;   /* a label file was there: */
  double accuracy;         /* documents of the domain matched to their expert (best one-to-one matching) */
  double per_domain;       /* the mean over domains of that share */
  int n_domains;           /* with labels: the domains in order of first appearance, */
  char **domain_names;     /* (n_domains + 1, NULL-terminated) their names, and */
  int64_t *domain_counts;  /* (n_domains, K) their documents per expert by the document rule */
} MoelmMixtureReport;

void moelm_mixture_report_init(MoelmMixtureReport *r, int K);
void moelm_mixture_report_clear(MoelmMixtureReport *r);

/* moelm_score_split for a mixture: the per-token scores s_t above, through the same bpe
 * merging, counting and callbacks. `gate` is the learned prior (NULL: uniform). `report`
 * (may be NULL) accumulates the --mixture-report figures. The K copies of a batch's rows run
 * as one batch of B·K rows, cut into model calls of at most `call_logits` logits
 * (rows x width x vocabulary; <= 0: no limit) to bound memory. */
gboolean moelm_mixture_score_split(MoelmModel *m, MoelmGate *gate, const MoelmMixtureConfig *cfg,
                                   const MoelmLmSplit *split, const MoelmScoreOptions *opt, int64_t call_logits,
                                   MoelmScoredRowFunc cb, gpointer cb_data, MoelmScoreResult *out,
                                   MoelmMixtureReport *report, GError **error);

/* The log joint of each expert with a prompt (n tokens, no BOS, no </s>; may be empty):
 * log_joint (K) = log π_k + log p(prompt | <expert_k> as BOS), where the gate (NULL:
 * uniform) sees an empty context, i.e. gives its learned unconditional prior. The argmax is
 * the expert with the highest posterior. */
gboolean moelm_mixture_prompt_log_joint(MoelmModel *m, MoelmGate *gate, const MoelmMixtureConfig *cfg,
                                        const int32_t *prompt, int n, double *log_joint, GError **error);

G_END_DECLS

#endif
