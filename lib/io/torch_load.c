/* moelm — PyTorch zip checkpoints: find PREFIX/data.pkl, unpickle it, resolve tensors. */
#include "config.h"

#include <stdio.h>
#include <string.h>

#include "moelm/errors.h"
#include "moelm/half.h"
#include "moelm/torch_load.h"
#include "moelm/zip.h"
#include "io_internal.h"

struct MoelmTorchFile {
  char *path;
  char *prefix; /* "archive/" */
  MoelmZip *zip;
  MoelmPickle *pickle;
};

typedef struct {
  const char *storage;
  MoelmDtype dtype;
} StorageType;

static const StorageType storage_types[] = {
  {"DoubleStorage", MOELM_DT_F64}, {"FloatStorage", MOELM_DT_F32}, {"HalfStorage", MOELM_DT_F16},
  {"BFloat16Storage", MOELM_DT_BF16}, {"LongStorage", MOELM_DT_I64}, {"IntStorage", MOELM_DT_I32},
  {"ShortStorage", MOELM_DT_I16}, {"CharStorage", MOELM_DT_I8}, {"ByteStorage", MOELM_DT_U8},
  {"BoolStorage", MOELM_DT_BOOL},
};

/* The pre-1.6 format starts with a pickled magic number (protocol 2: 0x80 0x02 0x8a 0x0a and
 * the ten bytes of 0x1950a86a20f9469cfc6c). */
static gboolean is_legacy(const guint8 *d, gsize len)
{
  static const guint8 magic[] = {0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19};
  return len >= sizeof magic && memcmp(d, magic, sizeof magic) == 0;
}

static gboolean load(MoelmTorchFile *f, GError **error)
{
  const MoelmZipEntry *pkl = NULL;
  for (guint i = 0; i < moelm_zip_n_entries(f->zip); i++) {
    const MoelmZipEntry *e = moelm_zip_entry(f->zip, i);
    const char *slash = strchr(e->name, '/');
    if (slash && strcmp(slash, "/data.pkl") == 0) {
      if (pkl) {
        g_set_error(error, MOELM_ERROR, MOELM_ERROR_FORMAT, "%s: more than one data.pkl in the archive", f->path);
        return FALSE;
      }
      pkl = e;
    }
  }
  if (pkl == NULL) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_FORMAT, "%s: a zip archive without PREFIX/data.pkl: not a PyTorch "
                "checkpoint", f->path);
    return FALSE;
  }
  f->prefix = g_strndup(pkl->name, (gsize)(strchr(pkl->name, '/') - pkl->name + 1));
  char *bo_name = g_strconcat(f->prefix, "byteorder", NULL);
  const MoelmZipEntry *bo = moelm_zip_find(f->zip, bo_name);
  g_free(bo_name);
  if (bo) {
    const guint8 *b = moelm_zip_read(f->zip, bo, error);
    if (b == NULL)
      return FALSE;
    if (bo->size != 6 || memcmp(b, "little", 6) != 0) {
      g_set_error(error, MOELM_ERROR, MOELM_ERROR_UNSUPPORTED, "%s: %sbyteorder is not 'little'", f->path, f->prefix);
      return FALSE;
    }
  }
  const guint8 *bytes = moelm_zip_read(f->zip, pkl, error);
  if (bytes == NULL)
    return FALSE;
  char *name = g_strdup_printf("%s: %s", f->path, pkl->name);
  f->pickle = moelm_pickle_load(bytes, (gsize)pkl->size, name, error);
  g_free(name);
  return f->pickle != NULL;
}

static MoelmTorchFile *finish(MoelmTorchFile *f, GError **error)
{
  if (f->zip == NULL || !load(f, error)) {
    moelm_torch_close(f);
    return NULL;
  }
  return f;
}

static void legacy_error(const char *path, GError **error)
{
  g_set_error(error, MOELM_ERROR, MOELM_ERROR_UNSUPPORTED,
              "%s: PyTorch's legacy (pre-1.6) checkpoint format is not supported; re-save it with PyTorch >= 1.6: "
              "torch.save(torch.load(F), F)", path);
}

