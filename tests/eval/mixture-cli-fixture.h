/* Fixtures for the end-to-end tests of eval-lm and generate on sequence-level mixtures: a
 * data-bin of whitespace words (no SentencePiece) made with `moelm preprocess`, and
 * checkpoints trained for 3 updates with `moelm train`, built once per test run. */
#ifndef MOELM_TESTS_EVAL_MIXTURE_CLI_FIXTURE_H
#define MOELM_TESTS_EVAL_MIXTURE_CLI_FIXTURE_H

#include <glib.h>

typedef struct {
  char *dir;            /* temp dir holding everything */
  char *data;           /* data-bin: train/valid/test of the same 60 lines */
  char *mixture;        /* hMoElp, K = 2, tokens per sample 32, gating context 16 */
  char *dense;          /* language_modeling, same shape */
  char *seed_mixture;   /* as the seed trains it: hMoEup, K = 10, --mean-pool-gating-network, 512 positions */
  double mixture_valid; /* the mixture's valid loss as `moelm train` logged it (base 2, 3 decimals) */
} MixtureCliFixture;

#define MIXTURE_CLI_K 2

const MixtureCliFixture *mixture_cli_fixture(void);

/* Assert: exit status `status`, and stderr one line that contains `needle`. */
void mixture_cli_check_fails(const char *const *args, const char *stdin_text, int status, const char *needle);

#endif
