/* libFuzzer harness: the zip reader (moelm_zip_open_bytes, every entry read) and, on top of
 * it, PyTorch files (moelm_torch_open_bytes, every tensor of the state dict resolved). */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include <glib.h>

#include "fuzz.h"
#include "moelm/torch_load.h"
#include "moelm/zip.h"

static volatile unsigned sink;

static void read_entries(const uint8_t *data, size_t size)
{
  GError *error = NULL;
  MoelmZip *z = moelm_zip_open_bytes(data, size, "fuzz.zip", &error);
  if (z == NULL) {
    MOELM_FUZZ_CHECK_ERROR(error);
    g_error_free(error);
    return;
  }
  unsigned sum = 0;
  for (guint i = 0; i < moelm_zip_n_entries(z); i++) {
    const MoelmZipEntry *e = moelm_zip_entry(z, i);
    if (moelm_zip_find(z, e->name) != e || (e->method == 0 && e->size != e->csize) ||
        e->data_offset + e->csize > size)
      abort();
    const guint8 *b = moelm_zip_read(z, e, &error);
    if (b == NULL) {
      MOELM_FUZZ_CHECK_ERROR(error);
      g_clear_error(&error);
      continue;
    }
    for (uint64_t k = 0; k < e->size; k++)
      sum += b[k];
  }
  sink = sum;
  moelm_zip_close(z);
}

static void read_tensors(const uint8_t *data, size_t size)
{
  GError *error = NULL;
  MoelmTorchFile *f = moelm_torch_open_bytes(data, size, "fuzz.pt", &error);
  if (f == NULL) {
    MOELM_FUZZ_CHECK_ERROR(error);
    g_error_free(error);
    return;
  }
  const GPtrArray *kv = moelm_py_dict_items(moelm_py_get(moelm_torch_root(f), "model"));
  for (guint i = 0; kv && i + 1 < kv->len; i += 2) {
    MoelmTorchTensor t;
    if (!moelm_torch_tensor(f, kv->pdata[i + 1], &t, &error)) {
      MOELM_FUZZ_CHECK_ERROR(error);
      g_clear_error(&error);
      continue;
    }
    const uint64_t n = moelm_torch_tensor_numel(&t);
    if (n > (1u << 16))
      continue;
    float *out = g_new(float, n ? n : 1);
    if (!moelm_torch_tensor_copy(&t, MOELM_DT_F32, out, &error)) {
      MOELM_FUZZ_CHECK_ERROR(error);
      g_clear_error(&error);
    } else
      for (uint64_t k = 0; k < n; k++)
        sink += (unsigned)(out[k] != out[k]);
    g_free(out);
  }
  moelm_torch_close(f);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  read_entries(data, size);
  read_tensors(data, size);
  return 0;
}
