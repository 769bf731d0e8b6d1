/* moelm — writing JSON text, and reading members with their types checked. json-glib's generator prints some doubles as invalid JSON
 * (1e-08 becomes "1e-08.0" in the Debian 12 version), so moelm serialises JSON itself:
 * numbers in their shortest round-trip form, strings escaped per RFC 8259. */
#ifndef MOELM_JSON_H
#define MOELM_JSON_H

#include <glib.h>
#include <json-glib/json-glib.h>

G_BEGIN_DECLS

/* Compact JSON text of a node (g_free). Non-finite doubles become null. */
char *moelm_json_to_string(JsonNode *node);

/* ---- reading members of an object that someone else wrote (checkpoint metadata) ----
 * Each getter checks the member's type (and range): an absent member leaves *value alone
 * (the caller's default) and returns TRUE; a member of another type or out of range (JSON
 * null included) returns FALSE with "'KEY' must be ..., got TEXT", for the caller to prefix
 * with the file and object. Integers must be JSON integers (1e8 is not one). */

/* The object held by node; NULL with "WHAT: missing" or "WHAT: not a JSON object". */
JsonObject *moelm_json_object(JsonNode *node, const char *what, GError **error);
/* TRUE when every key of the NULL-terminated list is present; else "missing field 'KEY'". */
gboolean moelm_json_require(JsonObject *o, const char *const *keys, GError **error);
gboolean moelm_json_get_int64(JsonObject *o, const char *key, gint64 min, gint64 max, gint64 *value, GError **error);
gboolean moelm_json_get_int(JsonObject *o, const char *key, int min, int max, int *value, GError **error);
/* An integer or floating-point member, finite and in [min, max]. */
gboolean moelm_json_get_double(JsonObject *o, const char *key, double min, double max, double *value,
                               GError **error);
gboolean moelm_json_get_bool(JsonObject *o, const char *key, gboolean *value, GError **error);
/* *value points into the object (valid while it lives). */
gboolean moelm_json_get_string(JsonObject *o, const char *key, const char **value, GError **error);

G_END_DECLS

#endif
