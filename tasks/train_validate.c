/* moelm — the trainer's options, checked before anything is opened: fairseq rejects these
 * values (argparse types, asserts, a ZeroDivisionError), so moelm names them instead of
 * replacing them with defaults. */
#include "config.h"

#include <math.h>
#include <stdarg.h>

#include "moelm/errors.h"
#include "train_best.h"
#include "trainer.h"

typedef struct {
  const char *flag;
  int64_t value, min;
} AtLeast;

gboolean moelm_train_config_validate(const MoelmTrainConfig *c, GError **error)
{
  const AtLeast ints[] = {
    {"--max-tokens", c->max_tokens, 0},
    {"--batch-size", c->batch_size, 0},
    {"--max-tokens-valid", c->max_tokens_valid, 0},
    {"--max-valid-steps", c->max_valid_steps, 0},
    {"--batch-size-valid", c->batch_size_valid, 0},
    {"--required-batch-size-multiple", c->required_multiple, 1},
    {"--update-freq", c->update_freq, 1},
    {"--max-update", c->max_update, 0},
    {"--max-epoch", c->max_epoch, 0},
    {"--validate-interval", c->validate_interval, 1},
    {"--validate-interval-updates", c->validate_interval_updates, 0},
    {"--save-interval", c->save_interval, 1},
    {"--save-interval-updates", c->save_interval_updates, 0},
    {"--keep-last-epochs", c->keep_last_epochs, -1},
    {"--keep-interval-updates", c->keep_interval_updates, -1},
    {"--keep-best-checkpoints", c->keep_best_checkpoints, -1},
    {"--patience", c->patience, -1},
    {"--log-interval", c->log_interval, 1},
  };
  for (gsize i = 0; i < G_N_ELEMENTS(ints); i++)
    if (ints[i].value < ints[i].min) {
      g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG, "%s must be at least %" G_GINT64_FORMAT ", got %" G_GINT64_FORMAT,
                  ints[i].flag, ints[i].min, ints[i].value);
      return FALSE;
    }
  if (c->tokens_per_sample < 1 || c->tokens_per_sample > MOELM_MODEL_MAX_POSITIONS) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG, "--tokens-per-sample must be in 1..%d, got %" G_GINT64_FORMAT,
                MOELM_MODEL_MAX_POSITIONS, c->tokens_per_sample);
    return FALSE;
  }
  if (c->max_tokens == 0 && c->batch_size == 0) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG,
                "you must specify a batch size, either --max-tokens or --batch-size");
    return FALSE;
  }
  if (!(c->clip_norm >= 0 && isfinite(c->clip_norm))) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG, "--clip-norm must be a finite number >= 0 (0: off), got %g",
                c->clip_norm);
    return FALSE;
  }
  if (!moelm_best_metric_check(c->best_checkpoint_metric, error))
    return FALSE;
  if (!(c->stop_time_hours >= 0 && isfinite(c->stop_time_hours))) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG, "--stop-time-hours must be a finite number >= 0 (0: off), got %g",
                c->stop_time_hours);
    return FALSE;
  }
  if (!isfinite(c->stop_min_lr)) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG, "--stop-min-lr must be finite, got %g", c->stop_min_lr);
    return FALSE;
  }
  return TRUE;
}
