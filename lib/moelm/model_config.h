/* moelm — the decoder's configuration: fairseq's transformer_lm architectures, the
 * --decoder-* overrides and the token-level MoE options (--moe-*), serialisable to JSON for
 * checkpoint metadata. */
#ifndef MOELM_MODEL_CONFIG_H
#define MOELM_MODEL_CONFIG_H

#include <glib.h>
#include <json-glib/json-glib.h>

#include "moelm/backend.h" /* MoelmActivation, MoelmSecondExpertPolicy */

G_BEGIN_DECLS

/* How a moefied FFN picks its experts (docs/moefy.md). */
typedef enum {
  MOELM_MOEFY_SELECT_SIMILARITY,  /* score = (mean of the expert's normalised fc1 rows) . x */
  MOELM_MOEFY_SELECT_MLP,         /* score = a small trained router: fc2(relu(fc1(x))) */
  MOELM_MOEFY_SELECT_GROUNDTRUTH  /* score = the expert's summed positive activations (an upper
                                   * bound: it computes the whole fc1 to choose) */
} MoelmMoefySelect;

typedef struct {
  char *arch;                  /* "transformer_lm", ... */
  int vocab_size;              /* dictionary size incl. specials (and expert tokens) */
  int embed_dim;               /* --decoder-embed-dim */
  int ffn_dim;                 /* --decoder-ffn-embed-dim */
  int layers;                  /* --decoder-layers */
  int heads;                   /* --decoder-attention-heads */
  int max_positions;           /* --max-target-positions (default: --tokens-per-sample) */
  gboolean learned_pos;        /* --decoder-learned-pos */
  gboolean normalize_before;   /* pre-norm (every named arch); --no-decoder-normalize-before = post-norm */
  gboolean final_norm;         /* !--no-decoder-final-norm (only with pre-norm, as fairseq) */
  gboolean scale_embedding;    /* !--no-scale-embedding */
  gboolean share_embed;        /* --share-decoder-input-output-embed */
  MoelmActivation activation;  /* --activation-fn */
  double dropout;              /* --dropout */
  double attention_dropout;    /* --attention-dropout */
  double activation_dropout;   /* --activation-dropout (alias --relu-dropout) */
  /* The sequence-level mixture's learned prior: fairseq's MeanPoolGatingNetwork over the
   * token embeddings (gating_network.fc1/fc2). 0 experts = no gating network. */
  int gate_experts;            /* --num-experts of an lp method */
  double gate_dropout;         /* --mean-pool-gating-network-dropout */
  /* Token-level sparse MoE (fairseq's MoE branch, docs/moe.md): decoder layer i is an MoE
   * layer when moe_freq > 0 and (i+1) % moe_freq == 0; its fc1/fc2 become moe_experts
   * experts behind a Top1Gate/Top2Gate. */
  int moe_freq;                        /* --moe-freq (0: dense) */
  int moe_experts;                     /* --moe-expert-count (alias --moe-num-experts) */
  int moe_top_k;                       /* 2, or 1 with --moe-top1-expert (--moe-top-k) */
  int moe_expert_ffn_dim;              /* --moe-expert-ffn-dim (0: ffn_dim) */
  MoelmSecondExpertPolicy moe_second_expert_policy; /* --moe-second-expert-policy (sampling) */
  gboolean moe_normalize_gate_prob_before_dropping; /* --moe-normalize-gate-prob-before-dropping */
  double moe_capacity_factor;          /* --moe-capacity-factor (1.0) */
  gboolean moe_dropless;               /* --moe-dropless: no capacity, no drops (training too) */
  double moe_eval_capacity_token_fraction; /* > 0: eval capacity = ceil(fraction * tokens); else dropless */
  gboolean moe_batch_prioritized_routing;  /* --moe-batch-prioritized-routing */
  gboolean moe_pad_mask;               /* --use-moe-pad-mask: padding tokens are not routed */
  gboolean moe_gating_use_fp32;        /* --moe-gating-use-fp32 (the CPU gates in fp32 anyway) */
  double moe_gate_loss_wt;             /* --moe-gate-loss-wt (0.01) */
  gboolean moe_gate_loss_sum;          /* --moe-gate-loss-combine-method sum (default: average) */
  /* > 0: sequence routing (a mixture's --mixture-expert-ffn, docs/mixtures.md). Every token of
   * a row goes, top-1 with weight 1 and no capacity limit, to expert src[row][0] - this id (the
   * row's <expert_k> token; a row that starts with another token goes to expert 0), not where
   * the gate sends it: the gate is unused and gets no gradient. */
  int moe_route_token0;
  /* MoEfication (`moelm moefy`, docs/moefy.md): every decoder layer's FFN is split into
   * moefy_experts experts of ffn_dim / moefy_experts neurons, of which the moefy_top_k that
   * the selector scores highest are computed for each token. Inference only. */
  int moefy_experts;                   /* 0: not moefied */
  int moefy_top_k;                     /* experts computed per token (--top-k, --moefy-top-k) */
  MoelmMoefySelect moefy_select;
  int moefy_router_dim;                /* the MLP selector's hidden size */
} MoelmModelConfig;

