/* moelm — safetensors dtype names and element sizes, as the format spells them. */
#include "config.h"

#include <string.h>

#include "moelm/safetensors.h"
#include "io_internal.h"

typedef struct {
  const char *name;
  gsize size;
} DtypeDesc;

/* Indexed by MoelmDtype. */
static const DtypeDesc dtypes[] = {
  [MOELM_DT_F32] = {"F32", 4},  [MOELM_DT_F16] = {"F16", 2}, [MOELM_DT_BF16] = {"BF16", 2},
  [MOELM_DT_F64] = {"F64", 8},  [MOELM_DT_I64] = {"I64", 8}, [MOELM_DT_I32] = {"I32", 4},
  [MOELM_DT_I16] = {"I16", 2},  [MOELM_DT_I8] = {"I8", 1},   [MOELM_DT_U64] = {"U64", 8},
  [MOELM_DT_U32] = {"U32", 4},  [MOELM_DT_U16] = {"U16", 2}, [MOELM_DT_U8] = {"U8", 1},
  [MOELM_DT_BOOL] = {"BOOL", 1},
};

gboolean moelm_dtype_is_valid(int dt) { return dt >= 0 && dt < (int)G_N_ELEMENTS(dtypes); }

const char *moelm_dtype_name(MoelmDtype dt) { return moelm_dtype_is_valid((int)dt) ? dtypes[dt].name : "?"; }

gsize moelm_dtype_size(MoelmDtype dt) { return moelm_dtype_is_valid((int)dt) ? dtypes[dt].size : 0; }

gboolean moelm_dtype_from_name(const char *name, MoelmDtype *out)
{
  for (gsize i = 0; i < G_N_ELEMENTS(dtypes); i++) {
    if (strcmp(dtypes[i].name, name) == 0) {
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
  /* Names come from files: keep messages on one line and of bounded length. */
  enum { MAX_BYTES = 120 };
  GString *out = g_string_new(NULL);
  gsize n = 0;
  for (const unsigned char *p = (const unsigned char *)s; *p; p++, n++) {
    if (n >= MAX_BYTES && (*p & 0xc0) != 0x80) {
      g_string_append(out, "...");
      break;
    }
    if (*p < 0x20 || *p == 0x7f)
      g_string_append_printf(out, "\\x%02x", *p);
    else
      g_string_append_c(out, (char)*p);
  }
  return g_string_free(out, FALSE);
}
