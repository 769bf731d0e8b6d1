/* moelm — the sequence-level mixture's learned prior: fairseq's MeanPoolGatingNetwork.
 *
 *   x (B, G) context tokens → masked mean of their token embeddings (B, C) (a zero vector
 *   for an empty context) → fc1 → tanh → dropout → fc2 → log_softmax over K experts.
 *
 * Its parameters (gating_network.fc1/fc2) live in the model's arena, so the optimizer,
 * checkpoints and gradient all-reduce treat them like any other; the pooled embeddings are
 * the decoder's embed_tokens, which receive the gate's gradient too. */
#ifndef MOELM_GATING_MEAN_POOL_H
#define MOELM_GATING_MEAN_POOL_H

#include <stdint.h>
#include <glib.h>

#include "moelm/model.h"

G_BEGIN_DECLS

typedef struct MoelmGate MoelmGate;

/* The model must have been built with cfg.gate_experts > 0. */
MoelmGate *moelm_mean_pool_gate_new(MoelmModel *model, GError **error);
void moelm_mean_pool_gate_free(MoelmGate *gate);
int moelm_mean_pool_gate_experts(const MoelmGate *gate);

/* log_prior (B, K) host = log π(k | x_b). ctx (B, G) host, row b's first lens[b] entries are its
 * context. ids: dropout stream (NULL = no dropout, for the E-step and evaluation). Keeps what
 * the backward needs. */
gboolean moelm_mean_pool_gate_forward(MoelmGate *gate, const int32_t *ctx, const int *lens, int B, int G,
                                      const MoelmStepIds *ids, float *log_prior, GError **error);

/* Gradients of the last forward: dlog_prior (B, K) host = dL/d log π; accumulates into the
 * model's gradient arena (gating network and embed_tokens). */
gboolean moelm_mean_pool_gate_backward(MoelmGate *gate, const float *dlog_prior, GError **error);

G_END_DECLS

#endif
