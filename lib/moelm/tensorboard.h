/* moelm — TensorBoard event files (--tensorboard-logdir): scalars written by the format's
 * specification (TFRecord framing with masked CRC-32C, Event/Summary protocol buffers encoded
 * by hand), and read back the same way (tests, tools). TensorBoard reads the files directly. */
#ifndef MOELM_TENSORBOARD_H
#define MOELM_TENSORBOARD_H

#include <stddef.h>
#include <stdint.h>
#include <glib.h>

G_BEGIN_DECLS

typedef struct MoelmTbWriter MoelmTbWriter;

/* Create DIR (and its parents) and DIR/events.out.tfevents.<unix time>.<host> with the
 * brain.Event:2 header record. */
MoelmTbWriter *moelm_tb_writer_open(const char *dir, GError **error);
const char *moelm_tb_writer_path(const MoelmTbWriter *w);
/* One scalar event (the value stored as float, TensorBoard's simple_value). */
gboolean moelm_tb_add_scalar(MoelmTbWriter *w, const char *tag, double value, int64_t step, GError **error);
gboolean moelm_tb_flush(MoelmTbWriter *w, GError **error);
void moelm_tb_writer_close(MoelmTbWriter *w); /* NULL is fine */

/* Read a file, checking every record's framing and CRCs; calls fn for each scalar. */
typedef void (*MoelmTbScalarFunc)(void *data, const char *tag, float value, int64_t step, double wall_time);
gboolean moelm_tb_read(const char *path, MoelmTbScalarFunc fn, void *data, GError **error);

/* CRC-32C (Castagnoli) of n bytes. */
uint32_t moelm_crc32c(const void *data, size_t n);

G_END_DECLS

#endif
