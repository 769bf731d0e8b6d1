/* moelm — safetensors dtype helpers: names to types, tensor sizes, printable names. */
#include "config.h"

#include <string.h>

#include "moelm/errors.h"
#include "moelm/safetensors.h"
#include "io_internal.h"

gboolean moelm_dtype_from_name(const char *name, MoelmDtype *out)
{
  for (int i = 0; moelm_dtype_is_valid(i); i++) {
    if (strcmp(moelm_dtype_name((MoelmDtype)i), name) == 0) {
      *out = (MoelmDtype)i;
      return TRUE;
    }
  }
  return FALSE;
}

gboolean moelm_tensor_nbytes(MoelmDtype dt, int ndim, const int64_t *shape, uint64_t *out)
{
  uint64_t n = moelm_dtype_size(dt);
  for (int i = 0; i < ndim; i++) {
    if (shape[i] < 0)
      return FALSE;
    uint64_t d = (uint64_t)shape[i];
    if (d != 0 && n > UINT64_MAX / d)
      return FALSE;
    n *= d;
  }
  *out = n;
  return TRUE;
}

char *moelm_printable_name(const char *s)
{
  return moelm_escape_controls(s, 120); /* names come from files: one line, bounded length */
}
