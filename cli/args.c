/* moelm — the option parser shared by every subcommand. */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "moelm/errors.h"
#include "moelm/log.h"

/* The options the last moelm_args_parse saw (their spec names), for checks of the kind
 * "this option needs that task". A CLI parses once per process. */
static GHashTable *given_options;

gboolean moelm_args_given(const char *name)
{
  return given_options != NULL && g_hash_table_contains(given_options, name);
}

char *moelm_args_given_list(const MoelmArgSpec *table)
{
  GString *s = g_string_new(NULL);
  for (const MoelmArgSpec *spec = table; spec->name; spec++)
    if (moelm_args_given(spec->name))
      g_string_append_printf(s, "%s%s", s->len ? ", " : "", spec->name);
  return g_string_free(s, s->len == 0);
}

static const MoelmArgSpec *find_spec(const MoelmArgSpec *const *tables, const char *name, gsize len)
{
  for (const MoelmArgSpec *const *t = tables; *t; t++)
    for (const MoelmArgSpec *s = *t; s->name; s++) {
      if (strlen(s->name) == len && strncmp(s->name, name, len) == 0)
        return s;
      if (s->alias && strlen(s->alias) == len && strncmp(s->alias, name, len) == 0)
        return s;
    }
  return NULL;
}

static gboolean takes_value(MoelmArgType type)
{
  return type != MOELM_ARG_FLAG && type != MOELM_ARG_IGNORED_FLAG;
}

static gboolean choice_ok(const char *choices, const char *value)
{
  gchar **list = g_strsplit(choices, "|", -1);
  gboolean ok = g_strv_contains((const gchar *const *)list, value);
  g_strfreev(list);
  return ok;
}

static gboolean set_value(const MoelmArgSpec *spec, const char *value, GString *ignored, GError **error)
{
  char *end = NULL;
  errno = 0;
  switch (spec->type) {
  case MOELM_ARG_INT:
  case MOELM_ARG_INT64: {
    /* fairseq accepts "1e5"-style values for some int options; be as lenient for whole numbers. */
    long long v = strtoll(value, &end, 10);
    if (end == value || *end != '\0' || errno) {
      double d = g_ascii_strtod(value, &end);
      if (end == value || *end != '\0' || d != floor(d) || fabs(d) > 9.0e18) {
        g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG, "argument %s: invalid int value: '%s'",
                    spec->name, value);
        return FALSE;
      }
      v = (long long)d;
    }
    if (spec->type == MOELM_ARG_INT) {
      if (v < G_MININT || v > G_MAXINT) {
        g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG, "argument %s: value out of range: '%s'",
                    spec->name, value);
        return FALSE;
      }
      *(int *)spec->dest = (int)v;
    } else {
      *(gint64 *)spec->dest = v;
    }
    return TRUE;
  }
  case MOELM_ARG_DOUBLE: {
    double d = g_ascii_strtod(value, &end);
    if (end == value || *end != '\0' || errno == ERANGE) {
      g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG, "argument %s: invalid float value: '%s'",
                  spec->name, value);
      return FALSE;
    }
    *(double *)spec->dest = d;
    return TRUE;
  }
  case MOELM_ARG_CHOICE:
    if (!choice_ok(spec->choices, value)) {
      char *list = g_strdup(spec->choices);
      g_strdelimit(list, "|", ',');
      g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG,
                  "argument %s: invalid choice: '%s' (choose from %s)", spec->name, value, list);
      g_free(list);
      return FALSE;
    }
    /* fall through */
  case MOELM_ARG_STRING:
  case MOELM_ARG_OPTIONAL:
    g_free(*(char **)spec->dest);
    *(char **)spec->dest = g_strdup(value);
    return TRUE;
  case MOELM_ARG_IGNORED:
    g_string_append_printf(ignored, "%s%s %s", ignored->len ? ", " : "", spec->name, value);
    return TRUE;
  default:
    return TRUE;
  }
}

/* Edit distance with adjacent transpositions (optimal string alignment), for suggestions. */
static gsize edit_distance(const char *a, gsize la, const char *b, gsize lb)
{
  gsize *d = g_new(gsize, (la + 1) * (lb + 1));
#define D(i, j) d[(i) * (lb + 1) + (j)]
  for (gsize i = 0; i <= la; i++)
    D(i, 0) = i;
  for (gsize j = 0; j <= lb; j++)
    D(0, j) = j;
  for (gsize i = 1; i <= la; i++)
    for (gsize j = 1; j <= lb; j++) {
      gsize best = MIN(D(i - 1, j) + 1, D(i, j - 1) + 1);
      best = MIN(best, D(i - 1, j - 1) + (a[i - 1] != b[j - 1]));
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1])
        best = MIN(best, D(i - 2, j - 2) + 1);
      D(i, j) = best;
    }
  gsize out = D(la, lb);
#undef D
  g_free(d);
  return out;
}

/* The known option nearest to an unknown one, or NULL when none is near enough to help:
 * a known name that contains it or is contained in it (--checkpoint-activation,
 * --max-updates), else the smallest edit distance within a third of the length. */
static const char *nearest_option(const MoelmArgSpec *const *tables, const char *name, gsize len)
{
  const char *best = NULL;
  gsize best_cost = G_MAXSIZE;
  for (const MoelmArgSpec *const *t = tables; *t; t++)
    for (const MoelmArgSpec *s = *t; s->name; s++)
      for (int k = 0; k < 2; k++) {
        const char *known = k ? s->alias : s->name;
        if (known == NULL)
          continue;
        gsize klen = strlen(known);
        gsize cost = edit_distance(name, len, known, klen);
        g_autofree char *probe = g_strndup(name, len);
        if (len > 4 && klen > 4 && (strstr(known, probe) || strstr(probe, known)))
          cost = MIN(cost, 1 + (klen > len ? klen - len : len - klen) / 4);
        if (cost < best_cost) {
          best_cost = cost;
          best = s->name;
        }
      }
  return best && best_cost <= MAX(2, len / 3) ? best : NULL;
}

