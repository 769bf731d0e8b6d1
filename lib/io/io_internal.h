/* moelm — helpers shared by the safetensors reader and writer (not installed). */
#ifndef MOELM_IO_INTERNAL_H
#define MOELM_IO_INTERNAL_H

#include <stdint.h>
#include <glib.h>

#include "moelm/safetensors.h"

G_BEGIN_DECLS

/* The format's upper bound on the JSON header (the reference implementation's limit). */
#define MOELM_ST_MAX_HEADER ((uint64_t)100000000)

/* "F32" → MOELM_DT_F32 etc.; FALSE for a name the format has but moelm does not (F8_*). */
gboolean moelm_dtype_from_name(const char *name, MoelmDtype *out);
/* prod(shape) × element size; FALSE on a negative dimension or 64-bit overflow. */
gboolean moelm_tensor_nbytes(MoelmDtype dt, int ndim, const int64_t *shape, uint64_t *out);
/* A copy of a (UTF-8) name fit for a one-line message: control bytes as \xNN, cut at ~120
 * bytes (g_free). */
char *moelm_printable_name(const char *s);

G_END_DECLS

#endif
