/* moelm — read-only whole-file mappings (mmap), used by the binarizer and the dataset. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "data/mapped-file.h"
#include "moelm/errors.h"
#include "moelm/fileio.h"

gboolean moelm_mapped_file_open(MoelmMappedFile *mf, const char *path, GError **error)
{
  mf->data = NULL;
  mf->len = 0;
  struct stat st;
  int fd = moelm_open_regular(path, "cannot open", &st, error);
  if (fd < 0)
    return FALSE;
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