MoelmTorchFile *moelm_torch_open(const char *path, GError **error)
{
  guint8 head[16] = {0};
  gsize n = 0;
  FILE *fp = fopen(path, "rb");
  if (fp) {
    n = fread(head, 1, sizeof head, fp);
    fclose(fp);
    if (is_legacy(head, n)) {
      legacy_error(path, error);
      return NULL;
    }
  }
  MoelmTorchFile *f = g_new0(MoelmTorchFile, 1);
  f->path = g_strdup(path);
  f->zip = moelm_zip_open(path, error);
  return finish(f, error);
}

MoelmTorchFile *moelm_torch_open_bytes(const void *data, gsize len, const char *name, GError **error)
{
  if (is_legacy(data, len)) {
    legacy_error(name, error);
    return NULL;
  }
  MoelmTorchFile *f = g_new0(MoelmTorchFile, 1);
  f->path = g_strdup(name);
  f->zip = moelm_zip_open_bytes(data, len, name, error);
  return finish(f, error);
}

void moelm_torch_close(MoelmTorchFile *f)
{
  if (f == NULL)
    return;
  moelm_pickle_free(f->pickle);
  moelm_zip_close(f->zip);
  g_free(f->prefix);
  g_free(f->path);
  g_free(f);
}

const char *moelm_torch_path(const MoelmTorchFile *f) { return f->path; }
const MoelmPyObj *moelm_torch_root(const MoelmTorchFile *f) { return moelm_pickle_root(f->pickle); }

/* The call that builds a tensor, seen through the wrappers torch adds. */
static const MoelmPyObj *rebuild_call(const MoelmPyObj *o)
{
  for (int hops = 0; o && hops < 4; hops++) {
    if (moelm_py_is_call(o, "torch._utils", "_rebuild_tensor_v2"))
      return o;
    if (moelm_py_is_call(o, "torch._utils", "_rebuild_parameter") && o->args->items->len >= 1)
      o = o->args->items->pdata[0]; /* (data, requires_grad, backward_hooks) */
    else if (moelm_py_is_call(o, "torch._tensor", "_rebuild_from_type_v2") && o->args->items->len >= 3) {
      /* (func, type, args, state): func(*args) */
      const MoelmPyObj *func = o->args->items->pdata[0], *args = o->args->items->pdata[2];
      if (!moelm_py_is_global(func, "torch._utils", "_rebuild_tensor_v2") || args->type != MOELM_PY_TUPLE)
        return NULL;
      return o; /* handled by tensor_args */
    } else
      return NULL;
  }
  return NULL;
}

gboolean moelm_torch_is_tensor(const MoelmPyObj *o) { return rebuild_call(o) != NULL; }

static gboolean terr(const MoelmTorchFile *f, const MoelmPyObj *o, GError **error, const char *fmt, ...)
    G_GNUC_PRINTF(4, 5);
static gboolean terr(const MoelmTorchFile *f, const MoelmPyObj *o, GError **error, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  char *msg = g_strdup_vprintf(fmt, ap);
  va_end(ap);
  g_set_error(error, MOELM_ERROR, MOELM_ERROR_CORRUPT, "%s: byte %" G_GSIZE_FORMAT ": tensor: %s",
              moelm_pickle_name(f->pickle), o ? o->offset : 0, msg);
  g_free(msg);
  return FALSE;
}

static gboolean int_tuple(const MoelmPyObj *o, int64_t *out, int *n)
{
  if (o == NULL || o->type != MOELM_PY_TUPLE || o->items->len > MOELM_TORCH_MAX_DIMS)
    return FALSE;
  for (guint i = 0; i < o->items->len; i++) {
    const MoelmPyObj *v = o->items->pdata[i];
    if (v->type != MOELM_PY_INT || v->big || v->i < 0 || v->i > ((int64_t)1 << 48))
      return FALSE;
    out[i] = v->i;
  }
  *n = (int)o->items->len;
  return TRUE;
}

