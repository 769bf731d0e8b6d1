/* moelm — fairseq's MMIDIDX indexed dataset: an mmap reader that validates every field before
 * use, and a builder that writes temporaries and renames them into place. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <glib/gstdio.h>

#include "data/mapped-file.h"
#include "moelm/errors.h"
#include "moelm/fileio.h"
#include "moelm/indexed_dataset.h"

static const char idx_magic[9] = {'M', 'M', 'I', 'D', 'I', 'D', 'X', 0, 0};
/* magic (9) + u64 version + u8 dtype + u64 N; then int32 sizes[N], int64 pointers[N]. */
#define IDX_HEADER_LEN 26u
#define IDX_BYTES_PER_SEQ 12u

gsize moelm_idx_dtype_size(int code)
{
  switch (code) {
  case MOELM_IDX_UINT8:
  case MOELM_IDX_INT8:
    return 1;
  case MOELM_IDX_INT16:
  case MOELM_IDX_UINT16:
    return 2;
  case MOELM_IDX_INT32:
  case MOELM_IDX_UINT32:
    return 4;
  case MOELM_IDX_INT64:
  case MOELM_IDX_UINT64:
    return 8;
  default:
    return 0;
  }
}

const char *moelm_idx_dtype_name(int code)
{
  switch (code) {
  case MOELM_IDX_UINT8: return "uint8";
  case MOELM_IDX_INT8: return "int8";
  case MOELM_IDX_INT16: return "int16";
  case MOELM_IDX_INT32: return "int32";
  case MOELM_IDX_INT64: return "int64";
  case 6:
  case 7: return "float64";
  case MOELM_IDX_UINT16: return "uint16";
  case MOELM_IDX_UINT32: return "uint32";
  case MOELM_IDX_UINT64: return "uint64";
  default: return "unknown";
  }
}

MoelmIdxDtype moelm_idx_best_dtype(guint vocab_size)
{
  /* fairseq's best_fitting_int_dtype(len(dictionary)). */
  if (vocab_size < 65500)
    return MOELM_IDX_UINT16;
  if (vocab_size < 4294967295u)
    return MOELM_IDX_UINT32;
  return MOELM_IDX_INT64;
}

static uint64_t read_u64(const guchar *p)
{
  uint64_t v;
  memcpy(&v, p, 8);
  return GUINT64_FROM_LE(v);
}

static int32_t read_i32(const guchar *p)
{
  uint32_t v;
  memcpy(&v, p, 4);
  return (int32_t)GUINT32_FROM_LE(v);
}

static int64_t read_i64(const guchar *p) { return (int64_t)read_u64(p); }

/* Token i of a .bin buffer as int64 (values of uint64 above INT64_MAX come out negative and
 * are refused by the range check like negative ones). */
static int64_t token_at(const char *data, int dtype, gsize i)
{
  switch (dtype) {
  case MOELM_IDX_UINT8: return ((const uint8_t *)data)[i];
  case MOELM_IDX_INT8: return ((const int8_t *)data)[i];
  case MOELM_IDX_INT16: return (int16_t)GUINT16_FROM_LE(((const uint16_t *)(const void *)data)[i]);
  case MOELM_IDX_UINT16: return GUINT16_FROM_LE(((const uint16_t *)(const void *)data)[i]);
  case MOELM_IDX_INT32: return (int32_t)GUINT32_FROM_LE(((const uint32_t *)(const void *)data)[i]);
  case MOELM_IDX_UINT32: return GUINT32_FROM_LE(((const uint32_t *)(const void *)data)[i]);
  default: return (int64_t)GUINT64_FROM_LE(((const uint64_t *)(const void *)data)[i]);
  }
}

/* ---- validation ---------------------------------------------------------------------- */

typedef struct {
  int dtype;
  gsize elem;
  uint64_t n;
  int32_t *sizes;      /* (n,) aligned copy */
  uint64_t total_toks; /* sum of sizes */
} ParsedIndex;

