/* moelm — fairseq-style command-line options: `--name value`, `--name=value`, store-true
 * flags, choices, aliases, and fairseq options that mean nothing here (accepted with a
 * warning so fairseq command lines run unchanged: one warning line lists them all). Unknown
 * options are one error that names every one, each with the nearest known option. Several
 * tables can be combined (common + task + model). */
#ifndef MOELM_CLI_ARGS_H
#define MOELM_CLI_ARGS_H

#include <stdio.h>
#include <glib.h>

typedef enum {
  MOELM_ARG_FLAG,         /* gboolean*: store true */
  MOELM_ARG_INT,          /* int* */
  MOELM_ARG_INT64,        /* gint64* */
  MOELM_ARG_DOUBLE,       /* double* */
  MOELM_ARG_STRING,       /* char**: g_strdup'ed, previous value freed */
  MOELM_ARG_CHOICE,       /* char**: must be one of `choices` ("a|b|c") */
  MOELM_ARG_OPTIONAL,     /* char**: an optional value (argparse nargs='?'): without one, the
                           * constant in `choices` is stored (e.g. --remove-bpe → "@@ ") */
  MOELM_ARG_IGNORED,      /* takes a value; accepted with a warning */
  MOELM_ARG_IGNORED_FLAG  /* takes no value; accepted with a warning */
} MoelmArgType;

typedef struct {
  const char *name;    /* "--max-tokens"; NULL ends a table */
  const char *alias;   /* another spelling ("--batch-size") or NULL */
  MoelmArgType type;
  void *dest;
  const char *choices; /* for MOELM_ARG_CHOICE */
  const char *help;
  gboolean *seen;      /* optional: set TRUE when the option was given */
} MoelmArgSpec;

/* Parse argv[first..argc) against the NULL-terminated list of tables. Positional
 * arguments go to `positional` (char*, owned by argv). `-h/--help` sets *help_requested.
 * Returns FALSE with a one-line error for unknown options (all of them), missing or bad
 * values. Messages carry no prefix: the caller's moelm_cli_fail adds "moelm CMD: error:". */
gboolean moelm_args_parse(const char *prog, const MoelmArgSpec *const *tables, int argc, char **argv,
                          int first, GPtrArray *positional, gboolean *help_requested, GError **error);

/* Whether the last moelm_args_parse saw the option `name` (its spec's name, either spelling
 * given), and the options of `table` it saw as "--a, --b" (g_free; NULL when none). */
gboolean moelm_args_given(const char *name);
char *moelm_args_given_list(const MoelmArgSpec *table);

void moelm_args_print_help(FILE *out, const char *prog, const char *usage, const MoelmArgSpec *const *tables);

/* Free every MOELM_ARG_STRING/CHOICE destination in the tables and reset it to NULL. */
void moelm_args_free_strings(const MoelmArgSpec *const *tables);

#endif
