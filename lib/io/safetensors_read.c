/* moelm — safetensors reader: mmap (or a private copy), then validate every byte of the
 * structure before anything is handed out. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <json-glib/json-glib.h>

#include "moelm/errors.h"
#include "moelm/fileio.h"
#include "moelm/safetensors.h"
#include "io_internal.h"
#include "json_strict.h"

/* Our headers are 3 deep (root → entry → shape); anything far deeper is not a header. */
#define MAX_JSON_DEPTH 16

struct MoelmSafetensors {
  char *name;                /* path or caller's name, for messages */
  const guint8 *bytes;       /* the whole file */
  gsize len;
  void *map;                 /* mmap base (open) or NULL */
  guint8 *copy;              /* private copy (open_bytes) or NULL */
  const guint8 *data;        /* data section: bytes + 8 + header length */
  uint64_t data_len;
  MoelmTensorInfo *tensors;  /* (n_tensors,) sorted by begin: file order */
  gsize n_tensors;
  GHashTable *by_name;       /* name → MoelmTensorInfo* */
  char **meta_keys;          /* NULL-terminated, header order */
  GHashTable *metadata;      /* key → value (both owned here) */
};

static gboolean st_error(const MoelmSafetensors *st, GError **error, MoelmError code, const char *fmt, ...)
  G_GNUC_PRINTF(4, 5);

static gboolean st_error(const MoelmSafetensors *st, GError **error, MoelmError code, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  char *msg = g_strdup_vprintf(fmt, ap);
  va_end(ap);
  g_set_error(error, MOELM_ERROR, code, "%s: %s", st->name, msg);
  g_free(msg);
  return FALSE;
}

static gboolean tensor_error(const MoelmSafetensors *st, GError **error, const char *tensor, const char *fmt, ...)
  G_GNUC_PRINTF(4, 5);

static gboolean tensor_error(const MoelmSafetensors *st, GError **error, const char *tensor, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  char *msg = g_strdup_vprintf(fmt, ap);
  va_end(ap);
  char *shown = moelm_printable_name(tensor);
  g_set_error(error, MOELM_ERROR, MOELM_ERROR_CORRUPT, "%s: tensor '%s': %s", st->name, shown, msg);
  g_free(shown);
  g_free(msg);
  return FALSE;
}

/* ---- duplicate member names ------------------------------------------------
 * json-glib keeps the last of two equal member names without a word. The parser's
 * "object-member" signal fires once per parsed member, so a per-object set of the names
 * seen so far finds every duplicate, at any depth. */

typedef struct {
  GHashTable *seen; /* JsonObject* → set of member names */
  char *duplicate;  /* first duplicated name, or NULL */
} DuplicateCheck;

static void on_object_member(JsonParser *parser, JsonObject *object, const char *member, gpointer user_data)
{
  DuplicateCheck *dc = user_data;
  GHashTable *names = g_hash_table_lookup(dc->seen, object);
  if (names == NULL) {
    names = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    g_hash_table_insert(dc->seen, object, names);
  }
  if (!g_hash_table_add(names, g_strdup(member)) && dc->duplicate == NULL)
    dc->duplicate = g_strdup(member);
}

/* ---- header entries ------------------------------------------------------------ */

static gboolean node_int(JsonNode *node, int64_t *out)
{
  if (node == NULL || !JSON_NODE_HOLDS_VALUE(node) || json_node_get_value_type(node) != G_TYPE_INT64)
    return FALSE;
  *out = json_node_get_int(node);
  return TRUE;
}

static const char *node_string(JsonNode *node)
{
  if (node == NULL || !JSON_NODE_HOLDS_VALUE(node) || json_node_get_value_type(node) != G_TYPE_STRING)
    return NULL;
  return json_node_get_string(node);
}

static gboolean parse_shape(const MoelmSafetensors *st, const char *name, JsonNode *node, MoelmTensorInfo *info,
                            GError **error)
{
  if (!JSON_NODE_HOLDS_ARRAY(node))
    return tensor_error(st, error, name, "'shape' is not an array");
  JsonArray *arr = json_node_get_array(node);
  guint n = json_array_get_length(arr);
  if (n > MOELM_ST_MAX_DIMS)
    return tensor_error(st, error, name, "shape has %u dimensions, more than %d", n, MOELM_ST_MAX_DIMS);
  info->ndim = (int)n;
  for (guint i = 0; i < n; i++) {
    if (!node_int(json_array_get_element(arr, i), &info->shape[i]) || info->shape[i] < 0)
      return tensor_error(st, error, name, "shape[%u] is not a non-negative integer", i);
  }
  return TRUE;
}

