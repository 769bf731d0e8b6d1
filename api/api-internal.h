/* moelm — the inference API (lib/moelm/moelm.h) inside: the handle and the helpers its files
 * share.
 *
 *   api-common.c   status codes, the per-thread last error, log level, options "key=value"
 *   api-lm.c       opening a model (converting fairseq's PyTorch files), what it is, text
 *   api-run.c      scoring, posteriors, generation
 *
 * The API sits above tasks/ (as cli/ does): it is a thin layer over moelm_inference_open,
 * the choice scorer, the mixture scorer and the generator, and holds no scoring logic. */
#ifndef MOELM_API_INTERNAL_H
#define MOELM_API_INTERNAL_H

#include <glib.h>

#include "moelm/gpt2_bpe.h"
#include "moelm/moelm.h"
#include "moelm/spm.h"
#include "tasks/inference.h"

struct MoelmLM {
  MoelmInference *inf;
  MoelmGpt2Bpe *gpt2; /* bpe=gpt2 */
  MoelmSpm *spm;      /* bpe=sentencepiece */
  char *checkpoint;   /* as given to open */
};

/* Record the error as this thread's last one (moelm_last_error) and return its status code;
 * the error is freed. */
int api_fail(GError *error);
/* api_fail of a new MOELM_E_INVALID_ARG error. */
int api_fail_invalid(const char *fmt, ...) G_GNUC_PRINTF(1, 2);

/* One accepted option: "key=value", parsed into *target by type. */
typedef enum { API_OPT_STRING, API_OPT_INT, API_OPT_INT64, API_OPT_DOUBLE, API_OPT_BOOL } ApiOptType;

typedef struct {
  const char *key;
  ApiOptType type;
  void *target; /* const char ** (pointing into the option string), int *, gint64 *, double *, gboolean * */
} ApiOption;

/* Parse a NULL-terminated "key=value" array (NULL: none) against the table (ending with a
 * NULL key). An unknown key, a missing '=' or a bad value is an error naming it. */
gboolean api_options_parse(const char *const *options, const ApiOption *table, GError **error);

/* Whether every id of tokens[0..n) is in the model's vocabulary (else an error naming the
 * first one that is not). */
gboolean api_check_tokens(const MoelmLM *lm, const int32_t *tokens, size_t n, GError **error);

/* The expert argument of score/generate: on a plain LM only MOELM_EXPERT_MIXTURE; on a
 * mixture also 0..K-1 and MOELM_EXPERT_AUTO. */
gboolean api_check_expert(const MoelmLM *lm, int expert, GError **error);

#endif
