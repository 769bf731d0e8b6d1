/* Fixtures for the eval-lm suites: a tiny data-bin written in a temp dir and a tiny,
 * untrained model over its dictionary. */
#ifndef MOELM_TESTS_EVAL_FIXTURE_H
#define MOELM_TESTS_EVAL_FIXTURE_H

#include <glib.h>

#include "moelm/backend.h"
#include "moelm/dictionary.h"
#include "moelm/model.h"

#define FIXTURE_WORDS 20 /* vocabulary: 4 specials + w00..w19 */

typedef struct {
  char *dir;             /* temp data-bin: dict.txt, test.{idx,bin} */
  MoelmDictionary *dict;
  MoelmBackend *be;
  MoelmModel *model;
  int32_t *stream;       /* (ntokens) every token of the split, in order */
  int64_t ntokens;
} EvalFixture;

/* Sentences of 1..max_len tokens (each ending in </s>), with a few empty lines ([</s>],
 * document boundaries); the model has `max_positions` positions. */
void eval_fixture_init(EvalFixture *f, int sentences, int max_len, int max_positions, guint32 seed);
void eval_fixture_clear(EvalFixture *f);

#endif