static gboolean parse_offsets(const MoelmSafetensors *st, const char *name, JsonNode *node, MoelmTensorInfo *info,
                              GError **error)
{
  int64_t b, e;
  if (!JSON_NODE_HOLDS_ARRAY(node) || json_array_get_length(json_node_get_array(node)) != 2)
    return tensor_error(st, error, name, "'data_offsets' is not an array [begin, end]");
  JsonArray *arr = json_node_get_array(node);
  if (!node_int(json_array_get_element(arr, 0), &b) || !node_int(json_array_get_element(arr, 1), &e) || b < 0 ||
      e < 0)
    return tensor_error(st, error, name, "'data_offsets' are not non-negative integers");
  if (e < b)
    return tensor_error(st, error, name, "data_offsets [%" G_GINT64_FORMAT ", %" G_GINT64_FORMAT "] end before they begin",
                        b, e);
  info->begin = (uint64_t)b;
  info->end = (uint64_t)e;
  return TRUE;
}

static gboolean parse_tensor(const MoelmSafetensors *st, const char *name, JsonNode *node, MoelmTensorInfo *info,
                             GError **error)
{
  if (!JSON_NODE_HOLDS_OBJECT(node))
    return tensor_error(st, error, name, "entry is not an object");
  JsonObject *obj = json_node_get_object(node);
  JsonNode *dtype = NULL, *shape = NULL, *offsets = NULL;
  GList *members = json_object_get_members(obj);
  for (GList *l = members; l; l = l->next) {
    const char *field = l->data;
    JsonNode *value = json_object_get_member(obj, field);
    if (strcmp(field, "dtype") == 0) {
      dtype = value;
    } else if (strcmp(field, "shape") == 0) {
      shape = value;
    } else if (strcmp(field, "data_offsets") == 0) {
      offsets = value;
    } else {
      char *shown = moelm_printable_name(field);
      tensor_error(st, error, name, "unknown field '%s'", shown);
      g_free(shown);
      g_list_free(members);
      return FALSE;
    }
  }
  g_list_free(members);
  if (dtype == NULL || shape == NULL || offsets == NULL)
    return tensor_error(st, error, name, "missing '%s'", dtype == NULL ? "dtype" : shape == NULL ? "shape" : "data_offsets");

  const char *dtype_name = node_string(dtype);
  if (dtype_name == NULL)
    return tensor_error(st, error, name, "'dtype' is not a string");
  if (!moelm_dtype_from_name(dtype_name, &info->dtype)) {
    char *shown = moelm_printable_name(dtype_name);
    tensor_error(st, error, name, "unknown dtype '%s'", shown);
    g_free(shown);
    return FALSE;
  }
  if (!parse_shape(st, name, shape, info, error) || !parse_offsets(st, name, offsets, info, error))
    return FALSE;
  uint64_t nbytes;
  if (!moelm_tensor_nbytes(info->dtype, info->ndim, info->shape, &nbytes))
    return tensor_error(st, error, name, "shape × dtype size overflows 64 bits");
  if (info->end - info->begin != nbytes)
    return tensor_error(st, error, name,
                        "data_offsets [%" G_GUINT64_FORMAT ", %" G_GUINT64_FORMAT "] hold %" G_GUINT64_FORMAT
                        " bytes but shape × %s size is %" G_GUINT64_FORMAT " bytes",
                        info->begin, info->end, info->end - info->begin, moelm_dtype_name(info->dtype), nbytes);
  return TRUE;
}

static gboolean parse_metadata(MoelmSafetensors *st, JsonNode *node, GError **error)
{
  if (!JSON_NODE_HOLDS_OBJECT(node))
    return st_error(st, error, MOELM_ERROR_CORRUPT, "__metadata__ is not an object");
  JsonObject *obj = json_node_get_object(node);
  GList *members = json_object_get_members(obj);
  guint n = g_list_length(members), i = 0;
  st->meta_keys = g_new0(char *, n + 1);
  gboolean ok = TRUE;
  for (GList *l = members; l; l = l->next) {
    const char *key = l->data;
    const char *value = node_string(json_object_get_member(obj, key));
    if (value == NULL) {
      char *shown = moelm_printable_name(key);
      ok = st_error(st, error, MOELM_ERROR_CORRUPT, "__metadata__ value '%s' is not a string", shown);
      g_free(shown);
      break;
    }
    st->meta_keys[i] = g_strdup(key);
    g_hash_table_insert(st->metadata, st->meta_keys[i], g_strdup(value));
    i++;
  }
  g_list_free(members);
  return ok;
}

static int by_offset(const void *a, const void *b)
{
  const MoelmTensorInfo *x = a, *y = b;
  if (x->begin != y->begin)
    return x->begin < y->begin ? -1 : 1;
  if (x->end != y->end)
    return x->end < y->end ? -1 : 1;
  return strcmp(x->name, y->name);
}

