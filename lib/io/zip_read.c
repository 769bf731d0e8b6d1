/* moelm — read-only zip reader (PKWARE APPNOTE 6.3): end of central directory (and zip64),
 * central directory, local headers; stored and deflated entries (zlib), CRC-32 checked. */
#include "config.h"

#include <string.h>
#include <zlib.h>

#include "data/mapped-file.h"
#include "moelm/errors.h"
#include "moelm/zip.h"
#include "io_internal.h"

#define SIG_LOCAL 0x04034b50u
#define SIG_CENTRAL 0x02014b50u
#define SIG_EOCD 0x06054b50u
#define SIG_EOCD64 0x06064b50u
#define SIG_LOCATOR64 0x07064b50u
#define EOCD_LEN 22
#define LOCATOR64_LEN 20
#define EOCD64_LEN 56
#define CENTRAL_LEN 46
#define LOCAL_LEN 30

struct MoelmZip {
  char *name;
  MoelmMappedFile mf; /* open() */
  guint8 *copy;       /* open_bytes() */
  const guint8 *data;
  uint64_t len;
  GPtrArray *entries;      /* MoelmZipEntry* */
  GHashTable *by_name;     /* name → entry */
  GHashTable *inflated;    /* entry → guint8* */
  GHashTable *crc_checked; /* entry → entry, stored entries whose CRC matched */
};

