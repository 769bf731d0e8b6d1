/* moelm — safetensors writer: the header is built in memory, the tensor data is streamed
 * from the caller's buffers into a temp file that is fsynced and renamed over the target. */
#include "config.h"

#include <errno.h>
#include <stdarg.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <glib/gstdio.h>
#include <json-glib/json-glib.h>

#include "moelm/errors.h"
#include "moelm/fileio.h"
#include "moelm/json.h"
#include "moelm/safetensors.h"
#include "io_internal.h"

typedef struct {
  char *name;
  MoelmDtype dtype;
  int ndim;
  int64_t shape[MOELM_ST_MAX_DIMS];
  const void *data; /* borrowed until write() returns */
  uint64_t nbytes;
} WriterEntry;

struct MoelmSafetensorsWriter {
  GPtrArray *entries;   /* WriterEntry*, in the order added: that is the file order */
  GHashTable *names;    /* set of the entries' names */
  GPtrArray *meta_keys; /* char*, in the order first set */
  GHashTable *metadata; /* key → value */
};

static void entry_free(gpointer p)
{
  WriterEntry *e = p;
  g_free(e->name);
  g_free(e);
}

MoelmSafetensorsWriter *moelm_safetensors_writer_new(void)
{
  MoelmSafetensorsWriter *w = g_new0(MoelmSafetensorsWriter, 1);
  w->entries = g_ptr_array_new_with_free_func(entry_free);
  w->names = g_hash_table_new(g_str_hash, g_str_equal);
  w->meta_keys = g_ptr_array_new_with_free_func(g_free);
  w->metadata = g_hash_table_new_full(g_str_hash, g_str_equal, NULL, g_free);
  return w;
}

void moelm_safetensors_writer_free(MoelmSafetensorsWriter *w)
{
  if (w == NULL)
    return;
  g_hash_table_unref(w->names);
  g_ptr_array_unref(w->entries);
  g_hash_table_unref(w->metadata); /* keys belong to meta_keys */
  g_ptr_array_unref(w->meta_keys);
  g_free(w);
}

static gboolean add_error(GError **error, const char *name, const char *fmt, ...) G_GNUC_PRINTF(3, 4);

static gboolean add_error(GError **error, const char *name, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  char *msg = g_strdup_vprintf(fmt, ap);
  va_end(ap);
  char *shown = name ? moelm_printable_name(name) : g_strdup("(null)");
  g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG, "safetensors writer: tensor '%s': %s", shown, msg);
  g_free(shown);
  g_free(msg);
  return FALSE;
}

gboolean moelm_safetensors_writer_add(MoelmSafetensorsWriter *w, const char *name, MoelmDtype dtype, int ndim,
                                      const int64_t *shape, const void *data, GError **error)
{
  if (name == NULL || !g_utf8_validate(name, -1, NULL))
    return add_error(error, NULL, "the name is missing or not valid UTF-8");
  if (strcmp(name, "__metadata__") == 0)
    return add_error(error, name, "the name is reserved for the metadata");
  if (g_hash_table_contains(w->names, name))
    return add_error(error, name, "a tensor of that name was already added");
  if (!moelm_dtype_is_valid((int)dtype))
    return add_error(error, name, "unknown dtype %d", (int)dtype);
  if (ndim < 0 || ndim > MOELM_ST_MAX_DIMS || (ndim > 0 && shape == NULL))
    return add_error(error, name, "%d dimensions (0 to %d allowed)", ndim, MOELM_ST_MAX_DIMS);
  uint64_t nbytes;
  if (!moelm_tensor_nbytes(dtype, ndim, shape, &nbytes) || nbytes > (uint64_t)G_MAXINT64)
    return add_error(error, name, "a dimension is negative or the size overflows");
  if (nbytes > 0 && data == NULL)
    return add_error(error, name, "no data for %" G_GUINT64_FORMAT " bytes", nbytes);

  WriterEntry *e = g_new0(WriterEntry, 1);
  e->name = g_strdup(name);
  e->dtype = dtype;
  e->ndim = ndim;
  for (int i = 0; i < ndim; i++)
    e->shape[i] = shape[i];
  e->data = data;
  e->nbytes = nbytes;
  g_ptr_array_add(w->entries, e);
  g_hash_table_add(w->names, e->name);
  return TRUE;
}