/* The data section must be covered exactly: from 0, no overlap, no gap, to its end. */
static gboolean check_layout(const MoelmSafetensors *st, GError **error)
{
  for (gsize i = 0; i < st->n_tensors; i++) {
    const MoelmTensorInfo *t = &st->tensors[i];
    if (t->end > st->data_len)
      return tensor_error(st, error, t->name,
                          "truncated: data ends at byte %" G_GUINT64_FORMAT " but the data section has %" G_GUINT64_FORMAT
                          " bytes",
                          t->end, st->data_len);
  }
  uint64_t covered = 0;
  for (gsize i = 0; i < st->n_tensors; i++) {
    const MoelmTensorInfo *t = &st->tensors[i];
    if (t->begin < covered)
      return tensor_error(st, error, t->name,
                          "data_offsets [%" G_GUINT64_FORMAT ", %" G_GUINT64_FORMAT "] overlap the previous tensor",
                          t->begin, t->end);
    if (t->begin > covered)
      return tensor_error(st, error, t->name,
                          "gap of %" G_GUINT64_FORMAT " bytes before its data_offsets [%" G_GUINT64_FORMAT
                          ", %" G_GUINT64_FORMAT "]",
                          t->begin - covered, t->begin, t->end);
    covered = t->end;
  }
  if (covered != st->data_len)
    return st_error(st, error, MOELM_ERROR_CORRUPT, "%" G_GUINT64_FORMAT " trailing bytes after the last tensor's data",
                    st->data_len - covered);
  return TRUE;
}

static gboolean parse_root(MoelmSafetensors *st, JsonObject *root, GError **error)
{
  GList *members = json_object_get_members(root);
  /* Grown entry by entry: a huge header of junk members fails before costing much. */
  GArray *tensors = g_array_new(FALSE, TRUE, sizeof(MoelmTensorInfo));
  gboolean ok = TRUE;
  for (GList *l = members; l && ok; l = l->next) {
    const char *name = l->data;
    JsonNode *node = json_object_get_member(root, name);
    if (strcmp(name, "__metadata__") == 0) {
      ok = parse_metadata(st, node, error);
      continue;
    }
    MoelmTensorInfo info = {0};
    ok = parse_tensor(st, name, node, &info, error);
    if (ok) {
      info.name = g_strdup(name);
      g_array_append_val(tensors, info);
    }
  }
  g_list_free(members);
  st->n_tensors = tensors->len;
  st->tensors = (MoelmTensorInfo *)(void *)g_array_free(tensors, FALSE);
  if (!ok)
    return FALSE;
  if (st->meta_keys == NULL)
    st->meta_keys = g_new0(char *, 1);
  if (st->n_tensors > 1) /* qsort wants a non-NULL pointer even for 0 elements */
    qsort(st->tensors, st->n_tensors, sizeof *st->tensors, by_offset);
  for (gsize i = 0; i < st->n_tensors; i++)
    g_hash_table_insert(st->by_name, (char *)st->tensors[i].name, &st->tensors[i]);
  return check_layout(st, error);
}

static gboolean parse_json(MoelmSafetensors *st, const char *header, gsize hlen, GError **error)
{
  GError *local = NULL;
  if (!moelm_json_check_strict(header, hlen, MAX_JSON_DEPTH, &local)) {
    st_error(st, error, MOELM_ERROR_FORMAT, "header is not valid JSON: %s", local->message);
    g_error_free(local);
    return FALSE;
  }
  JsonParser *parser = json_parser_new_immutable();
  DuplicateCheck dc = {g_hash_table_new_full(g_direct_hash, g_direct_equal, NULL, (GDestroyNotify)g_hash_table_unref),
                       NULL};
  g_signal_connect(parser, "object-member", G_CALLBACK(on_object_member), &dc);
  gboolean ok = json_parser_load_from_data(parser, header, (gssize)hlen, &local);
  if (!ok) {
    st_error(st, error, MOELM_ERROR_FORMAT, "header is not valid JSON: %s", local->message);
    g_error_free(local);
  } else if (dc.duplicate != NULL) {
    char *shown = moelm_printable_name(dc.duplicate);
    ok = st_error(st, error, MOELM_ERROR_CORRUPT, "header has a duplicate name '%s'", shown);
    g_free(shown);
  } else {
    JsonNode *root = json_parser_get_root(parser);
    if (root == NULL || !JSON_NODE_HOLDS_OBJECT(root))
      ok = st_error(st, error, MOELM_ERROR_FORMAT, "header is not a JSON object");
    else
      ok = parse_root(st, json_node_get_object(root), error);
  }
  g_hash_table_unref(dc.seen);
  g_free(dc.duplicate);
  g_object_unref(parser);
  return ok;
}

