/* moelm — TensorBoard event files, written and read by the format's specification (no
 * TensorFlow, no protobuf library: the three messages involved are encoded by hand).
 *
 * A file is a sequence of records: u64 length (little-endian), u32 masked CRC-32C of those 8
 * bytes, `length` bytes of data, u32 masked CRC-32C of the data; masked(c) =
 * ((c >> 15) | (c << 17)) + 0xa282ead8. Each record's data is an `Event` protocol buffer:
 *   Event   { double wall_time = 1; int64 step = 2; string file_version = 3; Summary summary = 5; }
 *   Summary { repeated Value value = 1; }
 *   Value   { string tag = 1; float simple_value = 2; }
 * The first record carries file_version "brain.Event:2"; every scalar is one Event. */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <glib/gstdio.h>

#include "moelm/errors.h"
#include "moelm/tensorboard.h"

struct MoelmTbWriter {
  char *path;
  FILE *fp;
};

/* ---- CRC-32C (Castagnoli), reflected, table-driven ---------------------------------------- */

static uint32_t crc_table[256];

static gpointer init_crc(gpointer unused)
{
  for (uint32_t i = 0; i < 256; i++) {
    uint32_t c = i;
    for (int k = 0; k < 8; k++)
      c = c & 1 ? (c >> 1) ^ 0x82F63B78u : c >> 1;
    crc_table[i] = c;
  }
  return NULL;
}