void moelm_safetensors_writer_set_metadata(MoelmSafetensorsWriter *w, const char *key, const char *value)
{
  char *k = g_hash_table_lookup(w->metadata, key) ? NULL : g_strdup(key);
  if (k != NULL) {
    g_ptr_array_add(w->meta_keys, k);
    g_hash_table_insert(w->metadata, k, g_strdup(value));
  } else {
    /* Replace the value, keep the key's first position. */
    gpointer orig_key;
    g_hash_table_lookup_extended(w->metadata, key, &orig_key, NULL);
    g_hash_table_insert(w->metadata, orig_key, g_strdup(value));
  }
}

/* The JSON header, unpadded: "__metadata__" first (as the reference implementation writes
 * it), then the tensors in the order added with contiguous offsets. */
static char *build_header(const MoelmSafetensorsWriter *w, const char *path, gsize *len, GError **error)
{
  for (guint i = 0; i < w->meta_keys->len; i++) {
    const char *k = w->meta_keys->pdata[i];
    if (!g_utf8_validate(k, -1, NULL) || !g_utf8_validate(g_hash_table_lookup(w->metadata, k), -1, NULL)) {
      g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG, "%s: a __metadata__ key or value is not valid UTF-8",
                  path);
      return NULL;
    }
  }
  JsonBuilder *b = json_builder_new();
  json_builder_begin_object(b);
  if (w->meta_keys->len > 0) {
    json_builder_set_member_name(b, "__metadata__");
    json_builder_begin_object(b);
    for (guint i = 0; i < w->meta_keys->len; i++) {
      const char *k = w->meta_keys->pdata[i];
      json_builder_set_member_name(b, k);
      json_builder_add_string_value(b, g_hash_table_lookup(w->metadata, k));
    }
    json_builder_end_object(b);
  }
  uint64_t offset = 0;
  for (guint i = 0; i < w->entries->len; i++) {
    const WriterEntry *e = w->entries->pdata[i];
    if (e->nbytes > (uint64_t)G_MAXINT64 - offset) {
      g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG, "%s: the tensors' total size overflows", path);
      g_object_unref(b);
      return NULL;
    }
    json_builder_set_member_name(b, e->name);
    json_builder_begin_object(b);
    json_builder_set_member_name(b, "dtype");
    json_builder_add_string_value(b, moelm_dtype_name(e->dtype));
    json_builder_set_member_name(b, "shape");
    json_builder_begin_array(b);
    for (int d = 0; d < e->ndim; d++)
      json_builder_add_int_value(b, e->shape[d]);
    json_builder_end_array(b);
    json_builder_set_member_name(b, "data_offsets");
    json_builder_begin_array(b);
    json_builder_add_int_value(b, (gint64)offset);
    json_builder_add_int_value(b, (gint64)(offset + e->nbytes));
    json_builder_end_array(b);
    json_builder_end_object(b);
    offset += e->nbytes;
  }
  json_builder_end_object(b);

  JsonNode *root = json_builder_get_root(b);
  char *text = moelm_json_to_string(root);
  *len = strlen(text);
  json_node_unref(root);
  g_object_unref(b);
  return text;
}

gboolean moelm_safetensors_writer_write(MoelmSafetensorsWriter *w, const char *path, GError **error)
{
  gsize hlen;
  char *header = build_header(w, path, &hlen, error);
  if (header == NULL)
    return FALSE;
  /* Pad with spaces so the data section starts 8-byte aligned (as safetensors does). */
  gsize padded = (hlen + 7) / 8 * 8;
  GString *head = g_string_sized_new(8 + padded);
  for (int i = 0; i < 8; i++)
    g_string_append_c(head, (char)(((uint64_t)padded >> (8 * i)) & 0xff));
  g_string_append_len(head, header, (gssize)hlen);
  for (gsize i = hlen; i < padded; i++)
    g_string_append_c(head, ' ');
  g_free(header);

  int fd = -1;
  char *tmp = moelm_create_temp(path, &fd, error);
  gboolean ok = tmp != NULL;
  if (ok)
    ok = moelm_write_all(fd, head->str, head->len, path, error);
  for (guint i = 0; ok && i < w->entries->len; i++) {
    const WriterEntry *e = w->entries->pdata[i];
    ok = moelm_write_all(fd, e->data, e->nbytes, path, error);
  }
  if (ok && fsync(fd) != 0)
    ok = (moelm_set_error_errno(error, errno, path, "fsync failed"), FALSE);
  if (fd >= 0 && close(fd) != 0 && ok)
    ok = (moelm_set_error_errno(error, errno, path, "close failed"), FALSE);
  if (ok)
    ok = moelm_commit_file(tmp, path, error); /* removes tmp itself on failure */
  else if (tmp != NULL)
    g_unlink(tmp);
  g_free(tmp);
  g_string_free(head, TRUE);
  return ok;
}
