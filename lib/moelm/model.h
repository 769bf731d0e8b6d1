/* moelm — fairseq's transformer_lm decoder on a backend.
 *
 * Parameters live in ONE contiguous buffer (the arena) with fairseq's names and
 * [out, in] Linear layout; gradients mirror it. The per-layer attention projections are laid
 * out q_proj.weight, k_proj.weight, v_proj.weight (then the three biases) back to back, so
 * they act as one fused (3C, C) projection.
 *
 * The training API is "weighted NLL over rows": for a batch of B rows the loss is
 *   L = -sum_b w_b * sum_t log p(tgt[b,t] | src[b,<=t])      (pad targets excluded)
 * which serves plain LM training (w_b = 1/ntokens), hard mixtures (winner rows) and soft
 * mixtures (posterior-weighted rows) alike.
 *
 * Token-level MoE layers (cfg.moe_freq > 0, docs/moe.md) add fairseq's MoECriterion gate loss
 * to that training loss:
 *   L += moe_gate_loss_wt * S_w * (sum | average over the MoE layers of l_aux),
 *   S_w = sum_b w_b * (non-pad targets of row b)
 * S_w is the weighted token count, which is what every objective's sample size is (w_b = 1:
 * the batch's tokens; mixture posteriors summing to one per block: the same), so after the
 * trainer divides by the sample size the gate term is exactly fairseq's wt * l_aux. Routing
 * semantics: train_step always routes as in training (capacity, second-expert noise; the
 * noise stream is `ids`, stream 0 when NULL); score routes as in training when `ids` is given
 * and with eval semantics when it is NULL (dropless unless
 * moe_eval_capacity_token_fraction > 0, no noise); decode uses eval semantics. */
#ifndef MOELM_MODEL_H
#define MOELM_MODEL_H

#include <stdint.h>
#include <glib.h>

#include "moelm/backend.h"
#include "moelm/dist.h"
#include "moelm/model_config.h"

G_BEGIN_DECLS

typedef struct {
  char *name;    /* fairseq name, e.g. "decoder.layers.0.fc1.weight" */
  size_t offset; /* in floats, into the arena */
  size_t numel;
  int ndim;
  int64_t shape[2];
  int expert;    /* the (global) expert of a token-MoE expert's tensor; -1 for every other tensor */
} MoelmParam;

typedef struct MoelmModel MoelmModel;

MoelmModel *moelm_model_new(const MoelmModelConfig *cfg, MoelmBackend *be, GError **error);
/* Expert parallel (--moe-expert-parallel): the moe_experts experts of every MoE layer are split
 * evenly over the ranks of `expert_comm`, this rank holding its share (experts.{rank*E/W + j})
 * after the parameters every rank has; MoE layers exchange tokens with all-to-all. NULL or a
 * group of one: moelm_model_new. */
MoelmModel *moelm_model_new_placed(const MoelmModelConfig *cfg, MoelmBackend *be, MoelmComm *expert_comm,
                                   GError **error);
void moelm_model_free(MoelmModel *m);
/* The parameters a model of `cfg` has, in arena order (MoelmParam*, free with
 * g_ptr_array_unref), without building it: for converters that write checkpoints. */
GPtrArray *moelm_model_param_layout(const MoelmModelConfig *cfg, GError **error);

const MoelmModelConfig *moelm_model_get_config(const MoelmModel *m);
MoelmBackend *moelm_model_backend(const MoelmModel *m);

size_t moelm_model_num_params(const MoelmModel *m); /* floats in the arena */
guint moelm_model_n_tensors(const MoelmModel *m);
const MoelmParam *moelm_model_tensor(const MoelmModel *m, guint i);
const MoelmParam *moelm_model_find(const MoelmModel *m, const char *name);
float *moelm_model_params(MoelmModel *m); /* arena (backend memory) */
float *moelm_model_grads(MoelmModel *m);  /* gradient arena (backend memory) */
/* The floats every rank holds (all of them unless expert parallel; then the rest of the arena
 * is this rank's experts), the expert group's size, and the experts per MoE layer here. */
size_t moelm_model_shared_params(const MoelmModel *m);
int moelm_model_expert_world(const MoelmModel *m);
int moelm_model_local_experts(const MoelmModel *m);
int moelm_model_first_expert(const MoelmModel *m); /* the global number of this rank's first expert */

/* --checkpoint-activations: keep only each layer's output during train_step's forward and
 * recompute the layer's activations in the backward (about one layer's activations instead of
 * all of them, for one more forward of every layer but the last). The gradients are the same
 * bits. */
void moelm_model_set_checkpoint_activations(MoelmModel *m, gboolean on);

/* fairseq's initialisation (normal embeddings, Xavier-uniform projections, zero biases
 * and pad rows), drawn from Philox(seed). */
void moelm_model_init_params(MoelmModel *m, uint64_t seed);
void moelm_model_zero_grad(MoelmModel *m);

typedef struct {
  int B, T;
  const int32_t *src; /* (B,T) host: input tokens (target shifted right) */
  const int32_t *tgt; /* (B,T) host: targets; MOELM_PAD = not scored */
} MoelmBatch;

/* Dropout stream of a training step. */
typedef struct {
  uint64_t seed;
  uint32_t update;
} MoelmStepIds;

