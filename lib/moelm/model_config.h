/* moelm — the decoder's configuration: fairseq's transformer_lm architectures and the
 * --decoder-* overrides, serialisable to JSON for checkpoint metadata. */
#ifndef MOELM_MODEL_CONFIG_H
#define MOELM_MODEL_CONFIG_H

#include <glib.h>
#include <json-glib/json-glib.h>

#include "moelm/backend.h" /* MoelmActivation */

G_BEGIN_DECLS

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
} MoelmModelConfig;

/* Fill cfg with the named architecture's defaults (fields not set by the arch keep
 * fairseq's base_lm_architecture defaults). Unknown names are an error listing the known. */
gboolean moelm_model_config_set_arch(MoelmModelConfig *cfg, const char *arch, GError **error);
/* The names accepted by set_arch, '|'-separated (for option choices). */
const char *moelm_model_arch_names(void);

gboolean moelm_activation_parse(const char *name, MoelmActivation *act, GError **error);
const char *moelm_activation_name(MoelmActivation act);

/* Check dims (embed_dim % heads == 0, positive sizes, dropout in [0,1)). */
gboolean moelm_model_config_validate(const MoelmModelConfig *cfg, GError **error);

void moelm_model_config_clear(MoelmModelConfig *cfg); /* frees arch */
void moelm_model_config_copy(MoelmModelConfig *dst, const MoelmModelConfig *src);

JsonNode *moelm_model_config_to_json(const MoelmModelConfig *cfg);
gboolean moelm_model_config_from_json(MoelmModelConfig *cfg, JsonNode *node, GError **error);

G_END_DECLS

#endif
