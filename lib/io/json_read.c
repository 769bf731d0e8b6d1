/* moelm — typed, range-checked reads of JSON members (checkpoint metadata is input like any
 * other file: json-glib's getters return 0 or NULL for a member of another type, and a
 * caller that casts an int64 to int wraps). */
#include "config.h"

#include <math.h>
#include <string.h>

#include "moelm/errors.h"
#include "moelm/json.h"

/* The member's JSON text for a message, shortened. */
static char *shown(JsonNode *v)
{
  char *text = moelm_json_to_string(v);
  if (strlen(text) > 40) {
    char *cut = g_strdup_printf("%.37s...", text);
    g_free(text);
    text = cut;
  }
  return text;
}

static gboolean bad(JsonNode *v, const char *key, const char *what, GError **error)
{
  char *text = shown(v);
  g_set_error(error, MOELM_ERROR, MOELM_ERROR_CORRUPT, "'%s' must be %s, got %s", key, what, text);
  g_free(text);
  return FALSE;
}

static GType value_type(JsonNode *v)
{
  return JSON_NODE_HOLDS_VALUE(v) ? json_node_get_value_type(v) : G_TYPE_INVALID;
}

JsonObject *moelm_json_object(JsonNode *node, const char *what, GError **error)
{
  if (node == NULL || !JSON_NODE_HOLDS_OBJECT(node)) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_CORRUPT, "%s: %s", what, node ? "not a JSON object" : "missing");
    return NULL;
  }
  return json_node_get_object(node);
}

gboolean moelm_json_require(JsonObject *o, const char *const *keys, GError **error)
{
  for (const char *const *k = keys; *k; k++)
    if (!json_object_has_member(o, *k)) {
      g_set_error(error, MOELM_ERROR, MOELM_ERROR_CORRUPT, "missing field '%s'", *k);
      return FALSE;
    }
  return TRUE;
}

gboolean moelm_json_get_int64(JsonObject *o, const char *key, gint64 min, gint64 max, gint64 *value, GError **error)
{
  JsonNode *v = json_object_get_member(o, key);
  if (v == NULL)
    return TRUE;
  const gint64 x = value_type(v) == G_TYPE_INT64 ? json_node_get_int(v) : 0;
  if (value_type(v) != G_TYPE_INT64 || x < min || x > max) {
    char *what = g_strdup_printf("an integer in %" G_GINT64_FORMAT "..%" G_GINT64_FORMAT, min, max);
    bad(v, key, what, error);
    g_free(what);
    return FALSE;
  }
  *value = x;
  return TRUE;
}

gboolean moelm_json_get_int(JsonObject *o, const char *key, int min, int max, int *value, GError **error)
{
  gint64 x = *value;
  if (!moelm_json_get_int64(o, key, min, max, &x, error))
    return FALSE;
  *value = (int)x;
  return TRUE;
}

gboolean moelm_json_get_double(JsonObject *o, const char *key, double min, double max, double *value,
                               GError **error)
{
  JsonNode *v = json_object_get_member(o, key);
  if (v == NULL)
    return TRUE;
  const GType t = value_type(v);
  const double x = t == G_TYPE_DOUBLE ? json_node_get_double(v) : t == G_TYPE_INT64 ? (double)json_node_get_int(v) : NAN;
  if (!(x >= min && x <= max)) { /* NaN (not a number) fails too */
    char *what = min == -G_MAXDOUBLE && max == G_MAXDOUBLE ? g_strdup("a finite number")
                                                           : g_strdup_printf("a number in [%g, %g]", min, max);
    bad(v, key, what, error);
    g_free(what);
    return FALSE;
  }
  *value = x;
  return TRUE;
}

gboolean moelm_json_get_bool(JsonObject *o, const char *key, gboolean *value, GError **error)
{
  JsonNode *v = json_object_get_member(o, key);
  if (v == NULL)
    return TRUE;
  if (value_type(v) != G_TYPE_BOOLEAN)
    return bad(v, key, "true or false", error);
  *value = json_node_get_boolean(v);
  return TRUE;
}

gboolean moelm_json_get_string(JsonObject *o, const char *key, const char **value, GError **error)
{
  JsonNode *v = json_object_get_member(o, key);
  if (v == NULL)
    return TRUE;
  if (value_type(v) != G_TYPE_STRING)
    return bad(v, key, "a string", error);
  *value = json_node_get_string(v);
  return TRUE;
}
