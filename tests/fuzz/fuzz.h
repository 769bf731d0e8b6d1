/* moelm — libFuzzer harnesses. Each fuzz-*.c defines LLVMFuzzerTestOneInput; the CUnit
 * build compiles each one again through run-*.c with that name #defined to the names
 * below, so all of them link into the one test runner. A harness aborts when a reader
 * breaks its contract (e.g. fails without a one-line error); crashes, leaks and overreads
 * are the sanitizers' to find. */
#ifndef MOELM_FUZZ_H
#define MOELM_FUZZ_H

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int moelm_fuzz_dict(const uint8_t *data, size_t size);
int moelm_fuzz_idx(const uint8_t *data, size_t size);
int moelm_fuzz_safetensors(const uint8_t *data, size_t size);
int moelm_fuzz_pickle(const uint8_t *data, size_t size);
int moelm_fuzz_zip(const uint8_t *data, size_t size);
int moelm_fuzz_checkpoint(const uint8_t *data, size_t size);

/* The checkpoint harness's pipeline: TRUE when the checkpoint built from the input is
 * accepted (eval-lm, generate and a resumed run would go ahead). */
#include <glib.h>
gboolean moelm_fuzz_checkpoint_read(const uint8_t *data, size_t size, GError **error);

/* A failed read must say why, on one line. */
#define MOELM_FUZZ_CHECK_ERROR(error)                                             \
  do {                                                                            \
    if ((error) == NULL || (error)->message == NULL || (error)->message[0] == 0 ||\
        strchr((error)->message, '\n') != NULL)                                   \
      abort();                                                                    \
  } while (0)

#endif
