/* moelm — named architectures (fairseq transformer_lm registry), MoE options and config JSON. */
#include "config.h"

#include <string.h>

#include "moelm/errors.h"
#include "moelm/model_config.h"

typedef struct {
  const char *name;
  int embed_dim, ffn_dim, layers, heads;
  double dropout, attention_dropout;
  MoelmActivation activation;
} ArchDefaults;

/* fairseq/models/transformer_lm.py: base_lm_architecture and the registered variants. */
static const ArchDefaults archs[] = {
  {"transformer_lm", 512, 2048, 6, 8, 0.1, 0.0, MOELM_ACT_RELU},
  {"transformer_lm_big", 1024, 4096, 12, 16, 0.1, 0.0, MOELM_ACT_RELU},
  {"transformer_lm_gpt", 768, 3072, 12, 12, 0.1, 0.1, MOELM_ACT_GELU},
  {"transformer_lm_gpt2_small", 1024, 4096, 24, 16, 0.1, 0.1, MOELM_ACT_GELU},
  {"transformer_lm_gpt2_tiny", 64, 64, 2, 1, 0.1, 0.1, MOELM_ACT_GELU},
  {"transformer_lm_gpt2_medium", 1280, 5120, 36, 20, 0.1, 0.1, MOELM_ACT_GELU},
  {"transformer_lm_gpt2_big", 1600, 6400, 48, 25, 0.1, 0.1, MOELM_ACT_GELU},
};

const char *moelm_model_arch_names(void)
{
  return "transformer_lm|transformer_lm_big|transformer_lm_gpt|transformer_lm_gpt2_small|"
         "transformer_lm_gpt2_tiny|transformer_lm_gpt2_medium|transformer_lm_gpt2_big";
}

/* fairseq's MoE defaults (transformer_lm --moe-* arguments and MoECriterionConfig), except
 * the eval capacity: dropless unless --moe-eval-capacity-token-fraction is given, and the
 * gate loss weight 0.01 of fairseq's MoE recipes. */
static void set_moe_defaults(MoelmModelConfig *cfg)
{
  cfg->moe_freq = 0;
  cfg->moe_experts = 0;
  cfg->moe_top_k = 2;
  cfg->moe_expert_ffn_dim = 0;
  cfg->moe_second_expert_policy = MOELM_SECOND_EXPERT_SAMPLING;
  cfg->moe_normalize_gate_prob_before_dropping = FALSE;
  cfg->moe_capacity_factor = 1.0;
  cfg->moe_dropless = FALSE;
  cfg->moe_eval_capacity_token_fraction = -1.0;
  cfg->moe_batch_prioritized_routing = FALSE;
  cfg->moe_pad_mask = FALSE;
  cfg->moe_gating_use_fp32 = FALSE;
  cfg->moe_gate_loss_wt = 0.01;
  cfg->moe_gate_loss_sum = FALSE;
}

gboolean moelm_model_config_set_arch(MoelmModelConfig *cfg, const char *arch, GError **error)
{
  for (gsize i = 0; i < G_N_ELEMENTS(archs); i++) {
    if (strcmp(archs[i].name, arch) != 0)
      continue;
    g_free(cfg->arch);
    cfg->arch = g_strdup(arch);
    cfg->embed_dim = archs[i].embed_dim;
    cfg->ffn_dim = archs[i].ffn_dim;
    cfg->layers = archs[i].layers;
    cfg->heads = archs[i].heads;
    cfg->dropout = archs[i].dropout;
    cfg->attention_dropout = archs[i].attention_dropout;
    cfg->activation_dropout = 0.0;
    cfg->activation = archs[i].activation;
    cfg->learned_pos = FALSE;
    cfg->normalize_before = TRUE; /* fairseq forces pre-norm for every LM arch */
    cfg->final_norm = TRUE;
    cfg->scale_embedding = TRUE;
    cfg->share_embed = FALSE;
    if (cfg->max_positions <= 0)
      cfg->max_positions = 1024;
    set_moe_defaults(cfg);
    return TRUE;
  }
  char *names = g_strdup(moelm_model_arch_names());
  g_strdelimit(names, "|", ',');
  g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG, "unknown --arch '%s' (known: %s)", arch, names);
  g_free(names);
  return FALSE;
}

static const char *const act_names[] = {"relu", "gelu", "gelu_accurate", "tanh"};

gboolean moelm_activation_parse(const char *name, MoelmActivation *act, GError **error)
{
  for (gsize i = 0; i < G_N_ELEMENTS(act_names); i++)
    if (strcmp(name, act_names[i]) == 0) {
      *act = (MoelmActivation)i;
      return TRUE;
    }
  g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG,
              "unsupported --activation-fn '%s' (choose from relu, gelu, gelu_accurate)", name);
  return FALSE;
}

