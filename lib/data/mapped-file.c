/* moelm — read-only whole-file mappings (mmap), used by the binarizer and the dataset. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "data/mapped-file.h"
#include "moelm/errors.h"

gboolean moelm_mapped_file_open(MoelmMappedFile *mf, const char *path, GError **error)
{
  mf->data = NULL;
  mf->len = 0;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    moelm_set_error_errno(error, errno, path, "cannot open");
    return FALSE;
  }
  struct stat st;
  if (fstat(fd, &st) != 0) {
    moelm_set_error_errno(error, errno, path, "cannot stat");
    close(fd);
    return FALSE;
  }
  if (!S_ISREG(st.st_mode)) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_IO, "%s: not a regular file", path);
    close(fd);
    return FALSE;
  }
  if (st.st_size > 0) {
    void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      moelm_set_error_errno(error, errno, path, "cannot mmap");
      close(fd);
      return FALSE;
    }
    mf->data = p;
    mf->len = (gsize)st.st_size;
  }
  close(fd);
  return TRUE;
}

void moelm_mapped_file_close(MoelmMappedFile *mf)
{
  if (mf->data != NULL)
    munmap((void *)mf->data, mf->len);
  mf->data = NULL;
  mf->len = 0;
}
