/* moelm — small file helpers shared by the writers: atomic replace and whole-file reads. */
#ifndef MOELM_FILEIO_H
#define MOELM_FILEIO_H

#include <glib.h>

G_BEGIN_DECLS

/* Write `len` bytes to PATH atomically: a temp file in the same directory, fsync, rename,
 * fsync of the directory. On failure PATH is untouched and the temp file removed. */
gboolean moelm_write_file_atomic(const char *path, const void *data, gsize len, GError **error);

/* Create PATH.tmp-XXXXXX in PATH's directory for writing, with the usual permissions (0666
 * minus the umask); returns its name (g_free) and the open descriptor. */
char *moelm_create_temp(const char *path, int *fd, GError **error);

/* Write all `len` bytes to fd (retrying short writes and EINTR); errors name `path`. */
gboolean moelm_write_all(int fd, const void *data, gsize len, const char *path, GError **error);

/* Rename a finished temp file over its destination and fsync the directory. */
gboolean moelm_commit_file(const char *tmp_path, const char *path, GError **error);

/* fsync the directory that holds PATH (best effort is not enough: errors are reported). */
gboolean moelm_fsync_parent_dir(const char *path, GError **error);

G_END_DECLS

#endif