const char *moelm_activation_name(MoelmActivation act)
{
  return (unsigned)act < G_N_ELEMENTS(act_names) ? act_names[act] : "?";
}

static const char *const policy_names[] = {"sampling", "all", "random"};

gboolean moelm_second_expert_policy_parse(const char *name, MoelmSecondExpertPolicy *policy, GError **error)
{
  for (gsize i = 0; i < G_N_ELEMENTS(policy_names); i++)
    if (strcmp(name, policy_names[i]) == 0) {
      *policy = (MoelmSecondExpertPolicy)i;
      return TRUE;
    }
  g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG,
              "unknown --moe-second-expert-policy '%s' (choose from sampling, all, random)", name);
  return FALSE;
}

const char *moelm_second_expert_policy_name(MoelmSecondExpertPolicy policy)
{
  return (unsigned)policy < G_N_ELEMENTS(policy_names) ? policy_names[policy] : "?";
}

gboolean moelm_model_config_is_moe_layer(const MoelmModelConfig *cfg, int layer)
{
  return cfg->moe_freq > 0 && (layer + 1) % cfg->moe_freq == 0;
}

int moelm_model_config_moe_layers(const MoelmModelConfig *cfg)
{
  int n = 0;
  for (int l = 0; l < cfg->layers; l++)
    n += moelm_model_config_is_moe_layer(cfg, l);
  return n;
}

int moelm_model_config_expert_ffn_dim(const MoelmModelConfig *cfg)
{
  return cfg->moe_expert_ffn_dim > 0 ? cfg->moe_expert_ffn_dim : cfg->ffn_dim;
}

static const char *moe_problem(const MoelmModelConfig *cfg)
{
  if (cfg->moe_freq < 0)
    return "--moe-freq must not be negative";
  if (cfg->moe_freq == 0)
    return NULL;
  if (cfg->moe_top_k != 1 && cfg->moe_top_k != 2)
    return "--moe-top-k must be 1 or 2";
  if (cfg->moe_experts < cfg->moe_top_k)
    return cfg->moe_top_k == 2 ? "--moe-expert-count must be at least 2 for top-2 gating (or use --moe-top1-expert)"
                               : "--moe-expert-count must be at least 1";
  if (cfg->moe_expert_ffn_dim < 0)
    return "--moe-expert-ffn-dim must be positive";
  if (!(cfg->moe_capacity_factor > 0))
    return "--moe-capacity-factor must be positive";
  if (cfg->moe_eval_capacity_token_fraction > 1)
    return "--moe-eval-capacity-token-fraction must be at most 1";
  if (!(cfg->moe_gate_loss_wt >= 0))
    return "--moe-gate-loss-wt must not be negative";
  if ((unsigned)cfg->moe_second_expert_policy > MOELM_SECOND_EXPERT_RANDOM)
    return "unknown --moe-second-expert-policy";
  return NULL;
}

gboolean moelm_model_config_validate(const MoelmModelConfig *cfg, GError **error)
{
  const char *bad = NULL;
  if (cfg->vocab_size <= 4)
    bad = "vocabulary must have more than the 4 special symbols";
  else if (cfg->embed_dim <= 0 || cfg->ffn_dim <= 0 || cfg->layers < 0 || cfg->heads <= 0)
    bad = "dimensions must be positive";
  else if (cfg->embed_dim % cfg->heads != 0)
    bad = "--decoder-embed-dim must be divisible by --decoder-attention-heads";
  else if (cfg->max_positions <= 0)
    bad = "--max-target-positions must be positive";
  else if (cfg->dropout < 0 || cfg->dropout >= 1 || cfg->attention_dropout < 0 || cfg->attention_dropout >= 1 ||
           cfg->activation_dropout < 0 || cfg->activation_dropout >= 1 || cfg->gate_dropout < 0 ||
           cfg->gate_dropout >= 1)
    bad = "dropout probabilities must be in [0, 1)";
  else if (cfg->gate_experts < 0 || cfg->gate_experts == 1)
    bad = "a gating network needs at least 2 experts";
  else
    bad = moe_problem(cfg);
  if (bad) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG, "model config: %s", bad);
    return FALSE;
  }
  return TRUE;
}

void moelm_model_config_clear(MoelmModelConfig *cfg)
{
  g_free(cfg->arch);
  cfg->arch = NULL;
}

void moelm_model_config_copy(MoelmModelConfig *dst, const MoelmModelConfig *src)
{
  *dst = *src;
  dst->arch = g_strdup(src->arch);
}

