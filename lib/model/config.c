/* moelm — named architectures (fairseq transformer_lm registry), MoE options and config JSON. */
#include "config.h"

#include <string.h>

#include "config-limits.h"
#include "moelm/errors.h"
#include "moelm/json.h"
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
  cfg->moe_route_token0 = 0;
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
    cfg->moefy_experts = cfg->moefy_top_k = cfg->moefy_router_dim = 0; /* dense */
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

static const char *const select_names[] = {"similarity", "mlp", "groundtruth"};

gboolean moelm_moefy_select_parse(const char *name, MoelmMoefySelect *select, GError **error)
{
  for (gsize i = 0; i < G_N_ELEMENTS(select_names); i++)
    if (strcmp(name, select_names[i]) == 0) {
      *select = (MoelmMoefySelect)i;
      return TRUE;
    }
  g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG,
              "unknown --select '%s' (choose from similarity, mlp, groundtruth)", name);
  return FALSE;
}

const char *moelm_moefy_select_name(MoelmMoefySelect select)
{
  return (unsigned)select < G_N_ELEMENTS(select_names) ? select_names[select] : "?";
}

gboolean moelm_model_config_is_moe_layer(const MoelmModelConfig *cfg, int layer)
{
  return cfg->moe_freq > 0 && (layer + 1) % cfg->moe_freq == 0;
}

int moelm_model_config_expert_ffn_dim(const MoelmModelConfig *cfg)
{
  return cfg->moe_expert_ffn_dim > 0 ? cfg->moe_expert_ffn_dim : cfg->ffn_dim;
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
    if (cfg->moe_route_token0 > 0)
      PUT_INT("moe_route_expert_token0", cfg->moe_route_token0);
  }
  if (cfg->moefy_experts > 0) { /* MoEfication (docs/moefy.md) */
    PUT_INT("moefy_num_experts", cfg->moefy_experts);
    PUT_INT("moefy_top_k", cfg->moefy_top_k);
    json_builder_set_member_name(b, "moefy_select");
    json_builder_add_string_value(b, moelm_moefy_select_name(cfg->moefy_select));
    if (cfg->moefy_select == MOELM_MOEFY_SELECT_MLP)
      PUT_INT("moefy_router_dim", cfg->moefy_router_dim);
  }
#undef PUT_INT
#undef PUT_BOOL
#undef PUT_DOUBLE
  json_builder_end_object(b);
  JsonNode *root = json_builder_get_root(b);
  g_object_unref(b);
  return root;
}

/* The members every moelm checkpoint has. */
static const char *const required_keys[] = {"arch", "vocab_size", "decoder_embed_dim", "decoder_ffn_embed_dim",
                                            "decoder_layers", "decoder_attention_heads", "max_target_positions",
                                            "activation_fn", NULL};

static gboolean bools_from_json(MoelmModelConfig *cfg, JsonObject *o, GError **error)
{
  gboolean no_final_norm = FALSE, no_scale = FALSE, top1 = FALSE;
  gboolean ok = moelm_json_get_bool(o, "decoder_learned_pos", &cfg->learned_pos, error) &&
                moelm_json_get_bool(o, "decoder_normalize_before", &cfg->normalize_before, error) &&
                moelm_json_get_bool(o, "no_decoder_final_norm", &no_final_norm, error) &&
                moelm_json_get_bool(o, "no_scale_embedding", &no_scale, error) &&
                moelm_json_get_bool(o, "share_decoder_input_output_embed", &cfg->share_embed, error) &&
                moelm_json_get_bool(o, "moe_top1_expert", &top1, error) &&
                moelm_json_get_bool(o, "moe_normalize_gate_prob_before_dropping",
                                    &cfg->moe_normalize_gate_prob_before_dropping, error) &&
                moelm_json_get_bool(o, "moe_dropless", &cfg->moe_dropless, error) &&
                moelm_json_get_bool(o, "moe_batch_prioritized_routing", &cfg->moe_batch_prioritized_routing, error) &&
                moelm_json_get_bool(o, "use_moe_pad_mask", &cfg->moe_pad_mask, error) &&
                moelm_json_get_bool(o, "moe_gating_use_fp32", &cfg->moe_gating_use_fp32, error);
  cfg->final_norm = !no_final_norm;
  cfg->scale_embedding = !no_scale;
  cfg->moe_top_k = top1 ? 1 : 2;
  return ok;
}