/* Every call below ends with the backend's error check: a device op that failed during it
 * makes it return FALSE with that error (docs/backend.md, "errors").
 *
 * Forward only (no dropout unless `ids` is given): per-token target log-probs (B,T) (0 at pad)
 * and per-row sums (B); either output may be NULL. */
gboolean moelm_model_score(MoelmModel *m, const MoelmBatch *batch, const MoelmStepIds *ids, float *tok_lprobs,
                           float *row_lprobs, GError **error);

/* Forward with dropout (ids; NULL = no dropout) and backward of the weighted NLL: grads += dL/dθ
 * for L = -Σ_b row_weights[b]·Σ_t lprob[b,t]. Outputs as score(); may be NULL. */
gboolean moelm_model_train_step(MoelmModel *m, const MoelmBatch *batch, const MoelmStepIds *ids,
                                const float *row_weights, float *tok_lprobs, float *row_lprobs, GError **error);

/* During train_step's backward, call fn(data, offset, count) for each decoder layer as soon as
 * its parameters' gradient range [offset, offset + count) of the arena is complete (last layer
 * first): a data-parallel trainer starts reducing it while the backward goes on. The other
 * parameters (embeddings, final norm, output projection, gating network) are complete only
 * when the objective returns. NULL fn: no calls. */
typedef void (*MoelmGradReadyFunc)(void *data, size_t offset, size_t count);
void moelm_model_set_grad_ready(MoelmModel *m, MoelmGradReadyFunc fn, void *data);
/* Call fn with the same ranges, in the same order, as a train_step's backward would (for a
 * data-parallel rank that has no batch in an update: its reductions must start in the same
 * order as the other ranks'). */
void moelm_model_replay_grad_ready(const MoelmModel *m, MoelmGradReadyFunc fn, void *data);

/* ---- token-level MoE ------------------------------------------------------------------ */
int moelm_model_moe_layers(const MoelmModel *m); /* MoE layers (0 for a dense model) */

/* The combined (sum | average, unweighted) l_aux of the last forward (0 without MoE layers):
 * the gate loss of the last train_step is moe_gate_loss_wt * S_w * this. */
double moelm_model_last_gate_loss(const MoelmModel *m);

/* fairseq's per-layer gate metadata (MoECriterion.moe_logging_keys), averaged over the
 * train_step forwards since the last take. */
typedef struct {
  int layer;                     /* decoder layer index */
  double gate_loss;              /* l_aux */
  double entropy;                /* entropy_gating: mean gate entropy (nats) */
  double overflow_expert1;       /* % of first choices dropped by the capacity */
  double overflow_expert2;       /* % of second choices dropped */
  double unused_expert1;         /* unused_expert1_count: experts nobody chose first */
  double expert1_balance_top;    /* % of first choices on the most used 20% of experts */
  double expert1_balance_bottom; /* % on the least used 20% */
} MoelmMoeLayerStats;

/* Fill out[moelm_model_moe_layers(m)] and reset the sums; returns how many forwards they
 * average (0: none since the last take, out holds zeros). */
int64_t moelm_model_moe_stats_take(MoelmModel *m, MoelmMoeLayerStats *out);

/* ---- MoEfication (docs/moefy.md) ------------------------------------------------------ */
/* A moefied model (cfg.moefy_experts > 0, made by `moelm moefy`) computes moefy_top_k of its
 * experts per token; set another k (eval-lm / generate --moefy-top-k). An error unless the
 * model is moefied and 1 <= k <= its experts per layer. */
gboolean moelm_model_set_moefy_top_k(MoelmModel *m, int k, GError **error);

/* The FFN input (N, C) of decoder layer `layer` in the last forward (score or train_step,
 * N = B*T of that batch; the final_layer_norm's output with pre-norm): backend memory, valid
 * until the next forward. NULL before the first forward and with checkpointed activations. */
const MoelmAct *moelm_model_ffn_input(const MoelmModel *m, int layer);

/* out (N, C) = decoder layer `layer`'s FFN alone (dense, token-MoE with eval routing, or
 * moefied) on inp (N, C), before the residual, without dropout: for measuring FFNs. */
gboolean moelm_model_ffn_forward(MoelmModel *m, int layer, const MoelmAct *inp, MoelmAct *out, int N,
                                 GError **error);

/* ---- incremental decoding ------------------------------------------------------------ */
typedef struct MoelmKvCache MoelmKvCache;

/* A cache for `rows` sequences of up to `capacity` positions. */
MoelmKvCache *moelm_kv_cache_new(MoelmModel *m, int rows, int capacity, GError **error);
void moelm_kv_cache_free(MoelmKvCache *cache);
int moelm_kv_cache_len(const MoelmKvCache *cache);
void moelm_kv_cache_reset(MoelmKvCache *cache);
/* Reorder rows (beam search): new row i = old row order[i]. */
gboolean moelm_kv_cache_reorder(MoelmKvCache *cache, const int32_t *order, GError **error);

/* Feed Tq new tokens per row (tokens (rows, Tq) host), appending to the cache; write the
 * log-probabilities of the next token after the last fed position to lprobs (rows, V) host. */
gboolean moelm_model_decode(MoelmModel *m, MoelmKvCache *cache, const int32_t *tokens, int Tq, float *lprobs,
                            GError **error);

G_END_DECLS

#endif