static gboolean parse_index(const guchar *idx, gsize idx_len, const char *idx_name, ParsedIndex *out,
                            GError **error)
{
  memset(out, 0, sizeof *out);
  gsize cmp = MIN(idx_len, sizeof idx_magic);
  if (cmp > 0 && memcmp(idx, idx_magic, cmp) != 0) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_FORMAT,
                "%s: not a fairseq mmap index (bad magic, expected \"MMIDIDX\\0\\0\")", idx_name);
    return FALSE;
  }
  if (idx_len < IDX_HEADER_LEN) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_CORRUPT, "%s: truncated: the header needs %u bytes, file has %"
                G_GSIZE_FORMAT, idx_name, IDX_HEADER_LEN, idx_len);
    return FALSE;
  }
  uint64_t version = read_u64(idx + 9);
  if (version != 1) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_FORMAT, "%s: unsupported version %" PRIu64 " (expected 1)", idx_name,
                version);
    return FALSE;
  }
  int dtype = idx[17];
  if (moelm_idx_dtype_size(dtype) == 0) {
    if (dtype == 6 || dtype == 7)
      g_set_error(error, MOELM_ERROR, MOELM_ERROR_FORMAT, "%s: dtype code %d (float64) cannot hold token ids",
                  idx_name, dtype);
    else
      g_set_error(error, MOELM_ERROR, MOELM_ERROR_FORMAT, "%s: unknown dtype code %d", idx_name, dtype);
    return FALSE;
  }
  uint64_t n = read_u64(idx + 18);
  uint64_t expected;
  if (n > (G_MAXUINT64 - IDX_HEADER_LEN) / IDX_BYTES_PER_SEQ) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_CORRUPT, "%s: truncated: %" PRIu64
                " sequences cannot fit in a file of %" G_GSIZE_FORMAT " bytes", idx_name, n, idx_len);
    return FALSE;
  }
  expected = IDX_HEADER_LEN + n * IDX_BYTES_PER_SEQ;
  if (expected != idx_len) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_CORRUPT, "%s: %s: expected %" PRIu64 " bytes for %" PRIu64
                " sequences, file has %" G_GSIZE_FORMAT, idx_name,
                expected > idx_len ? "truncated" : "trailing bytes", expected, n, idx_len);
    return FALSE;
  }
  gsize elem = moelm_idx_dtype_size(dtype);
  const guchar *sizes = idx + IDX_HEADER_LEN;
  const guchar *pointers = sizes + 4 * n;
  int32_t *copy = g_new(int32_t, MAX(n, 1));
  uint64_t cum = 0; /* tokens before sequence i */
  const uint64_t max_toks = (uint64_t)INT64_MAX / elem;
  for (uint64_t i = 0; i < n; i++) {
    int32_t s = read_i32(sizes + 4 * i);
    if (s < 0) {
      g_set_error(error, MOELM_ERROR, MOELM_ERROR_CORRUPT, "%s: sequence %" PRIu64 " has a negative size (%" PRId32
                  ")", idx_name, i, s);
      g_free(copy);
      return FALSE;
    }
    int64_t ptr = read_i64(pointers + 8 * i);
    if (ptr < 0 || (uint64_t)ptr != cum * elem) {
      g_set_error(error, MOELM_ERROR, MOELM_ERROR_CORRUPT, "%s: sequence %" PRIu64 ": pointer %" PRId64
                  " is inconsistent with the sizes (expected %" PRIu64 ")", idx_name, i, ptr, cum * elem);
      g_free(copy);
      return FALSE;
    }
    copy[i] = s;
    if ((uint64_t)s > max_toks - cum) {
      g_set_error(error, MOELM_ERROR, MOELM_ERROR_CORRUPT, "%s: the sizes add up to more bytes than a file can hold",
                  idx_name);
      g_free(copy);
      return FALSE;
    }
    cum += (uint64_t)s;
  }
  out->dtype = dtype;
  out->elem = elem;
  out->n = n;
  out->sizes = copy;
  out->total_toks = cum;
  return TRUE;
}