uint32_t moelm_crc32c(const void *data, size_t n)
{
  static GOnce once = G_ONCE_INIT;
  g_once(&once, init_crc, NULL);
  const uint8_t *p = data;
  uint32_t c = 0xFFFFFFFFu;
  for (size_t i = 0; i < n; i++)
    c = crc_table[(c ^ p[i]) & 0xFF] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

static uint32_t masked(uint32_t crc) { return ((crc >> 15) | (crc << 17)) + 0xa282ead8u; }

/* ---- protobuf encoding, just what the Event needs ----------------------------------------- */

static void put_varint(GByteArray *b, uint64_t v)
{
  do {
    guint8 byte = (guint8)(v & 0x7F);
    v >>= 7;
    if (v)
      byte |= 0x80;
    g_byte_array_append(b, &byte, 1);
  } while (v);
}

static void put_key(GByteArray *b, int field, int wire) { put_varint(b, ((uint64_t)field << 3) | (uint64_t)wire); }

static void put_fixed(GByteArray *b, const void *le, size_t n) { g_byte_array_append(b, le, (guint)n); }

static void put_bytes(GByteArray *b, int field, const void *data, size_t n)
{
  put_key(b, field, 2);
  put_varint(b, n);
  g_byte_array_append(b, data, (guint)n);
}

static GByteArray *event(double wall_time, int64_t step, const char *version, const char *tag, float value)
{
  GByteArray *e = g_byte_array_new();
  put_key(e, 1, 1); /* wall_time: 64-bit */
  put_fixed(e, &wall_time, 8);
  if (step != 0) {
    put_key(e, 2, 0);
    put_varint(e, (uint64_t)step);
  }
  if (version) {
    put_bytes(e, 3, version, strlen(version));
  } else {
    GByteArray *v = g_byte_array_new(), *s = g_byte_array_new();
    put_bytes(v, 1, tag, strlen(tag));
    put_key(v, 2, 5); /* simple_value: 32-bit */
    put_fixed(v, &value, 4);
    put_bytes(s, 1, v->data, v->len);
    put_bytes(e, 5, s->data, s->len);
    g_byte_array_unref(v);
    g_byte_array_unref(s);
  }
  return e;
}

static gboolean write_record(MoelmTbWriter *w, const GByteArray *data, GError **error)
{
  const uint64_t len = data->len;
  const uint32_t lc = masked(moelm_crc32c(&len, 8)), dc = masked(moelm_crc32c(data->data, data->len));
  if (fwrite(&len, 8, 1, w->fp) != 1 || fwrite(&lc, 4, 1, w->fp) != 1 ||
      fwrite(data->data, 1, data->len, w->fp) != data->len || fwrite(&dc, 4, 1, w->fp) != 1) {
    moelm_set_error_errno(error, errno, w->path, "cannot write the TensorBoard event file");
    return FALSE;
  }
  return TRUE;
}

MoelmTbWriter *moelm_tb_writer_open(const char *dir, GError **error)
{
  if (g_mkdir_with_parents(dir, 0755) != 0) {
    moelm_set_error_errno(error, errno, dir, "cannot create --tensorboard-logdir");
    return NULL;
  }
  char host[256] = "localhost";
  gethostname(host, sizeof host - 1);
  const double now = g_get_real_time() / 1e6;
  char *name = g_strdup_printf("events.out.tfevents.%ld.%s", (long)now, host);
  MoelmTbWriter *w = g_new0(MoelmTbWriter, 1);
  w->path = g_build_filename(dir, name, NULL);
  g_free(name);
  w->fp = g_fopen(w->path, "ab");
  if (w->fp == NULL) {
    moelm_set_error_errno(error, errno, w->path, "cannot create");
    moelm_tb_writer_close(w);
    return NULL;
  }
  GByteArray *e = event(now, 0, "brain.Event:2", NULL, 0);
  gboolean ok = write_record(w, e, error) && moelm_tb_flush(w, error);
  g_byte_array_unref(e);
  if (!ok) {
    moelm_tb_writer_close(w);
    return NULL;
  }
  return w;
}

const char *moelm_tb_writer_path(const MoelmTbWriter *w) { return w->path; }

gboolean moelm_tb_add_scalar(MoelmTbWriter *w, const char *tag, double value, int64_t step, GError **error)
{
  GByteArray *e = event(g_get_real_time() / 1e6, step, NULL, tag, (float)value);
  gboolean ok = write_record(w, e, error);
  g_byte_array_unref(e);
  return ok;
}

gboolean moelm_tb_flush(MoelmTbWriter *w, GError **error)
{
  if (fflush(w->fp) != 0 || ferror(w->fp)) {
    moelm_set_error_errno(error, errno, w->path, "cannot write the TensorBoard event file");
    return FALSE;
  }
  return TRUE;
}

void moelm_tb_writer_close(MoelmTbWriter *w)
{
  if (w == NULL)
    return;
  if (w->fp)
    fclose(w->fp);
  g_free(w->path);
  g_free(w);
}

/* ---- reading ------------------------------------------------------------------------------ */

typedef struct {
  const uint8_t *p, *end;
} Buf;

static gboolean get_varint(Buf *b, uint64_t *v)
{
  *v = 0;
  for (int shift = 0; shift < 64 && b->p < b->end; shift += 7) {
    const uint8_t byte = *b->p++;
    *v |= (uint64_t)(byte & 0x7F) << shift;
    if (!(byte & 0x80))
      return TRUE;
  }
  return FALSE;
}

/* One field: its number and wire type; for length-delimited fields the payload in *sub. */
static gboolean get_field(Buf *b, int *field, int *wire, uint64_t *num, Buf *sub)
{
  uint64_t key;
  if (!get_varint(b, &key))
    return FALSE;
  *field = (int)(key >> 3);
  *wire = (int)(key & 7);
  switch (*wire) {
  case 0:
    return get_varint(b, num);
  case 1:
  case 5: {
    const size_t n = *wire == 1 ? 8 : 4;
    if ((size_t)(b->end - b->p) < n)
      return FALSE;
    sub->p = b->p;
    sub->end = b->p + n;
    b->p += n;
    return TRUE;
  }
  case 2: {
    uint64_t n;
    if (!get_varint(b, &n) || n > (uint64_t)(b->end - b->p))
      return FALSE;
    sub->p = b->p;
    sub->end = b->p + n;
    b->p += n;
    return TRUE;
  }
  default:
    return FALSE;
  }
}

static gboolean parse_event(Buf e, MoelmTbScalarFunc fn, void *data, char **version)
{
  int64_t step = 0;
  double wall = 0;
  Buf summary = {NULL, NULL};
  while (e.p < e.end) {
    int field, wire;
    uint64_t num = 0;
    Buf sub = {NULL, NULL};
    if (!get_field(&e, &field, &wire, &num, &sub))
      return FALSE;
    if (field == 1 && wire == 1)
      memcpy(&wall, sub.p, 8);
    else if (field == 2 && wire == 0)
      step = (int64_t)num;
    else if (field == 3 && wire == 2 && version)
      *version = g_strndup((const char *)sub.p, (gsize)(sub.end - sub.p));
    else if (field == 5 && wire == 2)
      summary = sub;
  }
  while (summary.p && summary.p < summary.end) {
    int field, wire;
    uint64_t num;
    Buf v = {NULL, NULL};
    if (!get_field(&summary, &field, &wire, &num, &v))
      return FALSE;
    if (field != 1 || wire != 2)
      continue;
    char *tag = NULL;
    float value = 0;
    gboolean has_value = FALSE;
    while (v.p < v.end) {
      Buf sub = {NULL, NULL};
      if (!get_field(&v, &field, &wire, &num, &sub)) {
        g_free(tag);
        return FALSE;
      }
      if (field == 1 && wire == 2) {
        g_free(tag);
        tag = g_strndup((const char *)sub.p, (gsize)(sub.end - sub.p));
      } else if (field == 2 && wire == 5) {
        memcpy(&value, sub.p, 4);
        has_value = TRUE;
      }
    }
    if (tag && has_value && fn)
      fn(data, tag, value, step, wall);
    g_free(tag);
  }
  return TRUE;
}

gboolean moelm_tb_read(const char *path, MoelmTbScalarFunc fn, void *data, GError **error)
{
  gchar *bytes = NULL;
  gsize len = 0;
  GError *local = NULL;
  if (!g_file_get_contents(path, &bytes, &len, &local)) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_IO, "%s: %s", path, local->message);
    g_error_free(local);
    return FALSE;
  }
  gboolean ok = TRUE;
  char *version = NULL;
  gsize at = 0;
  for (int record = 0; ok && at < len; record++) {
    uint64_t n;
    uint32_t lc, dc;
    if (len - at < 12 || (memcpy(&n, bytes + at, 8), memcpy(&lc, bytes + at + 8, 4), lc != masked(moelm_crc32c(&n, 8))) ||
        n > len - at - 16) {
      g_set_error(error, MOELM_ERROR, MOELM_ERROR_CORRUPT, "%s: record %d at byte %zu: bad length or length CRC",
                  path, record, at);
      ok = FALSE;
      break;
    }
    memcpy(&dc, bytes + at + 12 + n, 4);
    const uint8_t *d = (const uint8_t *)bytes + at + 12;
    if (dc != masked(moelm_crc32c(d, n))) {
      g_set_error(error, MOELM_ERROR, MOELM_ERROR_CORRUPT, "%s: record %d at byte %zu: data CRC mismatch", path,
                  record, at);
      ok = FALSE;
      break;
    }
    Buf e = {d, d + n};
    if (!parse_event(e, fn, data, record == 0 ? &version : NULL)) {
      g_set_error(error, MOELM_ERROR, MOELM_ERROR_CORRUPT, "%s: record %d at byte %zu: not an Event", path, record,
                  at);
      ok = FALSE;
    }
    if (ok && record == 0 && g_strcmp0(version, "brain.Event:2") != 0) {
      g_set_error(error, MOELM_ERROR, MOELM_ERROR_CORRUPT, "%s: the first record is not a brain.Event:2 header", path);
      ok = FALSE;
    }
    at += 16 + n;
  }
  g_free(version);
  g_free(bytes);
  return ok;
}
