/* moelm — internal: reading the optimizer / scheduler / scaler state objects that go into
 * checkpoint metadata, without tripping json-glib's type assertions on foreign input. */
#ifndef MOELM_OPTIM_JSON_STATE_H
#define MOELM_OPTIM_JSON_STATE_H

#include <stdint.h>
#include <glib.h>
#include <json-glib/json-glib.h>

/* The object held by node; NULL with an error naming `what` otherwise. */
JsonObject *moelm_optim_json_object(JsonNode *node, const char *what, GError **error);

/* A string member, or NULL when missing or not a string. */
const char *moelm_optim_json_string(JsonObject *o, const char *member);

/* A number member (integer or floating point); FALSE with an error naming `what`. */
gboolean moelm_optim_json_double(JsonObject *o, const char *member, const char *what, double *out,
                                 GError **error);

/* An integer member >= 0; FALSE with an error naming `what`. */
gboolean moelm_optim_json_count(JsonObject *o, const char *member, const char *what, int64_t *out,
                                GError **error);

#endif
