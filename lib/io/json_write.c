/* moelm — compact, always-valid JSON text from a JsonNode tree. */
#include "config.h"

#include <math.h>
#include <stdio.h>

#include "moelm/json.h"

static void write_string(GString *out, const char *s)
{
  g_string_append_c(out, '"');
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    switch (*p) {
    case '"': g_string_append(out, "\\\""); break;
    case '\\': g_string_append(out, "\\\\"); break;
    case '\n': g_string_append(out, "\\n"); break;
    case '\r': g_string_append(out, "\\r"); break;
    case '\t': g_string_append(out, "\\t"); break;
    default:
      if (*p < 0x20)
        g_string_append_printf(out, "\\u%04x", *p);
      else
        g_string_append_c(out, (char)*p);
    }
  }
  g_string_append_c(out, '"');
}

static void write_double(GString *out, double v)
{
  if (!isfinite(v)) {
    g_string_append(out, "null");
    return;
  }
  char buf[40];
  for (int prec = 1; prec <= 17; prec++) { /* shortest text that reads back exactly */
    char fmt[8];
    g_snprintf(fmt, sizeof fmt, "%%.%dg", prec);
    g_ascii_formatd(buf, sizeof buf, fmt, v);
    if (g_ascii_strtod(buf, NULL) == v)
      break;
  }
  g_string_append(out, buf);
}

static void write_node(GString *out, JsonNode *node)
{
  switch (json_node_get_node_type(node)) {
  case JSON_NODE_NULL:
    g_string_append(out, "null");
    break;
  case JSON_NODE_VALUE: {
    GType t = json_node_get_value_type(node);
    if (t == G_TYPE_INT64)
      g_string_append_printf(out, "%" G_GINT64_FORMAT, json_node_get_int(node));
    else if (t == G_TYPE_DOUBLE)
      write_double(out, json_node_get_double(node));
    else if (t == G_TYPE_BOOLEAN)
      g_string_append(out, json_node_get_boolean(node) ? "true" : "false");
    else
      write_string(out, json_node_get_string(node) ? json_node_get_string(node) : "");
    break;
  }
  case JSON_NODE_ARRAY: {
    JsonArray *a = json_node_get_array(node);
    g_string_append_c(out, '[');
    for (guint i = 0; i < json_array_get_length(a); i++) {
      if (i)
        g_string_append_c(out, ',');
      write_node(out, json_array_get_element(a, i));
    }
    g_string_append_c(out, ']');
    break;
  }
  case JSON_NODE_OBJECT: {
    JsonObject *o = json_node_get_object(node);
    GList *members = json_object_get_members(o);
    g_string_append_c(out, '{');
    for (GList *m = members; m; m = m->next) {
      if (m != members)
        g_string_append_c(out, ',');
      write_string(out, m->data);
      g_string_append_c(out, ':');
      write_node(out, json_object_get_member(o, m->data));
    }
    g_string_append_c(out, '}');
    g_list_free(members);
    break;
  }
  }
}

char *moelm_json_to_string(JsonNode *node)
{
  GString *out = g_string_new(NULL);
  write_node(out, node);
  return g_string_free(out, FALSE);
}
