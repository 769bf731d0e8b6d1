/* libFuzzer harness: dict.txt parsing (moelm_dictionary_load_from_data). */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include <glib.h>

#include "fuzz.h"
#include "moelm/dictionary.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  GError *error = NULL;
  MoelmDictionary *d = moelm_dictionary_load_from_data((const char *)data, size, "fuzz.dict", &error);
  if (d == NULL) {
    MOELM_FUZZ_CHECK_ERROR(error);
    g_error_free(error);
    return 0;
  }
  guint n = moelm_dictionary_size(d);
  if (n < MOELM_NSPECIAL)
    abort();
  for (guint i = 0; i < n; i++) {
    const char *sym = moelm_dictionary_symbol(d, (int32_t)i);
    if (sym == NULL)
      abort();
    /* With #fairseq:overwrite a word may repeat; its index names one of its entries. */
    int32_t idx = moelm_dictionary_index(d, sym);
    if (idx < 0 || (guint)idx >= n || strcmp(moelm_dictionary_symbol(d, idx), sym) != 0)
      abort();
  }
  (void)moelm_dictionary_hash(d);
  /* What save() writes reads back as the same symbols, when it reads back at all (a
   * repeated word loses its overwrite flag). */
  gsize len = 0;
  char *text = moelm_dictionary_to_data(d, &len);
  MoelmDictionary *again = moelm_dictionary_load_from_data(text, len, "fuzz.dict.saved", &error);
  if (again != NULL) {
    if (moelm_dictionary_size(again) != n)
      abort();
    for (guint i = 0; i < n; i++)
      if (strcmp(moelm_dictionary_symbol(again, (int32_t)i), moelm_dictionary_symbol(d, (int32_t)i)) != 0 ||
          moelm_dictionary_count(again, (int32_t)i) != moelm_dictionary_count(d, (int32_t)i))
        abort();
    moelm_dictionary_free(again);
  } else {
    MOELM_FUZZ_CHECK_ERROR(error);
    g_clear_error(&error);
  }
  g_free(text);
  moelm_dictionary_free(d);
  return 0;
}