static gboolean check_bin_len(const ParsedIndex *pi, gsize bin_len, const char *bin_name, GError **error)
{
  uint64_t want = pi->total_toks * pi->elem;
  if (want == bin_len)
    return TRUE;
  g_set_error(error, MOELM_ERROR, MOELM_ERROR_CORRUPT, "%s: %s: the index describes %" PRIu64 " tokens (%" PRIu64
              " bytes of %s), file has %" G_GSIZE_FORMAT " bytes", bin_name,
              want > bin_len ? "truncated" : "too long", pi->total_toks, want, moelm_idx_dtype_name(pi->dtype),
              bin_len);
  return FALSE;
}

gboolean moelm_indexed_dataset_validate_index(const void *idx, gsize idx_len, gsize bin_len, const char *name,
                                              GError **error)
{
  char *idx_name = g_strconcat(name, ".idx", NULL);
  char *bin_name = g_strconcat(name, ".bin", NULL);
  ParsedIndex pi;
  gboolean ok = parse_index(idx, idx_len, idx_name, &pi, error);
  if (ok && bin_len != (gsize)-1)
    ok = check_bin_len(&pi, bin_len, bin_name, error);
  if (pi.sizes != NULL)
    g_free(pi.sizes);
  g_free(idx_name);
  g_free(bin_name);
  return ok;
}

/* ---- reader -------------------------------------------------------------------------- */

struct MoelmIndexedDataset {
  MoelmMappedFile idx; /* kept for the pointers */
  MoelmMappedFile bin;
  ParsedIndex pi;
  int64_t max_token;
};

/* Every token must be a valid int32 id: >= 0 (signed dtypes) and <= INT32_MAX (wide ones). */
static gboolean scan_tokens(MoelmIndexedDataset *ds, const char *bin_name, GError **error)
{
  int64_t max = -1;
  uint64_t n = ds->pi.total_toks;
  for (uint64_t i = 0; i < n; i++) {
    int64_t t = token_at(ds->bin.data, ds->pi.dtype, i);
    if (t < 0 || t > INT32_MAX) {
      if (ds->pi.dtype == MOELM_IDX_UINT64 && t < 0)
        g_set_error(error, MOELM_ERROR, MOELM_ERROR_CORRUPT, "%s: token %" PRIu64 " at position %" PRIu64
                    " is out of range", bin_name, (uint64_t)t, i);
      else
        g_set_error(error, MOELM_ERROR, MOELM_ERROR_CORRUPT, "%s: token %" PRId64 " at position %" PRIu64 " is %s",
                    bin_name, t, i, t < 0 ? "negative" : "out of range");
      return FALSE;
    }
    max = MAX(max, t);
  }
  ds->max_token = max;
  return TRUE;
}

MoelmIndexedDataset *moelm_indexed_dataset_open(const char *prefix, GError **error)
{
  char *idx_name = g_strconcat(prefix, ".idx", NULL);
  char *bin_name = g_strconcat(prefix, ".bin", NULL);
  MoelmIndexedDataset *ds = g_new0(MoelmIndexedDataset, 1);
  gboolean ok = moelm_mapped_file_open(&ds->idx, idx_name, error);
  if (ok)
    ok = parse_index((const guchar *)ds->idx.data, ds->idx.len, idx_name, &ds->pi, error);
  if (ok)
    ok = moelm_mapped_file_open(&ds->bin, bin_name, error);
  if (ok)
    ok = check_bin_len(&ds->pi, ds->bin.len, bin_name, error);
  if (ok)
    ok = scan_tokens(ds, bin_name, error);
  g_free(idx_name);
  g_free(bin_name);
  if (!ok) {
    moelm_indexed_dataset_close(ds);
    return NULL;
  }
  return ds;
}