static gboolean strings_from_json(MoelmModelConfig *cfg, JsonObject *o, GError **error)
{
  const char *arch = NULL, *act = NULL, *policy = "sampling", *combine = "average", *select = "similarity";
  if (!moelm_json_get_string(o, "arch", &arch, error) || !moelm_json_get_string(o, "activation_fn", &act, error) ||
      !moelm_json_get_string(o, "moe_second_expert_policy", &policy, error) ||
      !moelm_json_get_string(o, "moe_gate_loss_combine_method", &combine, error) ||
      !moelm_json_get_string(o, "moefy_select", &select, error))
    return FALSE;
  cfg->arch = g_strdup(arch);
  if (!moelm_activation_parse(act, &cfg->activation, error) ||
      !moelm_second_expert_policy_parse(policy, &cfg->moe_second_expert_policy, error) ||
      !moelm_moefy_select_parse(select, &cfg->moefy_select, error))
    return FALSE;
  if (strcmp(combine, "sum") != 0 && strcmp(combine, "average") != 0) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_CORRUPT, "moe_gate_loss_combine_method '%s' is not sum or average",
                combine);
    return FALSE;
  }
  cfg->moe_gate_loss_sum = strcmp(combine, "sum") == 0;
  return TRUE;
}

/* Every field, type and bounds checked (the bounds of config-limits.h, naming the member);
 * absent optional members keep the defaults (a dense checkpoint has no moe_* members). */
static gboolean fields_from_json(MoelmModelConfig *cfg, JsonObject *o, GError **error)
{
  if (!moelm_json_require(o, required_keys, error))
    return FALSE;
  cfg->normalize_before = TRUE;
  cfg->dropout = 0.1;
  set_moe_defaults(cfg);
  for (size_t i = 0; i < moelm_model_n_int_limits; i++) {
    const MoelmIntLimit *l = &moelm_model_int_limits[i];
    if (!moelm_json_get_int(o, l->key, l->min, l->max, MOELM_CFG_INT(cfg, l), error))
      return FALSE;
  }
  for (size_t i = 0; i < moelm_model_n_real_limits; i++) {
    const MoelmRealLimit *l = &moelm_model_real_limits[i];
    double *v = MOELM_CFG_REAL(cfg, l);
    if (!moelm_json_get_double(o, l->key, -G_MAXDOUBLE, G_MAXDOUBLE, v, error))
      return FALSE;
    if (!(*v >= l->min && (l->max_open ? *v < l->max : *v <= l->max))) {
      g_set_error(error, MOELM_ERROR, MOELM_ERROR_CORRUPT, "'%s' must be in [%g, %g%c, got %g", l->key, l->min, l->max,
                  l->max_open ? ')' : ']', *v);
      return FALSE;
    }
  }
  return bools_from_json(cfg, o, error) && strings_from_json(cfg, o, error);
}

gboolean moelm_model_config_from_json(MoelmModelConfig *cfg, JsonNode *node, GError **error)
{
  memset(cfg, 0, sizeof *cfg);
  JsonObject *o = moelm_json_object(node, "model config", error);
  if (o == NULL)
    return FALSE;
  if (!fields_from_json(cfg, o, error)) {
    moelm_error_prefix(error, "model config");
    moelm_error_escape_controls(error); /* the names it quotes come from the file */
    moelm_model_config_clear(cfg);
    return FALSE;
  }
  if (cfg->moe_freq == 0) /* the MoE members of a dense model mean nothing (the writer omits them) */
    set_moe_defaults(cfg);
  if (!moelm_model_config_validate(cfg, error)) {
    moelm_model_config_clear(cfg);
    return FALSE;
  }
  return TRUE;
}
