/* moelm — text generation from a language model: fairseq's SequenceGenerator with its
 * BeamSearch and Sampling searches, as fairseq-interactive runs them for the
 * language_modeling task (one prompt at a time).
 *
 * Decoding starts from `bos` (</s> for the LM task; <expert_k> for a mixture expert), the
 * prompt is forced as a prefix (its log-probs are part of the scores), then tokens are chosen
 * until </s> or the maximum length min(max_len_a·(prompt+1) + max_len_b, positions - 1).
 * Scores are natural-log sums in float32, as fairseq keeps them; the CLI converts to base 2.
 * Sampling draws come from Philox(seed, stream): a prompt's output depends only on the
 * seed, its stream number and the model, never on the prompts before it. */
#ifndef MOELM_TASKS_GENERATOR_H
#define MOELM_TASKS_GENERATOR_H

#include <stdint.h>
#include <glib.h>

#include "moelm/model.h"

G_BEGIN_DECLS

typedef struct {
  int beam;                  /* --beam (5): hypotheses kept (capped at V-1); samples with --sampling */
  gboolean sampling;         /* --sampling: fairseq's Sampling search instead of beam search */
  int sampling_topk;         /* --sampling-topk (-1 = off) */
  double sampling_topp;      /* --sampling-topp (-1 = off; takes precedence over top-k, as fairseq) */
  double temperature;        /* --temperature (1.0): log_softmax(lprobs / T) */
  double max_len_a;          /* --max-len-a (0) */
  int max_len_b;             /* --max-len-b (200) */
  int min_len;               /* --min-len (1): no </s> before this step (prompt steps excepted) */
  gboolean normalize_scores; /* !--unnormalized: final score / len^lenpen */
  double lenpen;             /* --lenpen (1.0) */
  double unkpen;             /* --unkpen (0.0): subtracted from <unk>'s log-prob */
  int no_repeat_ngram_size;  /* --no-repeat-ngram-size (0 = off) */
  int32_t bos;               /* first decoder input (MOELM_EOS for the LM task) */
  uint64_t seed;             /* --seed (1) */
} MoelmGeneratorConfig;

/* fairseq's defaults (beam 5, max_len_b 200, min_len 1, lenpen 1, bos </s>, seed 1, ...). */
void moelm_generator_config_init(MoelmGeneratorConfig *cfg);

/* One finished hypothesis. */
typedef struct {
  int len;
  int32_t *tokens;           /* (len): prompt, continuation, final </s>; without the BOS */
  float *positional_scores;  /* (len): per-token log-probs (natural log), prompt included */
  float score;               /* Σ positional, divided by len^lenpen when normalising */
} MoelmHypothesis;

void moelm_hypothesis_free(MoelmHypothesis *hyp);

/* The checks fairseq makes on these options (beam >= 1, temperature > 0, top-k/top-p only
 * with sampling, ...); the error names the option. */
gboolean moelm_generator_config_check(const MoelmGeneratorConfig *cfg, GError **error);

typedef struct MoelmGenerator MoelmGenerator;

/* A generator over `model` (borrowed; it must outlive the generator), after
 * moelm_generator_config_check. One generation at a time per generator. */
MoelmGenerator *moelm_generator_new(MoelmModel *model, const MoelmGeneratorConfig *cfg, GError **error);
void moelm_generator_free(MoelmGenerator *gen);

/* Never generate `token` (expert tokens of a mixture, ...). Prompt tokens are still forced.
 * </s> and out-of-vocabulary ids are refused. */
gboolean moelm_generator_ban_token(MoelmGenerator *gen, int32_t token, GError **error);

/* Start the next generations from `bos` instead (a mixture's expert token); out-of-vocabulary
 * ids are refused. */
gboolean moelm_generator_set_bos(MoelmGenerator *gen, int32_t bos, GError **error);

/* The maximum number of tokens after the BOS for a prompt of `prompt_len` tokens, the final
 * </s> included (fairseq's max_len + 1). */
int moelm_generator_max_tokens(const MoelmGenerator *gen, int prompt_len);

/* Generate for one prompt (`prompt_len` dictionary ids, no BOS, no </s>; may be empty).
 * Returns the finished hypotheses (MoelmHypothesis*, freed with the array), best score
 * first: `beam` of them, fewer only when some beams could not finish. `stream` selects the
 * random stream for sampling (the CLI passes the prompt number). */
GPtrArray *moelm_generator_generate(MoelmGenerator *gen, const int32_t *prompt, int prompt_len, uint64_t stream,
                                    GError **error);

G_END_DECLS

#endif
