/* moelm — fairseq's model and task configuration (cfg["model"] / cfg["task"], or the legacy
 * args Namespace) mapped to moelm's MoelmModelConfig and task metadata. */
#include "config.h"

#include <string.h>

#include "moelm/errors.h"
#include "convert_fairseq.h"

typedef struct {
  const MoelmPyObj *m; /* model options: cfg["model"] or args */
  const MoelmPyObj *t; /* task options: cfg["task"] or args */
  const char *where;   /* "cfg.model" or "args", for messages */
  const char *name;    /* the file */
  GPtrArray *notes;
} Src;

static gboolean bad_type(const Src *s, const char *key, const MoelmPyObj *v, const char *want, GError **error)
{
  char *d = moelm_py_describe(v);
  g_set_error(error, MOELM_ERROR, MOELM_ERROR_CORRUPT, "%s: %s.%s is a %s, expected %s", s->name, s->where, key, d,
              want);
  g_free(d);
  return FALSE;
}

/* omegaconf containers pickled as they are (fairseq before OmegaConf.to_container was applied
 * on saving): a DictConfig/ListConfig keeps its items in its state's "_content", a value
 * node (AnyNode, StringNode, ...) its value in "_val". */
static const MoelmPyObj *unwrap(const MoelmPyObj *v)
{
  for (int hops = 0; v && hops < 8 && v->type == MOELM_PY_OBJECT && g_str_has_prefix(v->cls->module, "omegaconf");
       hops++) {
    const MoelmPyObj *inner = v->state && v->state->type == MOELM_PY_DICT ? moelm_py_get(v->state, "_content") : NULL;
    if (inner == NULL && v->state && v->state->type == MOELM_PY_DICT)
      inner = moelm_py_get(v->state, "_val");
    if (inner == NULL)
      break;
    v = inner;
  }
  return v;
}

/* A value given as None counts as absent (fairseq's "not set"). */
static const MoelmPyObj *get(const MoelmPyObj *o, const char *key)
{
  const MoelmPyObj *v = unwrap(moelm_py_get(unwrap(o), key));
  return v && v->type == MOELM_PY_NONE ? NULL : v;
}

static gboolean get_int(const Src *s, const MoelmPyObj *o, const char *key, int *out, GError **error)
{
  const MoelmPyObj *v = get(o, key);
  if (v == NULL)
    return TRUE;
  if ((v->type != MOELM_PY_INT && v->type != MOELM_PY_BOOL) || v->big || v->i < G_MININT || v->i > G_MAXINT)
    return bad_type(s, key, v, "an int", error);
  *out = v->type == MOELM_PY_BOOL ? v->b : (int)v->i;
  return TRUE;
}

static gboolean get_bool(const Src *s, const MoelmPyObj *o, const char *key, gboolean *out, GError **error)
{
  const MoelmPyObj *v = get(o, key);
  if (v == NULL)
    return TRUE;
  if (v->type == MOELM_PY_BOOL)
    *out = v->b;
  else if (v->type == MOELM_PY_INT && !v->big && (v->i == 0 || v->i == 1))
    *out = v->i == 1;
  else
    return bad_type(s, key, v, "a bool", error);
  return TRUE;
}

static gboolean get_double(const Src *s, const MoelmPyObj *o, const char *key, double *out, GError **error)
{
  const MoelmPyObj *v = get(o, key);
  if (v == NULL)
    return TRUE;
  if (v->type == MOELM_PY_FLOAT)
    *out = v->f;
  else if (v->type == MOELM_PY_INT && !v->big)
    *out = (double)v->i;
  else
    return bad_type(s, key, v, "a number", error);
  return TRUE;
}

static gboolean get_str(const Src *s, const MoelmPyObj *o, const char *key, const char **out, GError **error)
{
  const MoelmPyObj *v = get(o, key);
  if (v == NULL)
    return TRUE;
  if (v->type != MOELM_PY_STR)
    return bad_type(s, key, v, "a str", error);
  *out = v->s;
  return TRUE;
}

