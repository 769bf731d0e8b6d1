/* moelm — small file helpers shared by the writers: atomic replace and whole-file reads. */
#ifndef MOELM_FILEIO_H
#define MOELM_FILEIO_H

#include <glib.h>

G_BEGIN_DECLS

struct stat;

/* Open PATH for reading if it is a regular file, without ever blocking (a FIFO, a device or
 * a directory in place of a data file is an error "PATH: WHAT: not a regular file (a FIFO)").
 * Fills *st; returns the descriptor (O_CLOEXEC), or -1 with an error naming PATH. */
int moelm_open_regular(const char *path, const char *what, struct stat *st, GError **error);

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

/* ---- a directory one run owns (the trainer's --save-dir) ---- */
typedef struct MoelmDirLock MoelmDirLock;

/* Lock DIR with its lock file DIR/NAME (flock, so the kernel releases it when the process
 * ends, even by kill -9) and write our pid into it. Held by a live process: an error naming
 * DIR, `what` ("training run") and the holder's pid. DIR must exist. */
MoelmDirLock *moelm_dir_lock(const char *dir, const char *name, const char *what, GError **error);
/* Remove the lock file and release it (NULL is fine). */
void moelm_dir_unlock(MoelmDirLock *lock);

/* Create and remove a file in DIR: an error naming DIR when it is not writable (read-only
 * permissions or file system), found before any work is done. */
gboolean moelm_dir_check_writable(const char *dir, GError **error);

/* Whether NAME is a temp file of moelm_create_temp for a file ending in SUFFIX
 * ("checkpoint_last.pt.tmp-a1B2c3" for ".pt"). */
gboolean moelm_is_temp_name(const char *name, const char *suffix);
/* Remove DIR's regular files that moelm_is_temp_name(name, suffix) — left by a run that was
 * killed while writing; call only while holding DIR's lock. Returns the names removed. */
GPtrArray *moelm_remove_stale_temps(const char *dir, const char *suffix);
/* The same for g_mkdtemp's directories PREFIX + six letters or digits directly in DIR: their
 * regular files, then the directory. Returns the names removed. */
GPtrArray *moelm_remove_stale_temp_dirs(const char *dir, const char *prefix);

G_END_DECLS

#endif
