/* moelm — MoEfication's MLP selector: a small router per layer, fc2(relu(fc1(x))) with H
 * hidden units, trained to predict each expert's summed positive activations from the FFN's
 * input (mean squared error, Adam), on the backend with its linear/activation ops. It ranks
 * the experts; the top k are computed (docs/moefy.md). Also the backend buffers the moefy
 * task owns as one set. */
#ifndef MOELM_TASKS_MOEFY_ROUTER_H
#define MOELM_TASKS_MOEFY_ROUTER_H

#include <stdint.h>
#include <glib.h>

#include "moelm/backend.h"

G_BEGIN_DECLS

/* Backend buffers allocated one by one and freed together. */
typedef struct {
  MoelmBackend *be;
  GPtrArray *ptrs;
  gboolean ok; /* FALSE after a failed allocation (the error was set then) */
} MoelmMoefyBuffers;

void moelm_moefy_buffers_init(MoelmMoefyBuffers *b, MoelmBackend *be);
/* `bytes` of backend memory, or NULL (with the error set once) when this or an earlier
 * allocation failed. */
void *moelm_moefy_buffers_alloc(MoelmMoefyBuffers *b, size_t bytes, GError **error);
void moelm_moefy_buffers_clear(MoelmMoefyBuffers *b);

typedef struct {
  int hidden;   /* H: --router-dim */
  int epochs;   /* passes over the training tokens: --router-epochs */
  int batch;    /* tokens per Adam step: --router-batch-size */
  double lr;    /* Adam's learning rate (fixed): --router-lr */
  uint64_t seed; /* initialisation and the order of the tokens */
} MoelmRouterOptions;

typedef struct {
  int epochs;            /* entries below */
  double *train_loss;    /* (epochs) mean squared error over each epoch's steps */
  double *heldout_loss;  /* (epochs) on the held-out tokens after the epoch (NAN: none) */
  double heldout_recall; /* held out: the share of the top_k experts by target that the
                          * router's top_k contains (NAN: none) */
} MoelmRouterReport;

void moelm_router_report_clear(MoelmRouterReport *r);

/* Train a router on x (n, C) → targets (n, E) (both backend memory in the activation type;
 * rows n - n_held .. n-1 are held out: evaluated, never trained on) and write its parameters
 * to params (host, H*C + H + E*H + E floats: fc1.weight (H, C), fc1.bias (H), fc2.weight
 * (E, H), fc2.bias (E)). Each epoch's losses are logged with `layer` in the line. */
gboolean moelm_moefy_train_router(MoelmBackend *be, const MoelmAct *x, const MoelmAct *targets, int64_t n,
                                  int64_t n_held, int C, int E, int top_k, const MoelmRouterOptions *opt, int layer,
                                  float *params, MoelmRouterReport *report, GError **error);

G_END_DECLS

#endif
