/* moelm — read-only whole-file mappings for the data layer (internal). */
#ifndef MOELM_DATA_MAPPED_FILE_H
#define MOELM_DATA_MAPPED_FILE_H

#include <glib.h>

G_BEGIN_DECLS

typedef struct {
  const char *data; /* NULL when the file is empty */
  gsize len;
} MoelmMappedFile;

/* Map PATH read-only (an empty file maps to data = NULL, len = 0). Errors name the path. */
gboolean moelm_mapped_file_open(MoelmMappedFile *mf, const char *path, GError **error);
void moelm_mapped_file_close(MoelmMappedFile *mf);

G_END_DECLS

#endif