void moelm_indexed_dataset_close(MoelmIndexedDataset *ds)
{
  if (ds == NULL)
    return;
  moelm_mapped_file_close(&ds->idx);
  moelm_mapped_file_close(&ds->bin);
  g_free(ds->pi.sizes);
  g_free(ds);
}

gsize moelm_indexed_dataset_len(const MoelmIndexedDataset *ds) { return (gsize)ds->pi.n; }
int moelm_indexed_dataset_dtype(const MoelmIndexedDataset *ds) { return ds->pi.dtype; }
const int32_t *moelm_indexed_dataset_sizes(const MoelmIndexedDataset *ds) { return ds->pi.sizes; }
int64_t moelm_indexed_dataset_num_tokens(const MoelmIndexedDataset *ds) { return (int64_t)ds->pi.total_toks; }
int64_t moelm_indexed_dataset_max_token(const MoelmIndexedDataset *ds) { return ds->max_token; }

void moelm_indexed_dataset_read_tokens(const MoelmIndexedDataset *ds, int64_t start, int64_t end, int32_t *out)
{
  g_return_if_fail(start >= 0 && start <= end && (uint64_t)end <= ds->pi.total_toks);
  const char *d = ds->bin.data;
  gsize n = (gsize)(end - start), s = (gsize)start;
  switch (ds->pi.dtype) {
  case MOELM_IDX_UINT16: {
    const uint16_t *p = (const uint16_t *)(const void *)d + s;
    for (gsize i = 0; i < n; i++)
      out[i] = GUINT16_FROM_LE(p[i]);
    break;
  }
  case MOELM_IDX_INT32:
  case MOELM_IDX_UINT32: {
    const uint32_t *p = (const uint32_t *)(const void *)d + s;
    for (gsize i = 0; i < n; i++)
      out[i] = (int32_t)GUINT32_FROM_LE(p[i]);
    break;
  }
  default: /* validated at open: every value fits */
    for (gsize i = 0; i < n; i++)
      out[i] = (int32_t)token_at(d, ds->pi.dtype, s + i);
    break;
  }
}

void moelm_indexed_dataset_get(const MoelmIndexedDataset *ds, gsize i, int32_t *out)
{
  g_return_if_fail(i < ds->pi.n);
  const guchar *pointers = (const guchar *)ds->idx.data + IDX_HEADER_LEN + 4 * ds->pi.n;
  int64_t start = read_i64(pointers + 8 * i) / (int64_t)ds->pi.elem;
  moelm_indexed_dataset_read_tokens(ds, start, start + ds->pi.sizes[i], out);
}

/* ---- builder ------------------------------------------------------------------------- */

struct MoelmIndexedDatasetBuilder {
  char *prefix;
  char *bin_tmp;
  FILE *bin;
  int dtype;
  gsize elem;
  GArray *sizes;     /* int32_t */
  uint64_t n_tokens; /* written so far */
  guchar *buf;       /* conversion buffer */
  gsize buf_cap;
};

MoelmIndexedDatasetBuilder *moelm_indexed_dataset_builder_new(const char *prefix, MoelmIdxDtype dtype,
                                                              GError **error)
{
  if (moelm_idx_dtype_size(dtype) == 0) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG, "%s: dtype code %d cannot hold token ids", prefix,
                (int)dtype);
    return NULL;
  }
  char *bin_path = g_strconcat(prefix, ".bin", NULL);
  int fd;
  char *tmp = moelm_create_temp(bin_path, &fd, error);
  g_free(bin_path);
  if (tmp == NULL)
    return NULL;
  MoelmIndexedDatasetBuilder *b = g_new0(MoelmIndexedDatasetBuilder, 1);
  b->prefix = g_strdup(prefix);
  b->bin_tmp = tmp;
  b->bin = fdopen(fd, "wb");
  setvbuf(b->bin, NULL, _IOFBF, 1 << 20);
  b->dtype = dtype;
  b->elem = moelm_idx_dtype_size(dtype);
  b->sizes = g_array_new(FALSE, FALSE, sizeof(int32_t));
  return b;
}

