/* moelm — writing JSON text. json-glib's generator prints some doubles as invalid JSON
 * (1e-08 becomes "1e-08.0" in the Debian 12 version), so moelm serialises JSON itself:
 * numbers in their shortest round-trip form, strings escaped per RFC 8259. */
#ifndef MOELM_JSON_H
#define MOELM_JSON_H

#include <glib.h>
#include <json-glib/json-glib.h>

G_BEGIN_DECLS

/* Compact JSON text of a node (g_free). Non-finite doubles become null. */
char *moelm_json_to_string(JsonNode *node);

G_END_DECLS

#endif
