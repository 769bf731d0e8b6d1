/* moelm — typed access to the JSON state objects of lib/optim. */
#include "config.h"

#include "moelm/errors.h"
#include "optim/json_state.h"

JsonObject *moelm_optim_json_object(JsonNode *node, const char *what, GError **error)
{
  if (node == NULL || !JSON_NODE_HOLDS_OBJECT(node)) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_CORRUPT, "%s: not a JSON object", what);
    return NULL;
  }
  return json_node_get_object(node);
}

static JsonNode *value_member(JsonObject *o, const char *member)
{
  JsonNode *v = json_object_get_member(o, member);
  return v != NULL && JSON_NODE_HOLDS_VALUE(v) ? v : NULL;
}

const char *moelm_optim_json_string(JsonObject *o, const char *member)
{
  JsonNode *v = value_member(o, member);
  return v != NULL && json_node_get_value_type(v) == G_TYPE_STRING ? json_node_get_string(v) : NULL;
}

gboolean moelm_optim_json_double(JsonObject *o, const char *member, const char *what, double *out,
                                 GError **error)
{
  JsonNode *v = value_member(o, member);
  GType t = v != NULL ? json_node_get_value_type(v) : G_TYPE_INVALID;
  if (t == G_TYPE_DOUBLE) {
    *out = json_node_get_double(v);
    return TRUE;
  }
  if (t == G_TYPE_INT64) {
    *out = (double)json_node_get_int(v);
    return TRUE;
  }
  g_set_error(error, MOELM_ERROR, MOELM_ERROR_CORRUPT, "%s: '%s' is missing or not a number", what, member);
  return FALSE;
}

gboolean moelm_optim_json_count(JsonObject *o, const char *member, const char *what, int64_t *out,
                                GError **error)
{
  JsonNode *v = value_member(o, member);
  if (v == NULL || json_node_get_value_type(v) != G_TYPE_INT64 || json_node_get_int(v) < 0) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_CORRUPT, "%s: '%s' is missing or not a count", what, member);
    return FALSE;
  }
  *out = json_node_get_int(v);
  return TRUE;
}