static gboolean write_bin(MoelmIndexedDatasetBuilder *b, const void *data, gsize len, GError **error)
{
  if (len > 0 && fwrite(data, 1, len, b->bin) != len) {
    char *bin_path = g_strconcat(b->prefix, ".bin", NULL);
    moelm_set_error_errno(error, errno, bin_path, "write failed");
    g_free(bin_path);
    return FALSE;
  }
  return TRUE;
}

static int64_t dtype_max(int dtype)
{
  switch (dtype) {
  case MOELM_IDX_UINT8: return UINT8_MAX;
  case MOELM_IDX_INT8: return INT8_MAX;
  case MOELM_IDX_INT16: return INT16_MAX;
  case MOELM_IDX_UINT16: return UINT16_MAX;
  default: return INT32_MAX; /* every int32 token fits the wider types */
  }
}

gboolean moelm_indexed_dataset_builder_add(MoelmIndexedDatasetBuilder *b, const int32_t *tokens, gsize n,
                                           GError **error)
{
  if (n > INT32_MAX || n > (uint64_t)INT64_MAX / b->elem - b->n_tokens) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG, "%s: sequence of %" G_GSIZE_FORMAT
                " tokens is too long for the index", b->prefix, n);
    return FALSE;
  }
  gsize bytes = n * b->elem;
  if (bytes > b->buf_cap) {
    b->buf_cap = MAX(bytes, 2 * b->buf_cap);
    b->buf = g_realloc(b->buf, b->buf_cap);
  }
  const int64_t max = dtype_max(b->dtype);
  for (gsize i = 0; i < n; i++) {
    int32_t t = tokens[i];
    if (t < 0 || t > max) {
      g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG, "%s: token %" PRId32 " does not fit dtype %s",
                  b->prefix, t, moelm_idx_dtype_name(b->dtype));
      return FALSE;
    }
    guchar *p = b->buf + i * b->elem;
    switch (b->elem) {
    case 1: p[0] = (guchar)t; break;
    case 2: { uint16_t v = GUINT16_TO_LE((uint16_t)t); memcpy(p, &v, 2); break; }
    case 4: { uint32_t v = GUINT32_TO_LE((uint32_t)t); memcpy(p, &v, 4); break; }
    default: { uint64_t v = GUINT64_TO_LE((uint64_t)t); memcpy(p, &v, 8); break; }
    }
  }
  if (!write_bin(b, b->buf, bytes, error))
    return FALSE;
  int32_t size = (int32_t)n;
  g_array_append_val(b->sizes, size);
  b->n_tokens += n;
  return TRUE;
}

gboolean moelm_indexed_dataset_builder_merge_file(MoelmIndexedDatasetBuilder *b, const char *other_prefix,
                                                  GError **error)
{
  MoelmIndexedDataset *other = moelm_indexed_dataset_open(other_prefix, error);
  if (other == NULL)
    return FALSE;
  gboolean ok = TRUE;
  if (other->pi.dtype != b->dtype) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_MISMATCH, "%s.idx: dtype %s differs from %s of %s", other_prefix,
                moelm_idx_dtype_name(other->pi.dtype), moelm_idx_dtype_name(b->dtype), b->prefix);
    ok = FALSE;
  } else if (other->pi.total_toks > (uint64_t)INT64_MAX / b->elem - b->n_tokens) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG, "%s: merging %s makes the data too long for the index",
                b->prefix, other_prefix);
    ok = FALSE;
  } else {
    ok = write_bin(b, other->bin.data, other->bin.len, error);
    if (ok) {
      g_array_append_vals(b->sizes, other->pi.sizes, (guint)other->pi.n);
      b->n_tokens += other->pi.total_toks;
    }
  }
  moelm_indexed_dataset_close(other);
  return ok;
}

