/* moelm — the inference API: status codes, errors, logging, options (see api-internal.h). */
#include "config.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "api-internal.h"
#include "moelm/errors.h"
#include "moelm/log.h"

/* The message of this thread's last failure (freed at thread exit or when replaced). */
static GPrivate last_error = G_PRIVATE_INIT(g_free);

int moelm_api_version(void) { return MOELM_API_VERSION; }

const char *moelm_last_error(void)
{
  const char *msg = g_private_get(&last_error);
  return msg ? msg : "";
}

const char *moelm_status_name(int status)
{
  static const char *const names[] = {"MOELM_OK",         "MOELM_E_IO",          "MOELM_E_FORMAT",
                                      "MOELM_E_CORRUPT",  "MOELM_E_INVALID_ARG", "MOELM_E_MISMATCH",
                                      "MOELM_E_EXISTS",   "MOELM_E_UNSUPPORTED", "MOELM_E_NOMEM",
                                      "MOELM_E_FAILED"};
  return status >= 0 && status < (int)G_N_ELEMENTS(names) ? names[status] : "MOELM_E_UNKNOWN";
}

/* MoelmError codes, in order, are the API's codes minus one. */
G_STATIC_ASSERT(MOELM_ERROR_IO + 1 == MOELM_E_IO && MOELM_ERROR_FAILED + 1 == MOELM_E_FAILED &&
                MOELM_ERROR_INVALID_ARG + 1 == MOELM_E_INVALID_ARG && MOELM_ERROR_NOMEM + 1 == MOELM_E_NOMEM);

int api_fail(GError *error)
{
  int code = MOELM_E_FAILED;
  if (error == NULL) {
    g_private_replace(&last_error, g_strdup("unknown error"));
    return code;
  }
  if (error->domain == MOELM_ERROR && error->code >= MOELM_ERROR_IO && error->code <= MOELM_ERROR_FAILED)
    code = error->code + 1;
  else if (error->domain == G_FILE_ERROR)
    code = MOELM_E_IO;
  g_private_replace(&last_error, g_strdup(error->message));
  g_error_free(error);
  return code;
}

int api_fail_invalid(const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  char *msg = g_strdup_vprintf(fmt, ap);
  va_end(ap);
  GError *error = g_error_new_literal(MOELM_ERROR, MOELM_ERROR_INVALID_ARG, msg);
  g_free(msg);
  return api_fail(error);
}

int moelm_set_log_level(const char *level)
{
  static const char *const names[] = {"debug", "info", "warning", "error", "quiet"};
  for (guint i = 0; level && i < G_N_ELEMENTS(names); i++)
    if (strcmp(level, names[i]) == 0) {
      moelm_log_set_level((MoelmLogLevel)i);
      return MOELM_OK;
    }
  return api_fail_invalid("log level '%s': choose debug, info, warning, error or quiet", level ? level : "(null)");
}

void moelm_free(void *p) { g_free(p); }

/* ---- options ------------------------------------------------------------------------- */

static gboolean parse_value(const ApiOption *o, const char *v, GError **error)
{
  gint64 i = 0;
  char *end = NULL;
  switch (o->type) {
  case API_OPT_STRING:
    *(const char **)o->target = v;
    return TRUE;
  case API_OPT_INT:
  case API_OPT_INT64:
    if (!g_ascii_string_to_signed(v, 10, o->type == API_OPT_INT ? G_MININT : G_MININT64,
                                  o->type == API_OPT_INT ? G_MAXINT : G_MAXINT64, &i, NULL))
      break;
    if (o->type == API_OPT_INT)
      *(int *)o->target = (int)i;
    else
      *(gint64 *)o->target = i;
    return TRUE;
  case API_OPT_DOUBLE: {
    errno = 0;
    const double d = g_ascii_strtod(v, &end);
    if (*v == '\0' || *end != '\0' || errno != 0)
      break;
    *(double *)o->target = d;
    return TRUE;
  }
  case API_OPT_BOOL:
    if (strcmp(v, "1") == 0 || strcmp(v, "true") == 0 || strcmp(v, "0") == 0 || strcmp(v, "false") == 0) {
      *(gboolean *)o->target = v[0] == '1' || v[0] == 't';
      return TRUE;
    }
    break;
  }
  static const char *const what[] = {"a string", "an integer", "an integer", "a number", "0 or 1"};
  g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG, "option %s: '%s' is not %s", o->key, v, what[o->type]);
  return FALSE;
}

gboolean api_options_parse(const char *const *options, const ApiOption *table, GError **error)
{
  for (gsize i = 0; options && options[i]; i++) {
    const char *eq = strchr(options[i], '=');
    if (eq == NULL) {
      g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG, "option '%s': expected key=value", options[i]);
      return FALSE;
    }
    const gsize klen = (gsize)(eq - options[i]);
    const ApiOption *o = table;
    while (o->key && (strlen(o->key) != klen || strncmp(o->key, options[i], klen) != 0))
      o++;
    if (o->key == NULL) {
      GString *known = g_string_new(NULL);
      for (const ApiOption *k = table; k->key; k++)
        g_string_append_printf(known, "%s%s", known->len ? ", " : "", k->key);
      g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG, "unknown option '%.*s' (known: %s)", (int)klen,
                  options[i], known->str);
      g_string_free(known, TRUE);
      return FALSE;
    }
    if (!parse_value(o, eq + 1, error))
      return FALSE;
  }
  return TRUE;
}

gboolean api_check_tokens(const MoelmLM *lm, const int32_t *tokens, size_t n, GError **error)
{
  const int V = moelm_lm_vocab_size(lm);
  for (size_t i = 0; i < n; i++)
    if (tokens[i] < 0 || tokens[i] >= V) {
      g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG, "token %zu is %d, outside the vocabulary (0..%d)", i,
                  tokens[i], V - 1);
      return FALSE;
    }
  return TRUE;
}

gboolean api_check_expert(const MoelmLM *lm, int expert, GError **error)
{
  const int K = moelm_lm_num_experts(lm);
  if (expert == MOELM_EXPERT_MIXTURE || (K > 0 && (expert == MOELM_EXPERT_AUTO || (expert >= 0 && expert < K))))
    return TRUE;
  char *name = expert == MOELM_EXPERT_AUTO ? g_strdup("auto") : g_strdup_printf("%d", expert);
  if (K == 0)
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG,
                "expert %s: %s is a %s checkpoint, not a sequence-level mixture (--task language_model_moe)", name,
                lm->checkpoint, moelm_lm_task(lm));
  else
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG, "expert %s: %s has %d experts (0..%d)", name,
                lm->checkpoint, K, K - 1);
  g_free(name);
  return FALSE;
}