/* ('storage', torch.<Type>Storage, key, location, numel) → the entry's bytes. */
static gboolean resolve_storage(MoelmTorchFile *f, const MoelmPyObj *o, MoelmTorchTensor *t, GError **error)
{
  if (o == NULL || o->type != MOELM_PY_PERSID)
    return terr(f, o, error, "its storage is not a persistent id");
  const MoelmPyObj *pid = o->args;
  const GPtrArray *it = pid->type == MOELM_PY_TUPLE ? pid->items : NULL;
  if (it == NULL || it->len != 5 || ((MoelmPyObj *)it->pdata[0])->type != MOELM_PY_STR ||
      strcmp(((MoelmPyObj *)it->pdata[0])->s, "storage") != 0)
    return terr(f, o, error, "persistent id is not ('storage', type, key, location, numel)");
  const MoelmPyObj *type = it->pdata[1], *key = it->pdata[2], *numel = it->pdata[4];
  gboolean known = FALSE;
  for (gsize i = 0; type->type == MOELM_PY_GLOBAL && i < G_N_ELEMENTS(storage_types); i++)
    if (strcmp(type->module, "torch") == 0 && strcmp(type->name, storage_types[i].storage) == 0) {
      t->dtype = storage_types[i].dtype;
      known = TRUE;
    }
  if (!known) {
    char *d = moelm_py_describe(type);
    terr(f, o, error, "unsupported storage type %s", d);
    g_free(d);
    return FALSE;
  }
  if (key->type != MOELM_PY_STR || numel->type != MOELM_PY_INT || numel->big || numel->i < 0)
    return terr(f, o, error, "persistent id with a bad key or element count");
  char *entry_name = g_strconcat(f->prefix, "data/", key->s, NULL);
  const MoelmZipEntry *e = moelm_zip_find(f->zip, entry_name);
  char *shown = moelm_printable_name(entry_name);
  g_free(entry_name);
  gboolean ok = FALSE;
  const uint64_t es = moelm_dtype_size(t->dtype);
  if (e == NULL)
    terr(f, o, error, "storage entry '%s' is missing from the archive", shown);
  else if ((uint64_t)numel->i > UINT64_MAX / es || e->size != (uint64_t)numel->i * es)
    terr(f, o, error, "storage entry '%s' holds %" G_GUINT64_FORMAT " bytes, not %" G_GINT64_FORMAT " × %s",
         shown, e->size, numel->i, moelm_dtype_name(t->dtype));
  else if ((t->storage = moelm_zip_read(f->zip, e, error)) != NULL) {
    t->storage_numel = (uint64_t)numel->i;
    ok = TRUE;
  }
  g_free(shown);
  return ok;
}

gboolean moelm_torch_tensor(MoelmTorchFile *f, const MoelmPyObj *o, MoelmTorchTensor *t, GError **error)
{
  memset(t, 0, sizeof *t);
  const MoelmPyObj *call = rebuild_call(o);
  if (call == NULL) {
    char *d = moelm_py_describe(o);
    terr(f, o, error, "expected a tensor, found %s", d);
    g_free(d);
    return FALSE;
  }
  const MoelmPyObj *args = moelm_py_is_call(call, "torch._tensor", "_rebuild_from_type_v2")
                               ? call->args->items->pdata[2]
                               : call->args;
  /* (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata]) */
  if (args->items->len < 4)
    return terr(f, call, error, "_rebuild_tensor_v2 with %u arguments", args->items->len);
  const MoelmPyObj *off = args->items->pdata[1];
  int nd_size = 0, nd_stride = 0;
  if (off->type != MOELM_PY_INT || off->big || off->i < 0 || !int_tuple(args->items->pdata[2], t->shape, &nd_size) ||
      !int_tuple(args->items->pdata[3], t->stride, &nd_stride) || nd_size != nd_stride)
    return terr(f, call, error, "bad offset, size or stride (at most %d dimensions of non-negative sizes)",
                MOELM_TORCH_MAX_DIMS);
  t->ndim = nd_size;
  t->storage_offset = off->i;
  if (!resolve_storage(f, args->items->pdata[0], t, error))
    return FALSE;
  /* The last element addressed: offset + Σ (size-1)·stride, which must be < numel (sizes and
   * strides are below 2^48 and there are at most 8 dims: no overflow in 64 bits... except the
   * products, checked). */
  uint64_t last = (uint64_t)t->storage_offset;
  gboolean empty = FALSE;
  for (int d = 0; d < t->ndim; d++) {
    if (t->shape[d] == 0)
      empty = TRUE;
    uint64_t span;
    if (__builtin_mul_overflow((uint64_t)(t->shape[d] > 0 ? t->shape[d] - 1 : 0), (uint64_t)t->stride[d], &span) ||
        __builtin_add_overflow(last, span, &last))
      return terr(f, call, error, "size × stride overflows");
  }
  if (!empty && last >= t->storage_numel)
    return terr(f, call, error, "addresses element %" G_GUINT64_FORMAT " of a storage of %" G_GUINT64_FORMAT
                " elements", last, t->storage_numel);
  if (!empty && moelm_torch_tensor_numel(t) > ((uint64_t)1 << 40))
    return terr(f, call, error, "more than 2^40 elements");
  return TRUE;
}

