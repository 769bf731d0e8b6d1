/* moelm — atomic file replacement: temp file in the same directory, fsync, rename. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include <glib/gstdio.h>

#include "moelm/errors.h"
#include "moelm/fileio.h"

gboolean moelm_fsync_parent_dir(const char *path, GError **error)
{
  char *dir = g_path_get_dirname(path);
  int fd = open(dir, O_RDONLY | O_DIRECTORY);
  gboolean ok = TRUE;
  if (fd < 0 || fsync(fd) != 0) {
    moelm_set_error_errno(error, errno, dir, "cannot sync directory");
    ok = FALSE;
  }
  if (fd >= 0)
    close(fd);
  g_free(dir);
  return ok;
}

gboolean moelm_commit_file(const char *tmp_path, const char *path, GError **error)
{
  if (g_rename(tmp_path, path) != 0) {
    moelm_set_error_errno(error, errno, path, "cannot rename temporary file into place");
    g_unlink(tmp_path);
    return FALSE;
  }
  return moelm_fsync_parent_dir(path, error);
}

gboolean moelm_write_file_atomic(const char *path, const void *data, gsize len, GError **error)
{
  char *tmp = g_strdup_printf("%s.tmp-XXXXXX", path);
  int fd = g_mkstemp(tmp);
  if (fd < 0) {
    moelm_set_error_errno(error, errno, path, "cannot create temporary file");
    g_free(tmp);
    return FALSE;
  }
  const char *p = data;
  gsize left = len;
  while (left > 0) {
    ssize_t n = write(fd, p, left);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0) {
      moelm_set_error_errno(error, n < 0 ? errno : EIO, path, "write failed");
      goto fail;
    }
    p += n;
    left -= (gsize)n;
  }
  if (fsync(fd) != 0) {
    moelm_set_error_errno(error, errno, path, "fsync failed");
    goto fail;
  }
  if (close(fd) != 0) {
    fd = -1;
    moelm_set_error_errno(error, errno, path, "close failed");
    goto fail;
  }
  fd = -1;
  {
    /* mkstemp creates 0600; give the file the usual permissions (umask applies). */
    mode_t mask = umask(0);
    umask(mask);
    chmod(tmp, 0666 & ~mask);
  }
  gboolean ok = moelm_commit_file(tmp, path, error);
  g_free(tmp);
  return ok;
fail:
  if (fd >= 0)
    close(fd);
  g_unlink(tmp);
  g_free(tmp);
  return FALSE;
}
