/* moelm — fairseq's --model-overrides: a Python dict literal (or JSON object) of model options
 * applied to a checkpoint's configuration before the model is built. */
#include "config.h"

#include <string.h>

#include "model_overrides.h"
#include "moelm/errors.h"

/* The options a checkpoint's tensors do not fix: how tokens are routed and what dropout
 * does. Every other configuration key is the shape of the stored parameters. */
static const char *const runtime_keys[] = {
  "dropout", "attention_dropout", "activation_dropout", "mean_pool_gating_network_dropout",
  "moe_top1_expert", "moe_second_expert_policy", "moe_normalize_gate_prob_before_dropping",
  "moe_capacity_factor", "moe_dropless", "moe_eval_capacity_token_fraction", "moe_batch_prioritized_routing",
  "use_moe_pad_mask", "moe_gating_use_fp32", "moe_gate_loss_wt", "moe_gate_loss_combine_method", "moefy_top_k",
  NULL,
};

/* A Python literal as JSON: 'single' quoted strings, True/False/None, trailing commas and
 * (1, 2) tuples; JSON itself passes through unchanged. g_free; NULL: not a literal (a quote
 * left open). */
static char *python_literal_to_json(const char *s)
{
  GString *out = g_string_new(NULL);
  for (const char *p = s; *p;) {
    if (*p == '\'' || *p == '"') {
      const char q = *p++;
      g_string_append_c(out, '"');
      for (; *p && *p != q; p++) {
        if (*p == '\\' && p[1]) {
          p++;
          if (*p == '\'')
            g_string_append_c(out, '\'');
          else
            g_string_append_printf(out, "\\%c", *p);
        } else if (*p == '"') {
          g_string_append(out, "\\\"");
        } else {
          g_string_append_c(out, *p);
        }
      }
      if (*p != q) {
        g_string_free(out, TRUE);
        return NULL;
      }
      p++;
      g_string_append_c(out, '"');
    } else if (g_ascii_isalpha(*p) || *p == '_') {
      const char *start = p;
      while (g_ascii_isalnum(*p) || *p == '_')
        p++;
      const gsize n = (gsize)(p - start);
      if (n == 4 && strncmp(start, "True", 4) == 0)
        g_string_append(out, "true");
      else if (n == 5 && strncmp(start, "False", 5) == 0)
        g_string_append(out, "false");
      else if (n == 4 && strncmp(start, "None", 4) == 0)
        g_string_append(out, "null");
      else
        g_string_append_len(out, start, (gssize)n); /* JSON's true/false/null, or an error later */
    } else if (*p == ',') {
      const char *q = p + 1;
      while (g_ascii_isspace(*q))
        q++;
      if (*q != '}' && *q != ']' && *q != ')')
        g_string_append_c(out, ',');
      p++;
    } else {
      g_string_append_c(out, *p == '(' ? '[' : *p == ')' ? ']' : *p);
      p++;
    }
  }
  return g_string_free(out, FALSE);
}

JsonObject *moelm_model_overrides_parse(const char *text, GError **error)
{
  char *json = python_literal_to_json(text);
  JsonParser *parser = json_parser_new();
  GError *why = NULL;
  JsonObject *o = NULL;
  if (json == NULL)
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG, "--model-overrides: a string is not closed: %s", text);
  else if (!json_parser_load_from_data(parser, json, -1, &why))
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG,
                "--model-overrides: not a Python dict or JSON object: %s (%s)", text, why->message);
  else if (json_parser_get_root(parser) == NULL || !JSON_NODE_HOLDS_OBJECT(json_parser_get_root(parser)))
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG,
                "--model-overrides: not a dict: %s (e.g. \"{'moe_eval_capacity_token_fraction': 0.05}\")", text);
  else
    o = json_object_ref(json_node_get_object(json_parser_get_root(parser)));
  g_clear_error(&why);
  g_object_unref(parser);
  g_free(json);
  return o;
}

gboolean moelm_model_overrides_apply(JsonObject *overrides, MoelmModelConfig *cfg, const char *ckpt_path,
                                     char **no_effect, GError **error)
{
  *no_effect = NULL;
  JsonNode *node = moelm_model_config_to_json(cfg);
  JsonObject *o = json_node_get_object(node);
  GString *ignored = g_string_new(NULL);
  gboolean ok = TRUE;
  GList *keys = json_object_get_members(overrides);
  for (GList *k = keys; k && ok; k = k->next) {
    const char *key = k->data;
    JsonNode *value = json_object_get_member(overrides, key);
    if (!json_object_has_member(o, key)) { /* not a model option here (or not of this model: MoE keys of a dense one) */
      g_string_append_printf(ignored, "%s%s", ignored->len ? ", " : "", key);
      continue;
    }
    if (!g_strv_contains(runtime_keys, key) && !json_node_equal(json_object_get_member(o, key), value)) {
      g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG,
                  "--model-overrides: '%s' cannot change: %s's parameters were stored with its value", key, ckpt_path);
      ok = FALSE;
      break;
    }
    json_object_set_member(o, key, json_node_copy(value));
  }
  g_list_free(keys);
  MoelmModelConfig next;
  if (ok && moelm_model_config_from_json(&next, node, error)) {
    moelm_model_config_clear(cfg);
    *cfg = next;
  } else if (ok) {
    moelm_error_prefix(error, "--model-overrides");
    ok = FALSE;
  }
  json_node_unref(node);
  if (ok && ignored->len)
    *no_effect = g_string_free(ignored, FALSE);
  else
    g_string_free(ignored, TRUE);
  return ok;
}