JsonNode *moelm_model_config_to_json(const MoelmModelConfig *cfg)
{
  JsonBuilder *b = json_builder_new();
  json_builder_begin_object(b);
#define PUT_INT(key, v) (json_builder_set_member_name(b, key), json_builder_add_int_value(b, v))
#define PUT_BOOL(key, v) (json_builder_set_member_name(b, key), json_builder_add_boolean_value(b, v))
#define PUT_DOUBLE(key, v) (json_builder_set_member_name(b, key), json_builder_add_double_value(b, v))
  json_builder_set_member_name(b, "arch");
  json_builder_add_string_value(b, cfg->arch ? cfg->arch : "transformer_lm");
  PUT_INT("vocab_size", cfg->vocab_size);
  PUT_INT("decoder_embed_dim", cfg->embed_dim);
  PUT_INT("decoder_ffn_embed_dim", cfg->ffn_dim);
  PUT_INT("decoder_layers", cfg->layers);
  PUT_INT("decoder_attention_heads", cfg->heads);
  PUT_INT("max_target_positions", cfg->max_positions);
  PUT_BOOL("decoder_learned_pos", cfg->learned_pos);
  PUT_BOOL("decoder_normalize_before", cfg->normalize_before);
  PUT_BOOL("no_decoder_final_norm", !cfg->final_norm);
  PUT_BOOL("no_scale_embedding", !cfg->scale_embedding);
  PUT_BOOL("share_decoder_input_output_embed", cfg->share_embed);
  json_builder_set_member_name(b, "activation_fn");
  json_builder_add_string_value(b, moelm_activation_name(cfg->activation));
  PUT_DOUBLE("dropout", cfg->dropout);
  PUT_DOUBLE("attention_dropout", cfg->attention_dropout);
  PUT_DOUBLE("activation_dropout", cfg->activation_dropout);
  if (cfg->gate_experts > 0) {
    PUT_INT("gating_network_experts", cfg->gate_experts);
    PUT_DOUBLE("mean_pool_gating_network_dropout", cfg->gate_dropout);
  }
  PUT_INT("moe_freq", cfg->moe_freq);
  if (cfg->moe_freq > 0) { /* fairseq's argument names */
    PUT_INT("moe_expert_count", cfg->moe_experts);
    PUT_BOOL("moe_top1_expert", cfg->moe_top_k == 1);
    PUT_INT("moe_expert_ffn_dim", moelm_model_config_expert_ffn_dim(cfg));
    json_builder_set_member_name(b, "moe_second_expert_policy");
    json_builder_add_string_value(b, moelm_second_expert_policy_name(cfg->moe_second_expert_policy));
    PUT_BOOL("moe_normalize_gate_prob_before_dropping", cfg->moe_normalize_gate_prob_before_dropping);
    PUT_DOUBLE("moe_capacity_factor", cfg->moe_capacity_factor);
    PUT_BOOL("moe_dropless", cfg->moe_dropless);
    PUT_DOUBLE("moe_eval_capacity_token_fraction", cfg->moe_eval_capacity_token_fraction);
    PUT_BOOL("moe_batch_prioritized_routing", cfg->moe_batch_prioritized_routing);
    PUT_BOOL("use_moe_pad_mask", cfg->moe_pad_mask);
    PUT_BOOL("moe_gating_use_fp32", cfg->moe_gating_use_fp32);
    PUT_DOUBLE("moe_gate_loss_wt", cfg->moe_gate_loss_wt);
    json_builder_set_member_name(b, "moe_gate_loss_combine_method");
    json_builder_add_string_value(b, cfg->moe_gate_loss_sum ? "sum" : "average");
  }
#undef PUT_INT
#undef PUT_BOOL
#undef PUT_DOUBLE
  json_builder_end_object(b);
  JsonNode *root = json_builder_get_root(b);
  g_object_unref(b);
  return root;
}

static gboolean need_member(JsonObject *o, const char *key, GError **error)
{
  if (json_object_has_member(o, key))
    return TRUE;
  g_set_error(error, MOELM_ERROR, MOELM_ERROR_CORRUPT, "model config: missing field '%s'", key);
  return FALSE;
}