static void builder_free(MoelmIndexedDatasetBuilder *b)
{
  if (b->bin != NULL)
    fclose(b->bin);
  if (b->bin_tmp != NULL)
    g_unlink(b->bin_tmp);
  g_free(b->bin_tmp);
  g_free(b->prefix);
  g_array_unref(b->sizes);
  g_free(b->buf);
  g_free(b);
}

void moelm_indexed_dataset_builder_abort(MoelmIndexedDatasetBuilder *b)
{
  if (b != NULL)
    builder_free(b);
}

/* The .idx bytes for the sizes written so far. */
static guchar *build_index(const MoelmIndexedDatasetBuilder *b, gsize *len)
{
  uint64_t n = b->sizes->len;
  *len = IDX_HEADER_LEN + IDX_BYTES_PER_SEQ * n;
  guchar *out = g_malloc(*len);
  memcpy(out, idx_magic, sizeof idx_magic);
  uint64_t v = GUINT64_TO_LE(1);
  memcpy(out + 9, &v, 8);
  out[17] = (guchar)b->dtype;
  v = GUINT64_TO_LE(n);
  memcpy(out + 18, &v, 8);
  guchar *sizes = out + IDX_HEADER_LEN, *pointers = sizes + 4 * n;
  uint64_t addr = 0;
  for (uint64_t i = 0; i < n; i++) {
    int32_t s = g_array_index(b->sizes, int32_t, i);
    uint32_t s_le = GUINT32_TO_LE((uint32_t)s);
    uint64_t p_le = GUINT64_TO_LE(addr);
    memcpy(sizes + 4 * i, &s_le, 4);
    memcpy(pointers + 8 * i, &p_le, 8);
    addr += (uint64_t)s * b->elem;
  }
  return out;
}

gboolean moelm_indexed_dataset_builder_finish(MoelmIndexedDatasetBuilder *b, GError **error)
{
  char *bin_path = g_strconcat(b->prefix, ".bin", NULL);
  char *idx_path = g_strconcat(b->prefix, ".idx", NULL);
  char *idx_tmp = NULL;
  int idx_fd = -1;
  gboolean ok = TRUE;

  /* The .bin: flush, sync, close. */
  if (fflush(b->bin) != 0 || fsync(fileno(b->bin)) != 0) {
    moelm_set_error_errno(error, errno, bin_path, "cannot write");
    ok = FALSE;
  }
  if (fclose(b->bin) != 0 && ok) {
    moelm_set_error_errno(error, errno, bin_path, "close failed");
    ok = FALSE;
  }
  b->bin = NULL;

  /* The .idx to a temporary of its own, synced before either file is renamed. */
  if (ok)
    ok = (idx_tmp = moelm_create_temp(idx_path, &idx_fd, error)) != NULL;
  if (ok) {
    gsize len;
    guchar *data = build_index(b, &len);
    ok = moelm_write_all(idx_fd, data, len, idx_path, error);
    g_free(data);
    if (ok && fsync(idx_fd) != 0) {
      moelm_set_error_errno(error, errno, idx_path, "fsync failed");
      ok = FALSE;
    }
  }
  if (idx_fd >= 0 && close(idx_fd) != 0 && ok) {
    moelm_set_error_errno(error, errno, idx_path, "close failed");
    ok = FALSE;
  }
  if (ok && (ok = moelm_commit_file(b->bin_tmp, bin_path, error))) {
    g_clear_pointer(&b->bin_tmp, g_free); /* renamed: nothing left to remove */
    ok = moelm_commit_file(idx_tmp, idx_path, error);
    g_clear_pointer(&idx_tmp, g_free);
    if (!ok) /* never leave a new .bin beside an old .idx */
      g_unlink(bin_path);
  }
  if (idx_tmp != NULL)
    g_unlink(idx_tmp);
  g_free(idx_tmp);
  g_free(bin_path);
  g_free(idx_path);
  builder_free(b);
  return ok;
}