gboolean moelm_args_parse(const char *prog, const MoelmArgSpec *const *tables, int argc, char **argv,
                          int first, GPtrArray *positional, gboolean *help_requested, GError **error)
{
  gboolean only_positional = FALSE;
  g_autoptr(GString) unknown = g_string_new(NULL);  /* every unknown option, reported together */
  g_autoptr(GString) ignored = g_string_new(NULL);  /* fairseq options without effect, one warning */
  int n_unknown = 0;
  if (given_options == NULL)
    given_options = g_hash_table_new(g_str_hash, g_str_equal);
  g_hash_table_remove_all(given_options);
  if (help_requested)
    *help_requested = FALSE;
  for (int i = first; i < argc; i++) {
    const char *arg = argv[i];
    if (only_positional || arg[0] != '-' || arg[1] == '\0') {
      if (positional)
        g_ptr_array_add(positional, (gpointer)arg);
      else {
        g_string_append_printf(unknown, "%s%s", unknown->len ? ", " : "", arg);
        n_unknown++;
      }
      continue;
    }
    if (strcmp(arg, "--") == 0) {
      only_positional = TRUE;
      continue;
    }
    if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0) {
      if (help_requested)
        *help_requested = TRUE;
      continue;
    }
    const char *eq = strchr(arg, '=');
    gsize name_len = eq ? (gsize)(eq - arg) : strlen(arg);
    const MoelmArgSpec *spec = find_spec(tables, arg, name_len);
    if (spec == NULL) {
      /* Keep going: a pasted fairseq command should learn every unknown option in one run.
       * A following non-option word is taken as its value so it is not read as a path. */
      const char *near = nearest_option(tables, arg, name_len);
      g_string_append_printf(unknown, "%s%.*s", unknown->len ? ", " : "", (int)name_len, arg);
      if (near)
        g_string_append_printf(unknown, " (did you mean %s?)", near);
      if (!eq && i + 1 < argc && argv[i + 1][0] != '-')
        i++;
      n_unknown++;
      continue;
    }
    if (spec->seen)
      *spec->seen = TRUE;
    g_hash_table_add(given_options, (gpointer)spec->name);
    if (!takes_value(spec->type)) {
      if (eq) {
        g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG, "argument %s: ignored explicit argument '%s'",
                    spec->name, eq + 1);
        return FALSE;
      }
      if (spec->type == MOELM_ARG_FLAG)
        *(gboolean *)spec->dest = TRUE;
      else
        g_string_append_printf(ignored, "%s%s", ignored->len ? ", " : "", spec->name);
      continue;
    }
    const char *value;
    const gboolean next_is_value = i + 1 < argc && argv[i + 1][0] != '-';
    if (eq)
      value = eq + 1;
    else if (spec->type == MOELM_ARG_OPTIONAL)
      value = next_is_value ? argv[++i] : spec->choices;
    else if (i + 1 < argc && !(argv[i + 1][0] == '-' && argv[i + 1][1] == '-' && argv[i + 1][2] != '\0' &&
                                !g_ascii_isdigit(argv[i + 1][2]))) {
      value = argv[++i];
    } else {
      g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG, "argument %s: expected one argument", spec->name);
      return FALSE;
    }
    if (!set_value(spec, value, ignored, error))
      return FALSE;
  }
  if (n_unknown) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG, "unrecognized argument%s: %s", n_unknown > 1 ? "s" : "",
                unknown->str);
    return FALSE;
  }
  if (ignored->len)
    moelm_warn("moelm.args", "%s: fairseq options with no effect in moelm, ignored: %s", prog, ignored->str);
  return TRUE;
}

static const char *metavar(MoelmArgType type)
{
  switch (type) {
  case MOELM_ARG_INT:
  case MOELM_ARG_INT64: return " N";
  case MOELM_ARG_DOUBLE: return " X";
  case MOELM_ARG_STRING:
  case MOELM_ARG_IGNORED: return " VALUE";
  case MOELM_ARG_OPTIONAL: return " [VALUE]";
  case MOELM_ARG_CHOICE: return " CHOICE";
  default: return "";
  }
}

void moelm_args_print_help(FILE *out, const char *prog, const char *usage, const MoelmArgSpec *const *tables)
{
  fprintf(out, "usage: %s %s\n\noptions:\n  -h, --help\n", prog, usage);
  for (const MoelmArgSpec *const *t = tables; *t; t++)
    for (const MoelmArgSpec *s = *t; s->name; s++) {
      if (s->type == MOELM_ARG_IGNORED || s->type == MOELM_ARG_IGNORED_FLAG)
        continue;
      char *left = g_strdup_printf("%s%s%s%s", s->name, s->alias ? ", " : "", s->alias ? s->alias : "",
                                   metavar(s->type));
      fprintf(out, "  %-40s %s", left, s->help ? s->help : "");
      if (s->type == MOELM_ARG_CHOICE)
        fprintf(out, " {%s}", s->choices);
      fputc('\n', out);
      g_free(left);
    }
}

void moelm_args_free_strings(const MoelmArgSpec *const *tables)
{
  for (const MoelmArgSpec *const *t = tables; *t; t++)
    for (const MoelmArgSpec *s = *t; s->name; s++)
      if (s->type == MOELM_ARG_STRING || s->type == MOELM_ARG_CHOICE || s->type == MOELM_ARG_OPTIONAL) {
        g_free(*(char **)s->dest);
        *(char **)s->dest = NULL;
      }
}