static void note(const Src *s, const char *fmt, ...) G_GNUC_PRINTF(2, 3);
static void note(const Src *s, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  if (s->notes)
    g_ptr_array_add(s->notes, g_strdup_vprintf(fmt, ap));
  va_end(ap);
}

/* fairseq options moelm's decoder does not implement, each with the value that is harmless. */
static gboolean check_unsupported(const Src *s, int embed_dim, GError **error)
{
  static const char *const flags[] = {"adaptive_input", "character_embeddings", "layernorm_embedding",
                                      "no_token_positional_embeddings", "scale_attn", "scale_fc", "scale_heads",
                                      "scale_resids", "use_stable_embedding", "add_bos_token", "cross_self_attention"};
  for (gsize i = 0; i < G_N_ELEMENTS(flags); i++) {
    gboolean on = FALSE;
    if (!get_bool(s, s->m, flags[i], &on, error) || (s->t != s->m && !get_bool(s, s->t, flags[i], &on, error)))
      return FALSE;
    if (on) {
      g_set_error(error, MOELM_ERROR, MOELM_ERROR_UNSUPPORTED, "%s: %s.%s is set: moelm's transformer_lm does not "
                  "implement it", s->name, s->where, flags[i]);
      return FALSE;
    }
  }
  static const char *const present[] = {"adaptive_softmax_cutoff", "decoder_layers_to_keep"};
  for (gsize i = 0; i < G_N_ELEMENTS(present); i++)
    if (get(s->m, present[i]) != NULL) {
      g_set_error(error, MOELM_ERROR, MOELM_ERROR_UNSUPPORTED, "%s: %s.%s is set: moelm's transformer_lm does not "
                  "implement it", s->name, s->where, present[i]);
      return FALSE;
    }
  static const char *const zero[] = {"alternate_decoder_ffn_embed_dim", "base_layers"};
  for (gsize i = 0; i < G_N_ELEMENTS(zero); i++) {
    int v = 0;
    if (!get_int(s, s->m, zero[i], &v, error))
      return FALSE;
    if (v != 0) {
      g_set_error(error, MOELM_ERROR, MOELM_ERROR_UNSUPPORTED, "%s: %s.%s = %d: moelm's transformer_lm does not "
                  "implement it", s->name, s->where, zero[i], v);
      return FALSE;
    }
  }
  static const char *const dims[] = {"decoder_input_dim", "decoder_output_dim"};
  for (gsize i = 0; i < G_N_ELEMENTS(dims); i++) {
    int v = embed_dim;
    if (!get_int(s, s->m, dims[i], &v, error))
      return FALSE;
    if (v != embed_dim) {
      g_set_error(error, MOELM_ERROR, MOELM_ERROR_UNSUPPORTED, "%s: %s.%s = %d differs from decoder_embed_dim %d "
                  "(input/output projections are not implemented)", s->name, s->where, dims[i], v, embed_dim);
      return FALSE;
    }
  }
  return TRUE;
}