uint64_t moelm_torch_tensor_numel(const MoelmTorchTensor *t)
{
  uint64_t n = 1;
  for (int d = 0; d < t->ndim; d++)
    n *= (uint64_t)t->shape[d];
  return n;
}

static float load_float(MoelmDtype dt, const guint8 *p)
{
  switch (dt) {
  case MOELM_DT_F32: {
    float v;
    memcpy(&v, p, 4);
    return v;
  }
  case MOELM_DT_F64: {
    double v;
    memcpy(&v, p, 8);
    return (float)v;
  }
  case MOELM_DT_F16: return moelm_half_to_float((uint16_t)(p[0] | p[1] << 8));
  default: return moelm_bf16_to_float((uint16_t)(p[0] | p[1] << 8));
  }
}

static void store(MoelmDtype dt, guint8 *dst, MoelmDtype src_dt, const guint8 *src)
{
  if (dt == src_dt) {
    memcpy(dst, src, moelm_dtype_size(dt));
    return;
  }
  const float v = load_float(src_dt, src);
  if (dt == MOELM_DT_F32)
    memcpy(dst, &v, 4);
  else {
    const uint16_t h = dt == MOELM_DT_F16 ? moelm_float_to_half(v) : moelm_float_to_bf16(v);
    dst[0] = (guint8)(h & 0xff);
    dst[1] = (guint8)(h >> 8);
  }
}

gboolean moelm_torch_tensor_copy(const MoelmTorchTensor *t, MoelmDtype dtype, void *dst, GError **error)
{
  const gboolean src_ok = t->dtype == MOELM_DT_F32 || t->dtype == MOELM_DT_F64 || t->dtype == MOELM_DT_F16 ||
                          t->dtype == MOELM_DT_BF16;
  if (!src_ok || (dtype != MOELM_DT_F32 && dtype != MOELM_DT_F16 && dtype != MOELM_DT_BF16)) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_UNSUPPORTED, "cannot convert a %s tensor to %s",
                moelm_dtype_name(t->dtype), moelm_dtype_name(dtype));
    return FALSE;
  }
  const uint64_t n = moelm_torch_tensor_numel(t);
  const gsize ss = moelm_dtype_size(t->dtype), ds = moelm_dtype_size(dtype);
  int64_t idx[MOELM_TORCH_MAX_DIMS] = {0};
  guint8 *out = dst;
  for (uint64_t k = 0; k < n; k++) {
    int64_t at = t->storage_offset;
    for (int d = 0; d < t->ndim; d++)
      at += idx[d] * t->stride[d];
    store(dtype, out + k * ds, t->dtype, t->storage + (uint64_t)at * ss);
    for (int d = t->ndim - 1; d >= 0; d--) { /* row-major odometer */
      if (++idx[d] < t->shape[d])
        break;
      idx[d] = 0;
    }
  }
  return TRUE;
}
