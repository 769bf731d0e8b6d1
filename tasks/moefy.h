/* moelm — MoEfication (Zhang et al., "MoEfication: Transformer Feed-forward Layers are
 * Mixtures of Experts", 2022): `moelm moefy` turns a trained dense model's FFNs into experts
 * and writes a checkpoint whose FFNs compute only the selected experts (docs/moefy.md).
 *
 * Per decoder layer: split the F neurons into E experts of F/E (moefy_split.h), reorder the
 * FFN's weights so that each expert's fc1 rows and fc2 columns are contiguous (the moefied
 * layout of lib/model/moefied_layer.c), and build the selector: similarity (the mean of the
 * expert's L2-normalised fc1 rows, scored by a dot product with the FFN's input), an MLP
 * router trained on the experts' summed positive activations (moefy_router.h), or none for
 * the groundtruth upper bound. The co-activation split and the MLP need the FFN inputs of
 * real tokens: forward passes of the dense model over a split of DATA. */
#ifndef MOELM_TASKS_MOEFY_H
#define MOELM_TASKS_MOEFY_H

#include <stdint.h>
#include <glib.h>
#include <json-glib/json-glib.h>

#include "moelm/backend.h"
#include "moelm/model.h"
#include "tasks/lm_data.h"
#include "tasks/moefy_router.h"

G_BEGIN_DECLS

typedef enum {
  MOELM_MOEFY_SPLIT_PARAM_CLUSTER, /* balanced k-means over the normalised fc1 rows */
  MOELM_MOEFY_SPLIT_COACTIVATION   /* METIS over the co-activation graph, rebalanced */
} MoelmMoefySplit;

gboolean moelm_moefy_split_parse(const char *name, MoelmMoefySplit *split, GError **error);
const char *moelm_moefy_split_name(MoelmMoefySplit split); /* "param-cluster", "coactivation" */

typedef struct {
  int num_experts;          /* E: --num-experts (required) */
  int top_k;                /* k: --top-k (default max(1, E/5)) */
  MoelmMoefySplit split;    /* --split (param-cluster) */
  MoelmMoefySelect select;  /* --select (mlp) */
  uint64_t seed;            /* --seed (1): k-means++, METIS, the router, the sampled blocks */
  int kmeans_iters;         /* --kmeans-iters (30) */
  MoelmRouterOptions router; /* --router-dim 64, --router-epochs 10, --router-batch-size 256,
                              * --router-lr 1e-3 */
  double heldout_fraction;  /* of the collected tokens, held out from the router (0.1) */
} MoelmMoefyOptions;

void moelm_moefy_options_init(MoelmMoefyOptions *opt);
/* Whether `dense` can be moefied with `opt`: its own FFNs (no token-MoE layers, not moefied
 * already), E dividing the FFN width, 1 <= k <= E. Errors name `what` (the checkpoint). */
gboolean moelm_moefy_check(const MoelmModelConfig *dense, const MoelmMoefyOptions *opt, const char *what,
                           GError **error);
/* Whether the split and selector need the FFN inputs of real tokens. */
gboolean moelm_moefy_needs_samples(const MoelmMoefyOptions *opt);

/* The FFN inputs of every decoder layer for n real (non-pad) tokens (backend memory). */
typedef struct {
  MoelmBackend *be;
  int layers, C;
  int64_t n;
  MoelmAct **x; /* (layers) of (n, C) */
} MoelmFfnSamples;

/* Forward passes of `m` over blocks of `split` drawn in random order (seed), batches of about
 * batch_tokens, until max_tokens tokens are collected (or the split ends). */
gboolean moelm_ffn_samples_collect(MoelmModel *m, const MoelmLmSplit *split, int64_t max_tokens,
                                   int64_t batch_tokens, uint64_t seed, MoelmFfnSamples *out, GError **error);
void moelm_ffn_samples_clear(MoelmFfnSamples *s);

/* What moefy found, per layer (for the checkpoint's "moefy" metadata and the log). */
typedef struct {
  int layers, F, E;
  int32_t *neurons;           /* (layers, F): the dense neuron at each position of the expert order */
  MoelmRouterReport *router;  /* (layers) the MLP's training (select mlp), else NULL */
} MoelmMoefyReport;

void moelm_moefy_report_clear(MoelmMoefyReport *r);
/* {"split", "select", "num_experts", "top_k", "layers": [{"layer", "neurons": [...],
 * "router": {"train_mse": [...], "heldout_mse": [...], "heldout_recall"}}]} */
JsonNode *moelm_moefy_report_to_json(const MoelmMoefyReport *r, const MoelmMoefyOptions *opt);

/* The moefied model of `dense` (on its backend). samples: the FFN inputs when
 * moelm_moefy_needs_samples (else may be NULL). */
MoelmModel *moelm_moefy_build(MoelmModel *dense, const MoelmMoefyOptions *opt, const MoelmFfnSamples *samples,
                              MoelmMoefyReport *report, GError **error);

/* For eval-lm and generate: apply --moefy-top-k (top_k >= 0, an error unless the model is
 * moefied and 1 <= top_k <= its experts; top_k < 0: not given, the checkpoint's) and return
 * the line that describes a moefied model ("moefied FFNs: 32 experts of 16 neurons, top-6
 * ..."; a groundtruth selector is labelled an upper bound), or NULL for a model that is not
 * moefied. g_free the line. */
gboolean moelm_moefy_inference_setup(MoelmModel *m, int top_k, char **summary, GError **error);

/* `moelm moefy DATA --path CKPT --save OUT ...`: open the dense checkpoint with DATA's
 * dictionary, collect FFN inputs on `subset` when needed, build, save OUT (atomically) with the
 * dense checkpoint's task and dictionary metadata and the report. */
typedef struct {
  const char *data_dir, *path, *save;
  const char *subset;      /* --train-subset (train) */
  int64_t collect_tokens;  /* --moefy-tokens (32768) */
  int64_t batch_tokens;    /* --max-tokens (2048) */
  MoelmMoefyOptions opt;
  MoelmBackendSpec backend;
} MoelmMoefyRun;

gboolean moelm_moefy_run(const MoelmMoefyRun *run, GError **error);

G_END_DECLS

#endif