static gboolean moe_config(const Src *s, MoelmModelConfig *c, GError **error)
{
  if (!get_int(s, s->m, "moe_freq", &c->moe_freq, error))
    return FALSE;
  if (c->moe_freq <= 0) {
    c->moe_freq = 0;
    return TRUE;
  }
  gboolean top1 = FALSE;
  const char *policy = "sampling";
  double fraction = 0.25; /* fairseq's --moe-eval-capacity-token-fraction default */
  if (!get_int(s, s->m, "moe_expert_count", &c->moe_experts, error) ||
      !get_bool(s, s->m, "moe_top1_expert", &top1, error) ||
      !get_str(s, s->m, "moe_second_expert_policy", &policy, error) ||
      !get_bool(s, s->m, "moe_normalize_gate_prob_before_dropping", &c->moe_normalize_gate_prob_before_dropping,
                error) ||
      !get_int(s, s->m, "moe_expert_ffn_dim", &c->moe_expert_ffn_dim, error) ||
      !get_bool(s, s->m, "moe_gating_use_fp32", &c->moe_gating_use_fp32, error) ||
      !get_bool(s, s->m, "use_moe_pad_mask", &c->moe_pad_mask, error) ||
      !get_bool(s, s->m, "moe_batch_prioritized_routing", &c->moe_batch_prioritized_routing, error) ||
      !get_double(s, s->m, "capacity_factor", &c->moe_capacity_factor, error) ||
      !get_double(s, s->m, "moe_capacity_factor", &c->moe_capacity_factor, error) ||
      !get_double(s, s->m, "moe_eval_capacity_token_fraction", &fraction, error))
    return FALSE;
  c->moe_top_k = top1 ? 1 : 2;
  if (!moelm_second_expert_policy_parse(policy, &c->moe_second_expert_policy, error)) {
    moelm_error_prefix(error, "%s: %s", s->name, s->where);
    return FALSE;
  }
  if (fraction > 0)
    c->moe_eval_capacity_token_fraction = fraction;
  else {
    c->moe_eval_capacity_token_fraction = -1.0;
    note(s, "moe_eval_capacity_token_fraction %g: evaluation is dropless (fairseq would use the training "
         "capacity)", fraction);
  }
  if (get(s->m, "moe_eval_capacity_token_fraction") == NULL)
    note(s, "moe_eval_capacity_token_fraction not set: fairseq's default 0.25");
  return TRUE;
}

static gboolean task_meta(const Src *s, const MoelmModelConfig *c, JsonObject **task, GError **error)
{
  const char *tname = NULL, *mode = "none";
  int tps = c->max_positions;
  if (!get_str(s, s->t, s->t == s->m ? "task" : "_name", &tname, error) ||
      !get_int(s, s->m, "tokens_per_sample", &tps, error) || !get_int(s, s->t, "tokens_per_sample", &tps, error) ||
      !get_str(s, s->t, "sample_break_mode", &mode, error))
    return FALSE;
  if (tname && strcmp(tname, "language_modeling") != 0)
    note(s, "task '%s' is scored as language_modeling", tname);
  static const char *const modes[] = {"none", "complete", "complete_doc", "eos"};
  gboolean known = FALSE;
  for (gsize i = 0; i < G_N_ELEMENTS(modes); i++)
    known = known || strcmp(mode, modes[i]) == 0;
  if (!known) {
    note(s, "sample_break_mode '%s' is not moelm's: none", mode);
    mode = "none";
  }
  if (tps > c->max_positions)
    tps = c->max_positions;
  JsonObject *o = json_object_new();
  json_object_set_string_member(o, "task", "language_modeling");
  json_object_set_int_member(o, "tokens_per_sample", tps);
  json_object_set_string_member(o, "sample_break_mode", mode);
  *task = o;
  return TRUE;
}

