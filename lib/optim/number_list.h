/* moelm — internal: the small number-list syntax fairseq users write for Python-evaluated
 * options (`--adam-betas '(0.9, 0.98)'`, `--lr 0.25,0.1`). */
#ifndef MOELM_OPTIM_NUMBER_LIST_H
#define MOELM_OPTIM_NUMBER_LIST_H

#include <glib.h>

/* "a", "a, b", "(a, b)", "[a, b,]": finite numbers separated by commas, optionally in one
 * pair of brackets, one trailing comma allowed. Fills out[0..*n) (1 <= *n <= max). The error
 * message says what is wrong without naming the option (callers prefix it). */
gboolean moelm_parse_number_list(const char *text, double *out, int max, int *n, GError **error);

#endif
