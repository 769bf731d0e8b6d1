/* moelm — a small read-only zip reader: the container of PyTorch's checkpoints (torch.save
 * since 1.6 writes a zip of stored entries, 64-byte aligned; deflate is supported too).
 *
 * Everything is validated before an entry is handed out: the end-of-central-directory record
 * (and its zip64 form), every central directory entry (sizes, offsets, method, flags, name,
 * zip64 extra fields), every local header (its name must match, its data must lie inside the
 * file, before the central directory) and no two entries with the same name. A read checks the
 * CRC-32. Errors name the file and the byte offset of the problem. */
#ifndef MOELM_ZIP_H
#define MOELM_ZIP_H

#include <stdint.h>
#include <glib.h>

G_BEGIN_DECLS

typedef struct {
  char *name;           /* NUL-terminated; contains no NUL */
  uint64_t data_offset; /* of the entry's (compressed) bytes in the file */
  uint64_t size;        /* uncompressed */
  uint64_t csize;       /* compressed (== size when stored) */
  uint32_t crc;
  int method;           /* 0 stored, 8 deflate */
} MoelmZipEntry;

typedef struct MoelmZip MoelmZip;

/* Map PATH read-only and validate its directory. */
MoelmZip *moelm_zip_open(const char *path, GError **error);
/* The same on a private copy of `len` bytes; `name` is used in messages. */
MoelmZip *moelm_zip_open_bytes(const void *data, gsize len, const char *name, GError **error);
void moelm_zip_close(MoelmZip *z);

const char *moelm_zip_name(const MoelmZip *z);
guint moelm_zip_n_entries(const MoelmZip *z);
const MoelmZipEntry *moelm_zip_entry(const MoelmZip *z, guint i); /* central directory order */
const MoelmZipEntry *moelm_zip_find(const MoelmZip *z, const char *name);

/* The entry's uncompressed bytes (entry->size of them), CRC-checked: a pointer into the map for
 * a stored entry, an inflated buffer owned by the zip otherwise. Valid until close. Deflated
 * entries over MOELM_ZIP_MAX_INFLATE bytes are refused. */
#define MOELM_ZIP_MAX_INFLATE ((uint64_t)1 << 31)
const guint8 *moelm_zip_read(MoelmZip *z, const MoelmZipEntry *e, GError **error);

G_END_DECLS

#endif
