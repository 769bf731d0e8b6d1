/* moelm — backend-independent pieces: freeing a backend, fairseq's sinusoidal table. */
#include "config.h"

#include <math.h>
#include <string.h>

#include "moelm/backend.h"
#include "moelm/errors.h"

void moelm_backend_free(MoelmBackend *be)
{
  if (be == NULL)
    return;
  be->ops->destroy(be);
}

gboolean moelm_sinusoidal_positions(float *table, int max_positions, int C, int padding_idx, GError **error)
{
  if (C < 4 || max_positions < 0 || padding_idx < 0) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG,
                "sinusoidal positions: need dim >= 4 and non-negative sizes (dim %d, max positions %d, "
                "padding idx %d)",
                C, max_positions, padding_idx);
    return FALSE;
  }
  int rows = max_positions + padding_idx + 1;
  int half = C / 2;
  /* fairseq computes in float32: the frequency step is rounded to float first. */
  float step = (float)(log(10000.0) / (half - 1));
  for (int r = 0; r < rows; r++) {
    float *row = table + (size_t)r * C;
    for (int i = 0; i < half; i++) {
      float freq = expf((float)i * -step);
      float angle = (float)r * freq;
      row[i] = sinf(angle);
      row[half + i] = cosf(angle);
    }
    if (C % 2 == 1)
      row[C - 1] = 0.0f;
  }
  memset(table + (size_t)padding_idx * C, 0, (size_t)C * sizeof(float));
  return TRUE;
}
