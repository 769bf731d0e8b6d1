/* moelm — atomic file replacement: temp file in the same directory, fsync, rename. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <glib/gstdio.h>

#include "moelm/errors.h"
#include "moelm/fileio.h"

int moelm_open_regular(const char *path, const char *what, struct stat *st, GError **error)
{
  /* O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer, forever */
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
  if (fd < 0 || fstat(fd, st) != 0) {
    moelm_set_error_errno(error, errno, path, what);
    if (fd >= 0)
      close(fd);
    return -1;
  }
  if (!S_ISREG(st->st_mode)) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_IO, "%s: %s: not a regular file (%s)", path, what,
                S_ISFIFO(st->st_mode)  ? "a FIFO"
                : S_ISDIR(st->st_mode) ? "a directory"
                : S_ISCHR(st->st_mode) ? "a character device"
                : S_ISSOCK(st->st_mode) ? "a socket"
                                        : "a special file");
    close(fd);
    return -1;
  }
  const int flags = fcntl(fd, F_GETFL);
  if (flags >= 0)
    fcntl(fd, F_SETFL, flags & ~O_NONBLOCK); /* reads of a regular file never block anyway */
  return fd;
}

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

char *moelm_create_temp(const char *path, int *fd, GError **error)
{
  char *tmp = g_strdup_printf("%s.tmp-XXXXXX", path);
  /* 0666 minus the umask, like any new file (plain mkstemp would make it 0600). */
  *fd = g_mkstemp_full(tmp, O_RDWR | O_CLOEXEC, 0666);
  if (*fd < 0) {
    moelm_set_error_errno(error, errno, path, "cannot create temporary file");
    g_free(tmp);
    return NULL;
  }
  return tmp;
}

gboolean moelm_write_all(int fd, const void *data, gsize len, const char *path, GError **error)
{
  const char *p = data;
  while (len > 0) {
    const size_t chunk = len > ((gsize)1 << 30) ? ((gsize)1 << 30) : len;
    ssize_t n = write(fd, p, chunk);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0) {
      moelm_set_error_errno(error, n < 0 ? errno : EIO, path, "write failed");
      return FALSE;
    }
    p += n;
    len -= (gsize)n;
  }
  return TRUE;
}

gboolean moelm_write_file_atomic(const char *path, const void *data, gsize len, GError **error)
{
  int fd;
  char *tmp = moelm_create_temp(path, &fd, error);
  if (tmp == NULL)
    return FALSE;
  if (!moelm_write_all(fd, data, len, path, error))
    goto fail;
  if (fsync(fd) != 0) {
    moelm_set_error_errno(error, errno, path, "fsync failed");
    goto fail;
  }
  if (close(fd) != 0) {
    fd = -1;
    moelm_set_error_errno(error, errno, path, "close failed");
    goto fail;
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