static uint16_t rd16(const guint8 *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t rd32(const guint8 *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24; }
static uint64_t rd64(const guint8 *p) { return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32; }

static gboolean fail(const MoelmZip *z, GError **error, uint64_t at, const char *fmt, ...) G_GNUC_PRINTF(4, 5);
static gboolean fail(const MoelmZip *z, GError **error, uint64_t at, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  char *msg = g_strdup_vprintf(fmt, ap);
  va_end(ap);
  g_set_error(error, MOELM_ERROR, MOELM_ERROR_CORRUPT, "%s: zip: byte %" G_GUINT64_FORMAT ": %s", z->name, at, msg);
  g_free(msg);
  return FALSE;
}

static void entry_free(gpointer p)
{
  MoelmZipEntry *e = p;
  g_free(e->name);
  g_free(e);
}

/* The zip64 extended information extra field (0x0001) replaces, in this order, those of
 * size, csize and offset that are 0xFFFFFFFF in the fixed header. */
static gboolean parse_zip64_extra(const MoelmZip *z, const guint8 *extra, uint16_t xlen, uint64_t at,
                                  uint64_t *size, uint64_t *csize, uint64_t *offset, GError **error)
{
  uint16_t i = 0;
  while (i + 4 <= xlen) {
    const uint16_t id = rd16(extra + i), n = rd16(extra + i + 2);
    if ((uint32_t)i + 4 + n > xlen)
      return fail(z, error, at, "extra field runs past its length");
    if (id == 0x0001) {
      const guint8 *p = extra + i + 4, *end = p + n;
      uint64_t *fields[3] = {size, csize, offset};
      for (int k = 0; k < 3; k++) {
        if (*fields[k] != 0xFFFFFFFFu)
          continue;
        if (p + 8 > end)
          return fail(z, error, at, "zip64 extra field too short");
        *fields[k] = rd64(p);
        p += 8;
      }
    }
    i = (uint16_t)(i + 4 + n);
  }
  return TRUE;
}

/* Find the end of central directory record; return the central directory's range and count. */
static gboolean find_directory(MoelmZip *z, uint64_t *cd_off, uint64_t *cd_size, uint64_t *count, GError **error)
{
  if (z->len < EOCD_LEN)
    return fail(z, error, 0, "file of %" G_GUINT64_FORMAT " bytes is too short for a zip archive", z->len);
  /* The record is the last thing in the file, followed by a comment of at most 65535 bytes. */
  uint64_t lowest = z->len > EOCD_LEN + 65535 ? z->len - EOCD_LEN - 65535 : 0, at = z->len - EOCD_LEN;
  gboolean found = FALSE;
  for (;; at--) {
    const guint8 *p = z->data + at;
    if (rd32(p) == SIG_EOCD && at + EOCD_LEN + rd16(p + 20) == z->len) {
      found = TRUE;
      break;
    }
    if (at == lowest)
      break;
  }
  if (!found)
    return fail(z, error, z->len, "no end of central directory record (not a zip archive, or truncated)");
  const guint8 *p = z->data + at;
  if (rd16(p + 4) != 0 || rd16(p + 6) != 0 || rd16(p + 8) != rd16(p + 10))
    return fail(z, error, at, "multi-disk archives are not supported");
  *count = rd16(p + 10);
  *cd_size = rd32(p + 12);
  *cd_off = rd32(p + 16);
  uint64_t dir_end = at;
  if (*count == 0xFFFF || *cd_size == 0xFFFFFFFFu || *cd_off == 0xFFFFFFFFu) {
    if (at < LOCATOR64_LEN || rd32(p - LOCATOR64_LEN) != SIG_LOCATOR64)
      return fail(z, error, at, "zip64 values without a zip64 end of central directory locator");
    const guint8 *loc = p - LOCATOR64_LEN;
    const uint64_t e64 = rd64(loc + 8);
    if (rd32(loc + 4) != 0 || rd32(loc + 16) > 1)
      return fail(z, error, at - LOCATOR64_LEN, "multi-disk archives are not supported");
    if (e64 > at - LOCATOR64_LEN || at - LOCATOR64_LEN - e64 < EOCD64_LEN || rd32(z->data + e64) != SIG_EOCD64)
      return fail(z, error, at - LOCATOR64_LEN, "zip64 locator points to %" G_GUINT64_FORMAT ", not a zip64 record",
                  e64);
    const guint8 *q = z->data + e64;
    if (rd32(q + 16) != 0 || rd32(q + 20) != 0 || rd64(q + 24) != rd64(q + 32))
      return fail(z, error, e64, "multi-disk archives are not supported");
    *count = rd64(q + 32);
    *cd_size = rd64(q + 40);
    *cd_off = rd64(q + 48);
    dir_end = e64;
  }
  if (*cd_off > dir_end || *cd_size > dir_end - *cd_off)
    return fail(z, error, at, "central directory [%" G_GUINT64_FORMAT ", +%" G_GUINT64_FORMAT
                ") lies outside the file", *cd_off, *cd_size);
  if (*count > *cd_size / CENTRAL_LEN)
    return fail(z, error, at, "%" G_GUINT64_FORMAT " entries cannot fit a central directory of %" G_GUINT64_FORMAT
                " bytes", *count, *cd_size);
  return TRUE;
}

/* One central directory entry at *pos (advanced past it), checked against its local header. */
static gboolean parse_entry(MoelmZip *z, uint64_t *pos, uint64_t cd_off, uint64_t cd_end, GError **error)
{
  const uint64_t at = *pos;
  if (cd_end - at < CENTRAL_LEN || rd32(z->data + at) != SIG_CENTRAL)
    return fail(z, error, at, "bad central directory entry");
  const guint8 *p = z->data + at;
  const uint16_t flags = rd16(p + 8), method = rd16(p + 10);
  const uint16_t nlen = rd16(p + 28), xlen = rd16(p + 30), clen = rd16(p + 32);
  uint64_t csize = rd32(p + 20), size = rd32(p + 24), local = rd32(p + 42);
  const uint32_t crc = rd32(p + 16);
  if ((uint64_t)CENTRAL_LEN + nlen + xlen + clen > cd_end - at)
    return fail(z, error, at, "central directory entry runs past the directory");
  const guint8 *name = p + CENTRAL_LEN;
  if (nlen == 0 || memchr(name, 0, nlen) != NULL)
    return fail(z, error, at, "entry with an empty name or a NUL byte in its name");
  char *ename = g_strndup((const char *)name, nlen);
  char *shown = moelm_printable_name(ename);
  gboolean ok = FALSE;
  if (!parse_zip64_extra(z, name + nlen, xlen, at, &size, &csize, &local, error))
    goto out;
  if (flags & 0x41) { /* bit 0: encrypted, bit 6: strong encryption */
    fail(z, error, at, "entry '%s' is encrypted", shown);
    goto out;
  }
  if (method != 0 && method != 8) {
    fail(z, error, at, "entry '%s' uses compression method %u (only stored and deflate are supported)", shown,
         method);
    goto out;
  }
  if (method == 0 && csize != size) {
    fail(z, error, at, "stored entry '%s' has compressed size %" G_GUINT64_FORMAT " != size %" G_GUINT64_FORMAT,
         shown, csize, size);
    goto out;
  }
  if (local > cd_off || cd_off - local < LOCAL_LEN || rd32(z->data + local) != SIG_LOCAL) {
    fail(z, error, at, "entry '%s': no local header at %" G_GUINT64_FORMAT, shown, local);
    goto out;
  }
  const guint8 *lh = z->data + local;
  const uint64_t data_off = local + LOCAL_LEN + rd16(lh + 26) + (uint64_t)rd16(lh + 28);
  if (rd16(lh + 26) != nlen || memcmp(lh + LOCAL_LEN, name, nlen) != 0) {
    fail(z, error, local, "local header's name differs from the central directory's '%s'", shown);
    goto out;
  }
  if (data_off > cd_off || csize > cd_off - data_off) {
    fail(z, error, local, "entry '%s': %" G_GUINT64_FORMAT " bytes at %" G_GUINT64_FORMAT
         " run past the start of the central directory (truncated?)", shown, csize, data_off);
    goto out;
  }
  if (g_hash_table_contains(z->by_name, ename)) {
    fail(z, error, at, "duplicate entry '%s'", shown);
    goto out;
  }
  MoelmZipEntry *e = g_new0(MoelmZipEntry, 1);
  e->name = ename;
  ename = NULL;
  e->data_offset = data_off;
  e->size = size;
  e->csize = csize;
  e->crc = crc;
  e->method = method;
  g_ptr_array_add(z->entries, e);
  g_hash_table_insert(z->by_name, e->name, e);
  *pos = at + CENTRAL_LEN + nlen + xlen + clen;
  ok = TRUE;
out:
  g_free(ename);
  g_free(shown);
  return ok;
}

static gboolean parse(MoelmZip *z, GError **error)
{
  uint64_t cd_off = 0, cd_size = 0, count = 0;
  if (!find_directory(z, &cd_off, &cd_size, &count, error))
    return FALSE;
  uint64_t pos = cd_off;
  for (uint64_t i = 0; i < count; i++)
    if (!parse_entry(z, &pos, cd_off, cd_off + cd_size, error))
      return FALSE;
  return TRUE;
}

static MoelmZip *zip_new(const char *name)
{
  MoelmZip *z = g_new0(MoelmZip, 1);
  z->name = g_strdup(name);
  z->entries = g_ptr_array_new_with_free_func(entry_free);
  z->by_name = g_hash_table_new(g_str_hash, g_str_equal);
  z->inflated = g_hash_table_new_full(g_direct_hash, g_direct_equal, NULL, g_free);
  z->crc_checked = g_hash_table_new(g_direct_hash, g_direct_equal);
  return z;
}

MoelmZip *moelm_zip_open(const char *path, GError **error)
{
  MoelmZip *z = zip_new(path);
  if (!moelm_mapped_file_open(&z->mf, path, error)) {
    moelm_zip_close(z);
    return NULL;
  }
  z->data = (const guint8 *)z->mf.data;
  z->len = z->mf.len;
  if (!parse(z, error)) {
    moelm_zip_close(z);
    return NULL;
  }
  return z;
}

MoelmZip *moelm_zip_open_bytes(const void *data, gsize len, const char *name, GError **error)
{
  MoelmZip *z = zip_new(name);
  z->copy = g_memdup2(data, len ? len : 1);
  z->data = z->copy;
  z->len = len;
  if (!parse(z, error)) {
    moelm_zip_close(z);
    return NULL;
  }
  return z;
}

void moelm_zip_close(MoelmZip *z)
{
  if (z == NULL)
    return;
  moelm_mapped_file_close(&z->mf);
  g_free(z->copy);
  g_hash_table_destroy(z->crc_checked);
  g_hash_table_destroy(z->inflated);
  g_hash_table_destroy(z->by_name);
  g_ptr_array_free(z->entries, TRUE);
  g_free(z->name);
  g_free(z);
}

const char *moelm_zip_name(const MoelmZip *z) { return z->name; }
guint moelm_zip_n_entries(const MoelmZip *z) { return z->entries->len; }
const MoelmZipEntry *moelm_zip_entry(const MoelmZip *z, guint i) { return i < z->entries->len ? z->entries->pdata[i] : NULL; }
const MoelmZipEntry *moelm_zip_find(const MoelmZip *z, const char *name) { return g_hash_table_lookup(z->by_name, name); }

/* zlib's crc32 takes a uInt length: feed large entries in pieces. */
static uint32_t crc32_of(const guint8 *p, uint64_t n)
{
  uLong crc = crc32(0L, Z_NULL, 0);
  while (n > 0) {
    const uInt chunk = n > (1u << 30) ? (1u << 30) : (uInt)n;
    crc = crc32(crc, p, chunk);
    p += chunk;
    n -= chunk;
  }
  return (uint32_t)crc;
}

static guint8 *inflate_entry(const MoelmZip *z, const MoelmZipEntry *e, GError **error)
{
  char *shown = moelm_printable_name(e->name);
  guint8 *out = NULL;
  if (e->size > MOELM_ZIP_MAX_INFLATE || e->csize > G_MAXUINT) {
    fail(z, error, e->data_offset, "deflated entry '%s' of %" G_GUINT64_FORMAT " bytes is over the %" G_GUINT64_FORMAT
         "-byte limit", shown, e->size, MOELM_ZIP_MAX_INFLATE);
    goto out;
  }
  out = g_try_malloc(e->size ? e->size : 1);
  if (out == NULL) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_NOMEM, "%s: out of memory inflating '%s'", z->name, shown);
    goto out;
  }
  z_stream s;
  memset(&s, 0, sizeof s);
  if (inflateInit2(&s, -MAX_WBITS) != Z_OK) {
    fail(z, error, e->data_offset, "cannot start inflating '%s'", shown);
    g_clear_pointer(&out, g_free);
    goto out;
  }
  s.next_in = (Bytef *)(z->data + e->data_offset);
  s.avail_in = (uInt)e->csize;
  s.next_out = out;
  s.avail_out = (uInt)e->size;
  const int rc = inflate(&s, Z_FINISH);
  const uint64_t produced = e->size - s.avail_out;
  inflateEnd(&s);
  if (rc != Z_STREAM_END || produced != e->size) {
    fail(z, error, e->data_offset, "entry '%s' does not inflate to its %" G_GUINT64_FORMAT " bytes (%s)", shown,
         e->size, rc == Z_STREAM_END ? "too short" : rc == Z_BUF_ERROR ? "too long or truncated" : "corrupt data");
    g_clear_pointer(&out, g_free);
  }
out:
  g_free(shown);
  return out;
}

const guint8 *moelm_zip_read(MoelmZip *z, const MoelmZipEntry *e, GError **error)
{
  if (e->method == 0 && g_hash_table_contains(z->crc_checked, e))
    return z->data + e->data_offset;
  if (e->method != 0 && g_hash_table_contains(z->inflated, e))
    return g_hash_table_lookup(z->inflated, e);
  const guint8 *bytes = z->data + e->data_offset;
  guint8 *buf = NULL;
  if (e->method != 0) {
    buf = inflate_entry(z, e, error);
    if (buf == NULL)
      return NULL;
    bytes = buf;
  }
  if (crc32_of(bytes, e->size) != e->crc) {
    char *shown = moelm_printable_name(e->name);
    fail(z, error, e->data_offset, "entry '%s' fails its CRC-32 check (corrupt data)", shown);
    g_free(shown);
    g_free(buf);
    return NULL;
  }
  if (buf)
    g_hash_table_insert(z->inflated, (gpointer)e, buf);
  else
    g_hash_table_add(z->crc_checked, (gpointer)e);
  return bytes;
}
