/* moelm — reading PyTorch checkpoints (torch.save since PyTorch 1.6: a zip archive holding
 * PREFIX/data.pkl, the pickled object, and PREFIX/data/KEY, one entry per storage) without
 * Python and without executing anything (moelm/pickle.h, moelm/zip.h).
 *
 * Tensors are the pickle's calls of torch._utils._rebuild_tensor_v2(storage, offset, size,
 * stride, ...) (also through _rebuild_parameter and torch._tensor._rebuild_from_type_v2), whose
 * storage is a persistent id ('storage', torch.<Type>Storage, KEY, location, numel). Every
 * element a tensor addresses is checked to lie inside its storage entry before it is read.
 * The pre-1.6 format (a bare pickle stream) is recognised and refused with a hint. */
#ifndef MOELM_TORCH_LOAD_H
#define MOELM_TORCH_LOAD_H

#include <stdint.h>
#include <glib.h>

#include "moelm/pickle.h"
#include "moelm/safetensors.h" /* MoelmDtype */

G_BEGIN_DECLS

#define MOELM_TORCH_MAX_DIMS 8

typedef struct MoelmTorchFile MoelmTorchFile;

MoelmTorchFile *moelm_torch_open(const char *path, GError **error);
/* The same on a private copy of a buffer (tests, fuzzing); `name` is used in messages. */
MoelmTorchFile *moelm_torch_open_bytes(const void *data, gsize len, const char *name, GError **error);
void moelm_torch_close(MoelmTorchFile *f);

const char *moelm_torch_path(const MoelmTorchFile *f);
const MoelmPyObj *moelm_torch_root(const MoelmTorchFile *f);

typedef struct {
  MoelmDtype dtype;
  int ndim;
  int64_t shape[MOELM_TORCH_MAX_DIMS];
  int64_t stride[MOELM_TORCH_MAX_DIMS]; /* in elements */
  int64_t storage_offset;               /* in elements */
  const guint8 *storage;                /* the storage's bytes (little-endian) */
  uint64_t storage_numel;
} MoelmTorchTensor;

/* Whether a value is a tensor call (does not check it). */
gboolean moelm_torch_is_tensor(const MoelmPyObj *o);
/* Interpret a tensor value and check it against its storage. Errors name the file, the
 * pickle offset of the tensor and the problem. */
gboolean moelm_torch_tensor(MoelmTorchFile *f, const MoelmPyObj *o, MoelmTorchTensor *t, GError **error);
uint64_t moelm_torch_tensor_numel(const MoelmTorchTensor *t);
/* Copy the elements out in row-major order as `dtype` (F32, F16 or BF16; from F64, F32, F16 or
 * BF16 — rounding to nearest even when narrowing). FALSE for other dtypes. */
gboolean moelm_torch_tensor_copy(const MoelmTorchTensor *t, MoelmDtype dtype, void *dst, GError **error);

G_END_DECLS

#endif
