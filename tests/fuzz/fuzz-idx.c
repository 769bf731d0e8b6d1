/* libFuzzer harness: fairseq MMIDIDX index validation (moelm_indexed_dataset_validate_index). */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include <glib.h>

#include "fuzz.h"
#include "moelm/indexed_dataset.h"

static void validate(const uint8_t *data, size_t size, gsize bin_len)
{
  GError *error = NULL;
  if (!moelm_indexed_dataset_validate_index(data, size, bin_len, "fuzz.idx", &error)) {
    MOELM_FUZZ_CHECK_ERROR(error);
    g_error_free(error);
  } else if (error != NULL) {
    abort();
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  validate(data, size, (gsize)-1); /* the index alone */
  validate(data, size, 0);         /* with an empty .bin */
  validate(data, size, size);      /* with some .bin length */
  return 0;
}
