/* moelm — a directory's lock file (flock) and the temp files that killed runs leave behind. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <glib/gstdio.h>

#include "moelm/errors.h"
#include "moelm/fileio.h"

struct MoelmDirLock {
  char *path;
  int fd;
};

/* The pid the holder wrote into the lock file, or 0. */
static long holder_pid(int fd)
{
  char buf[32] = {0};
  const ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
  return n > 0 ? strtol(buf, NULL, 10) : 0;
}

MoelmDirLock *moelm_dir_lock(const char *dir, const char *name, const char *what, GError **error)
{
  char *path = g_build_filename(dir, name, NULL);
  for (int attempt = 0;; attempt++) {
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd < 0) {
      moelm_set_error_errno(error, errno, dir, errno == EACCES || errno == EROFS || errno == EPERM
                                                   ? "the directory is not writable"
                                                   : "cannot create the lock file");
      break;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
      const int errsv = errno;
      if (errsv == EWOULDBLOCK) {
        const long pid = holder_pid(fd);
        char *who = pid > 0 ? g_strdup_printf("pid %ld", pid) : g_strdup("another process");
        g_set_error(error, MOELM_ERROR, MOELM_ERROR_EXISTS, "%s is in use by another %s (%s holds %s)", dir, what, who,
                    path);
        g_free(who);
      } else {
        moelm_set_error_errno(error, errsv, path, "cannot lock");
      }
      close(fd);
      break;
    }
    /* The holder before us unlinks the file while it still holds it: make sure the inode
     * we locked is still the one at `path`, else lock the new one. */
    struct stat held, now;
    if (fstat(fd, &held) == 0 && lstat(path, &now) == 0 && held.st_dev == now.st_dev && held.st_ino == now.st_ino) {
      char pid[32];
      const int n = g_snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
      if (ftruncate(fd, 0) != 0 || pwrite(fd, pid, (size_t)n, 0) != n) {
        moelm_set_error_errno(error, errno, path, "cannot write the lock file");
        close(fd);
        break;
      }
      MoelmDirLock *lock = g_new0(MoelmDirLock, 1);
      lock->path = path;
      lock->fd = fd;
      return lock;
    }
    close(fd);
    if (attempt == 100) {
      g_set_error(error, MOELM_ERROR, MOELM_ERROR_IO, "%s: the lock file keeps changing", path);
      break;
    }
  }
  g_free(path);
  return NULL;
}

void moelm_dir_unlock(MoelmDirLock *lock)
{
  if (lock == NULL)
    return;
  g_unlink(lock->path); /* while still held: see moelm_dir_lock */
  close(lock->fd);
  g_free(lock->path);
  g_free(lock);
}

gboolean moelm_dir_check_writable(const char *dir, GError **error)
{
  char *probe = g_build_filename(dir, ".moelm-write-probe", NULL);
  int fd = -1;
  GError *local = NULL;
  char *tmp = moelm_create_temp(probe, &fd, &local);
  g_free(probe);
  if (tmp == NULL) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_IO, "%s: the directory is not writable (%s)", dir, local->message);
    g_error_free(local);
    return FALSE;
  }
  close(fd);
  g_unlink(tmp);
  g_free(tmp);
  return TRUE;
}

/* The six letters or digits g_mkstemp / g_mkdtemp put in place of XXXXXX. */
static gboolean mkstemp_letters(const char *s)
{
  int n = 0;
  for (; s[n]; n++)
    if (!g_ascii_isalnum(s[n]))
      return FALSE;
  return n == 6;
}

gboolean moelm_is_temp_name(const char *name, const char *suffix)
{
  const size_t n = strlen(name), s = strlen(suffix), tail = strlen(".tmp-XXXXXX");
  return n > s + tail && strncmp(name + n - tail, ".tmp-", 5) == 0 && strncmp(name + n - tail - s, suffix, s) == 0 &&
         mkstemp_letters(name + n - 6);
}

static gboolean is_temp_dir_name(const char *name, const char *prefix)
{
  return g_str_has_prefix(name, prefix) && mkstemp_letters(name + strlen(prefix));
}

/* Remove PATH if it is a regular file (dir FALSE), or a directory whose entries are regular
 * files (dir TRUE: those, then it). */
static gboolean remove_entry(const char *path, gboolean dir)
{
  struct stat st;
  if (lstat(path, &st) != 0 || (dir ? !S_ISDIR(st.st_mode) : !S_ISREG(st.st_mode)))
    return FALSE;
  if (!dir)
    return g_unlink(path) == 0;
  GDir *d = g_dir_open(path, 0, NULL);
  if (d == NULL)
    return FALSE;
  const char *name;
  while ((name = g_dir_read_name(d)) != NULL) {
    char *child = g_build_filename(path, name, NULL);
    remove_entry(child, FALSE);
    g_free(child);
  }
  g_dir_close(d);
  return g_rmdir(path) == 0; /* fails, harmlessly, when something else was left in it */
}

static GPtrArray *remove_stale(const char *dir, const char *pattern, gboolean (*match)(const char *, const char *),
                               gboolean dirs)
{
  GPtrArray *removed = g_ptr_array_new_with_free_func(g_free);
  GDir *d = g_dir_open(dir, 0, NULL);
  if (d == NULL)
    return removed;
  const char *name;
  while ((name = g_dir_read_name(d)) != NULL) {
    if (!match(name, pattern))
      continue;
    char *path = g_build_filename(dir, name, NULL);
    if (remove_entry(path, dirs))
      g_ptr_array_add(removed, g_strdup(name));
    g_free(path);
  }
  g_dir_close(d);
  return removed;
}

GPtrArray *moelm_remove_stale_temps(const char *dir, const char *suffix)
{
  return remove_stale(dir, suffix, moelm_is_temp_name, FALSE);
}

GPtrArray *moelm_remove_stale_temp_dirs(const char *dir, const char *prefix)
{
  return remove_stale(dir, prefix, is_temp_dir_name, TRUE);
}
