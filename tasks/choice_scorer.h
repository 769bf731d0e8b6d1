/* moelm — fairseq hub's `score` for continuations: the log-probability of each choice given a
 * context (zero-shot multiple choice, COPA-style), for `moelm score` and the library API.
 *
 * Encoding (fairseq's hub): text → tokens through GPT-2's BPE (--bpe gpt2), SentencePiece, or
 * whitespace-separated words, each looked up in dict.txt (absent → <unk>), </s> appended.
 * With replace_newlines_with_eos the text is cut into lines as Python's str.splitlines() cuts
 * it and every line is encoded with its own </s>, so a newline becomes </s>, as the models
 * were trained. The context and the choice are encoded separately and concatenated, so the
 * choice's tokens are exactly its own: end the context with a newline or start the choice
 * with a space, as the text would be written.
 *
 * Scoring (fairseq's LM inference dataset): leading and trailing </s> are stripped, the source
 * is </s> then the tokens, and every token is scored given the ones before it; a choice's
 * score is the sum over its tokens (natural log). A sequence-level mixture
 * (--task language_model_moe) scores with the exact marginal: per token
 *     s_t = LSE_k(log π_k + c_k(t)) - LSE_k(log π_k + c_k(t-1))
 * (c_k: the cumulative log-likelihood with <expert_k> in place of the first </s>, π: the
 * uniform or learned prior, whose gate sees an empty context), so the context updates the
 * posterior over the experts; or under one expert (a fixed k, or the most probable one given
 * the context). */
#ifndef MOELM_TASKS_CHOICE_SCORER_H
#define MOELM_TASKS_CHOICE_SCORER_H

#include <stdint.h>
#include <glib.h>

#include "gating/mean_pool.h"
#include "moelm/dictionary.h"
#include "moelm/gpt2_bpe.h"
#include "moelm/model.h"
#include "moelm/spm.h"
#include "tasks/mixture.h"

G_BEGIN_DECLS

typedef struct {
  const MoelmDictionary *dict;
  const MoelmGpt2Bpe *gpt2;           /* --bpe gpt2, else */
  const MoelmSpm *spm;                /* SentencePiece, else whitespace words */
  gboolean replace_newlines_with_eos; /* fairseq hub's replace_newline_with_eos */
} MoelmTextEncoder;

/* The tokens of context + choice (appended to `tokens`, int32) and how many of them are the
 * context's. The text must be valid UTF-8. */
gboolean moelm_encode_continuation(const MoelmTextEncoder *enc, const char *context, const char *choice,
                                   GArray *tokens, int *n_context, GError **error);

#define MOELM_CHOICE_MARGINAL (-1) /* expert: the mixture's exact marginal */
#define MOELM_CHOICE_AUTO (-2)     /* expert: the most probable one given the context */

typedef struct {
  MoelmModel *model;
  const MoelmMixtureConfig *mix; /* NULL: a plain language model */
  MoelmGate *gate;               /* the mixture's learned prior (NULL: uniform) */
  int expert;                    /* mixture: MOELM_CHOICE_MARGINAL, MOELM_CHOICE_AUTO or 0..K-1 */
} MoelmChoiceScorer;

typedef struct {
  int n;          /* scored tokens of the choice */
  int32_t *tokens; /* (n) */
  float *lprobs;   /* (n) natural-log score of each */
  double sum;
  int expert;      /* the expert used (-1: marginal or a plain model) */
} MoelmChoiceScore;

/* Score the tokens after the first n_context of tokens[0..n) (moelm_encode_continuation's
 * output). Tokens beyond the model's positions are an error. */
gboolean moelm_score_continuation(const MoelmChoiceScorer *s, const int32_t *tokens, int n, int n_context,
                                  MoelmChoiceScore *out, GError **error);
void moelm_choice_score_clear(MoelmChoiceScore *c);

G_END_DECLS

#endif