/* Fill cfg with the named architecture's defaults (fields not set by the arch keep
 * fairseq's base_lm_architecture defaults) and the MoE defaults (dense: moe_freq 0; top-2,
 * sampling, capacity factor 1, gate loss weight 0.01 averaged over layers). Unknown names are
 * an error listing the known. */
gboolean moelm_model_config_set_arch(MoelmModelConfig *cfg, const char *arch, GError **error);
/* The names accepted by set_arch, '|'-separated (for option choices). */
const char *moelm_model_arch_names(void);

gboolean moelm_activation_parse(const char *name, MoelmActivation *act, GError **error);
const char *moelm_activation_name(MoelmActivation act);

gboolean moelm_second_expert_policy_parse(const char *name, MoelmSecondExpertPolicy *policy, GError **error);
const char *moelm_second_expert_policy_name(MoelmSecondExpertPolicy policy);

gboolean moelm_moefy_select_parse(const char *name, MoelmMoefySelect *select, GError **error);
const char *moelm_moefy_select_name(MoelmMoefySelect select); /* "similarity", "mlp", "groundtruth" */

/* Whether decoder layer `layer` (0-based) is an MoE layer, and how many there are. */
gboolean moelm_model_config_is_moe_layer(const MoelmModelConfig *cfg, int layer);
int moelm_model_config_moe_layers(const MoelmModelConfig *cfg);
/* The experts' FFN dimension (moe_expert_ffn_dim, or ffn_dim when that is 0). */
int moelm_model_config_expert_ffn_dim(const MoelmModelConfig *cfg);

/* The bounds of the sizes (docs/safety.md): they keep every size computation inside int and
 * size_t; whether a model fits in memory is moelm_model_config_footprint's question. */
#define MOELM_MODEL_MAX_DIM (1 << 16)        /* --decoder-embed-dim, --decoder-attention-heads */
#define MOELM_MODEL_MAX_FFN_DIM (1 << 20)    /* --decoder-ffn-embed-dim, --moe-expert-ffn-dim */
#define MOELM_MODEL_MAX_LAYERS (1 << 16)     /* --decoder-layers, --moe-freq */
#define MOELM_MODEL_MAX_POSITIONS (1 << 24)  /* --max-target-positions, --tokens-per-sample */
#define MOELM_MODEL_MAX_EXPERTS (1 << 20)    /* --moe-expert-count, a mixture's --num-experts */

/* Check every field against its bounds (vocabulary > 4 symbols, positive sizes, dropout in
 * [0, 1), ...), embed_dim % heads == 0 and, when moe_freq > 0, the MoE options (experts >=
 * top_k, top_k 1 or 2, capacity factor > 0, weight >= 0), when moefy_experts > 0 the
 * MoEfication (experts divide ffn_dim, 1 <= top_k <= experts, no token-MoE layers, a router size
 * for the MLP selector). Errors name the flag and the value:
 * the CLI and the checkpoint loader share this one check. */
gboolean moelm_model_config_validate(const MoelmModelConfig *cfg, GError **error);

/* The exact number of parameters of a valid config (FALSE when it overflows 64 bits), in
 * O(1): a checkpoint's config is checked against the tensors it holds before anything is
 * allocated. */
gboolean moelm_model_config_num_params(const MoelmModelConfig *cfg, guint64 *count);

/* A lower bound of the bytes one rank takes to train this model with forwards of `rows`
 * token rows (B*T of the largest batch, times K for a mixture's E-step): parameters,
 * gradients and the two Adam moments, the position table, logits and the activations every
 * backward needs; with `expert_ranks` > 1 (expert parallel) its share of the experts and of
 * their routed rows. In double: a config of 10^9 experts gives a large number, not an
 * overflow. */
double moelm_model_config_train_bytes(const MoelmModelConfig *cfg, double rows, int expert_ranks);

void moelm_model_config_clear(MoelmModelConfig *cfg); /* frees arch */
void moelm_model_config_copy(MoelmModelConfig *dst, const MoelmModelConfig *src);

JsonNode *moelm_model_config_to_json(const MoelmModelConfig *cfg);
gboolean moelm_model_config_from_json(MoelmModelConfig *cfg, JsonNode *node, GError **error);

G_END_DECLS

#endif
