/* moelm — safetensors files (checkpoints): 8-byte little-endian header length, a JSON
 * header {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {str: str}},
 * then the data. The reader checks everything: header length bound and JSON validity,
 * known dtypes, shape × dtype size == end - begin, offsets contiguous from 0 and in
 * order of position without overlap or gaps, covering the data exactly to the end of the
 * file, no duplicate names. The writer writes a temp file, fsyncs and renames. */
#ifndef MOELM_SAFETENSORS_H
#define MOELM_SAFETENSORS_H

#include <stdint.h>
#include <glib.h>

#include "moelm/dtype.h"

G_BEGIN_DECLS

#define MOELM_ST_MAX_DIMS 8

typedef struct {
  const char *name;
  MoelmDtype dtype;
  int ndim;
  int64_t shape[MOELM_ST_MAX_DIMS];
  uint64_t begin, end; /* byte offsets within the data section */
} MoelmTensorInfo;

typedef struct MoelmSafetensors MoelmSafetensors;

/* mmap and validate a file. */
MoelmSafetensors *moelm_safetensors_open(const char *path, GError **error);
/* Validate and wrap bytes (copied); `name` is used in messages (for fuzzing/tests). */
MoelmSafetensors *moelm_safetensors_open_bytes(const void *data, gsize len, const char *name, GError **error);
void moelm_safetensors_close(MoelmSafetensors *st);

gsize moelm_safetensors_n_tensors(const MoelmSafetensors *st);
const MoelmTensorInfo *moelm_safetensors_tensor(const MoelmSafetensors *st, gsize i); /* in file order */
const MoelmTensorInfo *moelm_safetensors_find(const MoelmSafetensors *st, const char *name);
const void *moelm_safetensors_data(const MoelmSafetensors *st, const MoelmTensorInfo *info);
/* __metadata__ value or NULL. */
const char *moelm_safetensors_metadata(const MoelmSafetensors *st, const char *key);
/* All metadata keys (NULL-terminated, owned by st). */
const char *const *moelm_safetensors_metadata_keys(const MoelmSafetensors *st);

typedef struct MoelmSafetensorsWriter MoelmSafetensorsWriter;

MoelmSafetensorsWriter *moelm_safetensors_writer_new(void);
void moelm_safetensors_writer_free(MoelmSafetensorsWriter *w);
/* Add a tensor; `data` is referenced (not copied) until write() returns. Names must be unique. */
gboolean moelm_safetensors_writer_add(MoelmSafetensorsWriter *w, const char *name, MoelmDtype dtype, int ndim,
                                      const int64_t *shape, const void *data, GError **error);
void moelm_safetensors_writer_set_metadata(MoelmSafetensorsWriter *w, const char *key, const char *value);
/* Write atomically: PATH.tmp-XXXXXX, fsync, rename over PATH, fsync the directory. */
gboolean moelm_safetensors_writer_write(MoelmSafetensorsWriter *w, const char *path, GError **error);

G_END_DECLS

#endif