gboolean moelm_fairseq_model_config(const MoelmPyObj *root, int vocab_size, const char *name, MoelmModelConfig *c,
                                    char **fairseq_arch, JsonObject **task, GPtrArray *notes, GError **error)
{
  Src s = {NULL, NULL, "cfg.model", name, notes};
  const MoelmPyObj *cfg = get(root, "cfg");
  if (cfg && (s.m = get(cfg, "model")) != NULL) {
    s.t = get(cfg, "task");
    if (s.t == NULL)
      s.t = s.m;
  } else if ((s.m = get(root, "args")) != NULL) {
    s.t = s.m;
    s.where = "args";
  } else {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_FORMAT, "%s: no cfg['model'] or args: not a fairseq checkpoint", name);
    return FALSE;
  }
  s.m = unwrap(s.m);
  s.t = unwrap(s.t);
  if (moelm_py_dict_items(s.m) == NULL)
    return bad_type(&s, "", s.m, "a dict or Namespace", error);
  const char *arch = NULL;
  if (!get_str(&s, s.m, "_name", &arch, error) || (arch == NULL && !get_str(&s, s.m, "arch", &arch, error)))
    return FALSE;
  if (arch == NULL) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_FORMAT, "%s: %s names no architecture (_name / arch)", name, s.where);
    return FALSE;
  }
  if (!g_str_has_prefix(arch, "transformer_lm")) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_UNSUPPORTED, "%s: architecture '%s' is not a transformer_lm", name,
                arch);
    return FALSE;
  }
  memset(c, 0, sizeof *c);
  if (!moelm_model_config_set_arch(c, arch, NULL)) {
    moelm_model_config_set_arch(c, "transformer_lm", NULL);
    note(&s, "architecture %s: not one of moelm's named archs; every size was read from the checkpoint", arch);
  }
  c->max_positions = 0;
  const char *act = NULL;
  gboolean no_final_norm = !c->final_norm, no_scale = !c->scale_embedding, pre = TRUE;
  gboolean ok = get_int(&s, s.m, "decoder_embed_dim", &c->embed_dim, error) &&
                get_int(&s, s.m, "decoder_ffn_embed_dim", &c->ffn_dim, error) &&
                get_int(&s, s.m, "decoder_layers", &c->layers, error) &&
                get_int(&s, s.m, "decoder_attention_heads", &c->heads, error) &&
                get_int(&s, s.m, "max_target_positions", &c->max_positions, error) &&
                get_bool(&s, s.m, "decoder_learned_pos", &c->learned_pos, error) &&
                get_bool(&s, s.m, "decoder_normalize_before", &pre, error) &&
                get_bool(&s, s.m, "no_decoder_final_norm", &no_final_norm, error) &&
                get_bool(&s, s.m, "no_scale_embedding", &no_scale, error) &&
                get_bool(&s, s.m, "share_decoder_input_output_embed", &c->share_embed, error) &&
                get_str(&s, s.m, "activation_fn", &act, error) &&
                get_double(&s, s.m, "dropout", &c->dropout, error) &&
                get_double(&s, s.m, "attention_dropout", &c->attention_dropout, error) &&
                get_double(&s, s.m, "relu_dropout", &c->activation_dropout, error) &&
                get_double(&s, s.m, "activation_dropout", &c->activation_dropout, error) &&
                check_unsupported(&s, c->embed_dim, error) && moe_config(&s, c, error);
  if (!ok)
    goto fail;
  if (!pre)
    note(&s, "decoder_normalize_before False: fairseq's transformer_lm architectures force pre-norm, as moelm does");
  c->normalize_before = TRUE;
  c->final_norm = !no_final_norm;
  c->scale_embedding = !no_scale;
  if (act) {
    if (strcmp(act, "gelu_fast") == 0) /* fairseq's deprecated name of gelu_accurate */
      act = "gelu_accurate";
    if (!moelm_activation_parse(act, &c->activation, error)) {
      moelm_error_prefix(error, "%s: %s", name, s.where);
      goto fail;
    }
  }
  if (c->max_positions <= 0) { /* fairseq: max_target_positions defaults to tokens_per_sample */
    int tps = 0;
    if (!get_int(&s, s.m, "tokens_per_sample", &tps, error) || !get_int(&s, s.t, "tokens_per_sample", &tps, error))
      goto fail;
    c->max_positions = tps > 0 ? tps : 1024;
  }
  c->vocab_size = vocab_size;
  if (!moelm_model_config_validate(c, error)) {
    moelm_error_prefix(error, "%s", name);
    goto fail;
  }
  if (!task_meta(&s, c, task, error))
    goto fail;
  *fairseq_arch = g_strdup(arch);
  return TRUE;
fail:
  moelm_model_config_clear(c);
  return FALSE;
}