static gboolean parse_file(MoelmSafetensors *st, GError **error)
{
  if (st->len < 8)
    return st_error(st, error, MOELM_ERROR_FORMAT, "truncated: %" G_GSIZE_FORMAT " bytes, not even the 8-byte header length",
                    st->len);
  uint64_t hlen = 0;
  for (int i = 7; i >= 0; i--)
    hlen = (hlen << 8) | st->bytes[i];
  if (hlen < 2)
    return st_error(st, error, MOELM_ERROR_FORMAT, "header length %" G_GUINT64_FORMAT " is too small for a JSON object",
                    hlen);
  if (hlen > MOELM_ST_MAX_HEADER)
    return st_error(st, error, MOELM_ERROR_FORMAT,
                    "header length %" G_GUINT64_FORMAT " exceeds the limit of %" G_GUINT64_FORMAT " bytes", hlen,
                    MOELM_ST_MAX_HEADER);
  if (hlen > st->len - 8)
    return st_error(st, error, MOELM_ERROR_FORMAT,
                    "truncated: header length %" G_GUINT64_FORMAT " but only %" G_GSIZE_FORMAT " bytes follow it",
                    hlen, st->len - 8);
  const char *header = (const char *)st->bytes + 8;
  if (!g_utf8_validate(header, (gssize)hlen, NULL))
    return st_error(st, error, MOELM_ERROR_FORMAT, "header is not valid UTF-8");
  st->data = st->bytes + 8 + hlen;
  st->data_len = st->len - 8 - hlen;
  return parse_json(st, header, (gsize)hlen, error);
}

static MoelmSafetensors *st_new(const char *name)
{
  MoelmSafetensors *st = g_new0(MoelmSafetensors, 1);
  st->name = g_strdup(name);
  st->by_name = g_hash_table_new(g_str_hash, g_str_equal);
  st->metadata = g_hash_table_new_full(g_str_hash, g_str_equal, NULL, g_free);
  return st;
}

void moelm_safetensors_close(MoelmSafetensors *st)
{
  if (st == NULL)
    return;
  for (gsize i = 0; i < st->n_tensors; i++)
    g_free((char *)st->tensors[i].name);
  g_free(st->tensors);
  g_hash_table_unref(st->by_name);
  g_hash_table_unref(st->metadata); /* values; the keys are meta_keys' strings */
  g_strfreev(st->meta_keys);
  if (st->map)
    munmap(st->map, st->len);
  g_free(st->copy);
  g_free(st->name);
  g_free(st);
}

MoelmSafetensors *moelm_safetensors_open(const char *path, GError **error)
{
  MoelmSafetensors *st = st_new(path);
  struct stat sb;
  int fd = moelm_open_regular(path, "cannot open", &sb, error);
  if (fd < 0)
    goto fail;
  st->len = (gsize)sb.st_size;
  if (st->len > 0) {
    st->map = mmap(NULL, st->len, PROT_READ, MAP_PRIVATE, fd, 0);
    if (st->map == MAP_FAILED) {
      st->map = NULL;
      moelm_set_error_errno(error, errno, path, "cannot mmap");
      goto fail;
    }
    st->bytes = st->map;
  }
  close(fd);
  fd = -1;
  if (!parse_file(st, error))
    goto fail;
  return st;
fail:
  if (fd >= 0)
    close(fd);
  moelm_safetensors_close(st);
  return NULL;
}

MoelmSafetensors *moelm_safetensors_open_bytes(const void *data, gsize len, const char *name, GError **error)
{
  MoelmSafetensors *st = st_new(name);
  st->copy = g_malloc(len);
  if (len > 0)
    memcpy(st->copy, data, len);
  st->bytes = st->copy;
  st->len = len;
  if (!parse_file(st, error)) {
    moelm_safetensors_close(st);
    return NULL;
  }
  return st;
}

gsize moelm_safetensors_n_tensors(const MoelmSafetensors *st) { return st->n_tensors; }

const MoelmTensorInfo *moelm_safetensors_tensor(const MoelmSafetensors *st, gsize i)
{
  return i < st->n_tensors ? &st->tensors[i] : NULL;
}

const MoelmTensorInfo *moelm_safetensors_find(const MoelmSafetensors *st, const char *name)
{
  return g_hash_table_lookup(st->by_name, name);
}

const void *moelm_safetensors_data(const MoelmSafetensors *st, const MoelmTensorInfo *info)
{
  return st->data + info->begin;
}

const char *moelm_safetensors_metadata(const MoelmSafetensors *st, const char *key)
{
  return g_hash_table_lookup(st->metadata, key);
}

const char *const *moelm_safetensors_metadata_keys(const MoelmSafetensors *st)
{
  return (const char *const *)st->meta_keys;
}
