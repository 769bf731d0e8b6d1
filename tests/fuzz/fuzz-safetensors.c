/* libFuzzer harness: safetensors parsing (moelm_safetensors_open_bytes). */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include <glib.h>

#include "fuzz.h"
#include "moelm/safetensors.h"

static volatile unsigned sink;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  GError *error = NULL;
  MoelmSafetensors *st = moelm_safetensors_open_bytes(data, size, "fuzz.safetensors", &error);
  if (st == NULL) {
    MOELM_FUZZ_CHECK_ERROR(error);
    g_error_free(error);
    return 0;
  }
  /* Accepted: the tensors tile the data section, and every byte can be read. */
  uint64_t covered = 0;
  unsigned sum = 0;
  for (gsize i = 0; i < moelm_safetensors_n_tensors(st); i++) {
    const MoelmTensorInfo *t = moelm_safetensors_tensor(st, i);
    if (t->begin != covered || t->end < t->begin || moelm_safetensors_find(st, t->name) != t || t->ndim < 0 ||
        t->ndim > MOELM_ST_MAX_DIMS)
      abort();
    const uint8_t *bytes = moelm_safetensors_data(st, t);
    for (uint64_t k = 0; k < t->end - t->begin; k++)
      sum += bytes[k];
    covered = t->end;
  }
  if (8 + covered > size)
    abort();
  for (const char *const *k = moelm_safetensors_metadata_keys(st); *k; k++)
    if (moelm_safetensors_metadata(st, *k) == NULL)
      abort();
  sink = sum; /* makes the reads observable */
  moelm_safetensors_close(st);
  return 0;
}
