/* moelm — running averages for fairseq's training log lines. */
#ifndef MOELM_TASKS_TRAIN_METERS_H
#define MOELM_TASKS_TRAIN_METERS_H

#include <stdint.h>
#include <glib.h>

#include "moelm/tensorboard.h"

G_BEGIN_DECLS

typedef struct {
  double loss_sum;     /* nats */
  double sample_size;  /* tokens the loss is averaged over */
  double ntokens;      /* target tokens (wpb, wps) */
  double nsentences;   /* rows (bsz) */
  double gnorm_sum;
  int64_t clipped;
  int64_t updates;
  double seconds;      /* train time of these updates */
} MoelmTrainMeters;

void moelm_meters_reset(MoelmTrainMeters *m);
void moelm_meters_add(MoelmTrainMeters *dst, const MoelmTrainMeters *src);

/* "loss=9.876, ppl=939.62, wps=2345.1, ups=1.15, wpb=2048, bsz=8" style fields (sep "=" and
 * ", " for the inner line; " " and " | " for the epoch line). With `tb`, every numeric field
 * but num_updates is also a TensorBoard scalar at step `tb_step` (fairseq's
 * --tensorboard-logdir: one writer per line kind, train_inner/train/valid). */
typedef struct {
  const char *kv_sep;
  const char *field_sep;
  const char *json_prefix; /* non-NULL: JSON fields "PREFIXkey": "value" (fairseq's --log-format json) */
  MoelmTbWriter *tb;       /* NULL: no TensorBoard */
  int64_t tb_step;         /* num_updates */
} MoelmLogStyle;

/* Append one field; `round` is fairseq's meter rounding (digits), < 0 for %g. */
void moelm_log_field(GString *line, const MoelmLogStyle *style, const char *key, double value, int round);

/* Append a field whose value is already text. */
void moelm_log_field_text(GString *line, const MoelmLogStyle *style, const char *key, const char *value);

/* round(x, digits) printed with Python's "{:g}", as fairseq's log does (digits < 0: no rounding). */
char *moelm_format_rounded(double value, int digits);

G_END_DECLS

#endif