/* The MoE members (absent in dense checkpoints: the defaults). */
static gboolean moe_from_json(MoelmModelConfig *cfg, JsonObject *o, GError **error)
{
  set_moe_defaults(cfg);
  cfg->moe_freq = (int)json_object_get_int_member_with_default(o, "moe_freq", 0);
  if (cfg->moe_freq <= 0)
    return TRUE;
  cfg->moe_experts = (int)json_object_get_int_member_with_default(o, "moe_expert_count", 0);
  cfg->moe_top_k = json_object_get_boolean_member_with_default(o, "moe_top1_expert", FALSE) ? 1 : 2;
  cfg->moe_expert_ffn_dim = (int)json_object_get_int_member_with_default(o, "moe_expert_ffn_dim", 0);
  const char *policy = json_object_get_string_member_with_default(o, "moe_second_expert_policy", "sampling");
  if (!moelm_second_expert_policy_parse(policy, &cfg->moe_second_expert_policy, error))
    return FALSE;
  cfg->moe_normalize_gate_prob_before_dropping =
      json_object_get_boolean_member_with_default(o, "moe_normalize_gate_prob_before_dropping", FALSE);
  cfg->moe_capacity_factor = json_object_get_double_member_with_default(o, "moe_capacity_factor", 1.0);
  cfg->moe_dropless = json_object_get_boolean_member_with_default(o, "moe_dropless", FALSE);
  cfg->moe_eval_capacity_token_fraction =
      json_object_get_double_member_with_default(o, "moe_eval_capacity_token_fraction", -1.0);
  cfg->moe_batch_prioritized_routing =
      json_object_get_boolean_member_with_default(o, "moe_batch_prioritized_routing", FALSE);
  cfg->moe_pad_mask = json_object_get_boolean_member_with_default(o, "use_moe_pad_mask", FALSE);
  cfg->moe_gating_use_fp32 = json_object_get_boolean_member_with_default(o, "moe_gating_use_fp32", FALSE);
  cfg->moe_gate_loss_wt = json_object_get_double_member_with_default(o, "moe_gate_loss_wt", 0.01);
  const char *combine = json_object_get_string_member_with_default(o, "moe_gate_loss_combine_method", "average");
  if (strcmp(combine, "sum") != 0 && strcmp(combine, "average") != 0) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_CORRUPT, "model config: moe_gate_loss_combine_method '%s' is not sum or average",
                combine);
    return FALSE;
  }
  cfg->moe_gate_loss_sum = strcmp(combine, "sum") == 0;
  return TRUE;
}

gboolean moelm_model_config_from_json(MoelmModelConfig *cfg, JsonNode *node, GError **error)
{
  if (node == NULL || !JSON_NODE_HOLDS_OBJECT(node)) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_CORRUPT, "model config: not a JSON object");
    return FALSE;
  }
  JsonObject *o = json_node_get_object(node);
  static const char *const required[] = {"arch", "vocab_size", "decoder_embed_dim", "decoder_ffn_embed_dim",
                                         "decoder_layers", "decoder_attention_heads", "max_target_positions",
                                         "activation_fn"};
  for (gsize i = 0; i < G_N_ELEMENTS(required); i++)
    if (!need_member(o, required[i], error))
      return FALSE;
  memset(cfg, 0, sizeof *cfg);
  cfg->arch = g_strdup(json_object_get_string_member(o, "arch"));
  cfg->vocab_size = (int)json_object_get_int_member(o, "vocab_size");
  cfg->embed_dim = (int)json_object_get_int_member(o, "decoder_embed_dim");
  cfg->ffn_dim = (int)json_object_get_int_member(o, "decoder_ffn_embed_dim");
  cfg->layers = (int)json_object_get_int_member(o, "decoder_layers");
  cfg->heads = (int)json_object_get_int_member(o, "decoder_attention_heads");
  cfg->max_positions = (int)json_object_get_int_member(o, "max_target_positions");
  cfg->learned_pos = json_object_get_boolean_member_with_default(o, "decoder_learned_pos", FALSE);
  cfg->normalize_before = json_object_get_boolean_member_with_default(o, "decoder_normalize_before", TRUE);
  cfg->final_norm = !json_object_get_boolean_member_with_default(o, "no_decoder_final_norm", FALSE);
  cfg->scale_embedding = !json_object_get_boolean_member_with_default(o, "no_scale_embedding", FALSE);
  cfg->share_embed = json_object_get_boolean_member_with_default(o, "share_decoder_input_output_embed", FALSE);
  cfg->dropout = json_object_get_double_member_with_default(o, "dropout", 0.1);
  cfg->attention_dropout = json_object_get_double_member_with_default(o, "attention_dropout", 0.0);
  cfg->activation_dropout = json_object_get_double_member_with_default(o, "activation_dropout", 0.0);
  cfg->gate_experts = (int)json_object_get_int_member_with_default(o, "gating_network_experts", 0);
  cfg->gate_dropout = json_object_get_double_member_with_default(o, "mean_pool_gating_network_dropout", 0.0);
  if (!moe_from_json(cfg, o, error)) {
    moelm_model_config_clear(cfg);
    return FALSE;
  }
  const char *act = json_object_get_string_member_with_default(o, "activation_fn", "relu");
  if (!moelm_activation_parse(act, &cfg->activation, error) || !moelm_model_config_validate(cfg, error)) {
    moelm_model_config_clear(cfg);
    return FALSE;
  }
  return TRUE;
}
