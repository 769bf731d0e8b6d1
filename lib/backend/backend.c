/* moelm — backend-independent pieces: choosing and freeing a backend, the error channel,
 * activation staging, fairseq's sinusoidal table and MoE capacity. */
#include "config.h"

#include <math.h>
#include <stdarg.h>
#include <string.h>

#include "backend/cpu/cpu-internal.h"
#ifdef HAVE_CUDA_BACKEND
#include "backend/cuda/cuda-backend.h"
#endif
#include "moelm/backend.h"
#include "moelm/errors.h"

void moelm_backend_spec_init(MoelmBackendSpec *spec)
{
  memset(spec, 0, sizeof *spec);
  spec->kind = MOELM_BACKEND_AUTO;
  spec->device_id = -1;
  spec->precision = MOELM_PRECISION_DEFAULT;
  spec->cpu_isa = MOELM_CPU_ISA_AUTO;
}

static const char *precision_flag(MoelmPrecision p)
{
  return p == MOELM_PRECISION_BF16 ? "--bf16" : p == MOELM_PRECISION_FP16 ? "--fp16" : "--fp32";
}

static MoelmBackend *open_cpu(const MoelmBackendSpec *spec, const char *why, GError **error)
{
  const gboolean reference = spec->kind == MOELM_BACKEND_CPU_REFERENCE;
  MoelmDtype act = MOELM_DT_F32;
  if (spec->precision == MOELM_PRECISION_BF16)
    act = MOELM_DT_BF16;
  else if (spec->precision == MOELM_PRECISION_FP16)
    act = MOELM_DT_F16;
  if (reference && act != MOELM_DT_F32) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG, "%s: the reference CPU backend is fp32 only",
                precision_flag(spec->precision));
    return NULL;
  }
  MoelmBackend *be = moelm_backend_cpu_new_full(reference, spec->threads, spec->cpu_isa, act, error);
  if (be == NULL)
    return NULL;
  if (spec->fail_after_ops > 0)
    moelm_cpu_backend_inject_faults(be, spec->fail_after_ops);
  be->reason = g_strdup_printf("%s%s%s", why,
                                act == MOELM_DT_F32 ? ""
                                                    : "; activations are stored in half precision and computed in "
                                                      "fp32 (slower than fp32 on a CPU)",
                                spec->amp ? "; --amp: mixed precision is the GPU's, the CPU computes in fp32" : "");
  return be;
}

MoelmBackend *moelm_backend_open(const MoelmBackendSpec *spec, GError **error)
{
  MoelmBackendSpec def;
  if (spec == NULL) {
    moelm_backend_spec_init(&def);
    spec = &def;
  }
  switch (spec->kind) {
  case MOELM_BACKEND_CPU:
    return open_cpu(spec, "--cpu", error);
  case MOELM_BACKEND_CPU_REFERENCE:
    return open_cpu(spec, "the reference loops were asked for", error);
  case MOELM_BACKEND_CUDA:
  case MOELM_BACKEND_AUTO:
    break;
  }
#ifdef HAVE_CUDA_BACKEND
  {
    const gboolean asked = spec->kind == MOELM_BACKEND_CUDA || spec->device_id >= 0;
    GError *why = NULL;
    const int n = moelm_cuda_device_count(&why);
    if (n > 0 || asked) {
      if (n == 0) {
        g_propagate_prefixed_error(error, why, "--device-id %d: ", spec->device_id);
        return NULL;
      }
      /* the GPU's default is bf16 activations with fp32 master weights */
      const MoelmDtype act = spec->precision == MOELM_PRECISION_FP32   ? MOELM_DT_F32
                             : spec->precision == MOELM_PRECISION_FP16 ? MOELM_DT_F16
                                                                       : MOELM_DT_BF16;
      MoelmBackend *be = moelm_backend_cuda_new(spec->device_id >= 0 ? spec->device_id : 0, act, error);
      if (be)
        be->reason = g_strdup_printf("%s%s", asked ? "--device-id" : "a CUDA device is present (--cpu for the CPU)",
                                     spec->amp ? "; --amp: bf16 mixed precision (fp32 master weights and Adam "
                                                 "moments; bf16 needs no loss scaler)"
                                               : "");
      return be;
    }
    char *reason = g_strdup_printf("%s; running on the CPU", why ? why->message : "no CUDA device");
    g_clear_error(&why);
    MoelmBackend *be = open_cpu(spec, reason, error);
    g_free(reason);
    return be;
  }
#else
  if (spec->kind == MOELM_BACKEND_CUDA || spec->device_id >= 0) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_UNSUPPORTED,
                "--device-id %d: this moelm was built without the CUDA backend (run on the CPU with --cpu, or "
                "build with configure --with-cuda)",
                spec->device_id);
    return NULL;
  }
  return open_cpu(spec, "this build has no CUDA backend", error);
#endif
}

void moelm_backend_free(MoelmBackend *be)
{
  if (be == NULL)
    return;
  be->ops->destroy(be);
}

/* ---- the error channel ------------------------------------------------------------------- */

void moelm_backend_set_error(MoelmBackend *be, int code, const char *fmt, ...)
{
  if (be->op_error != NULL)
    return; /* the first failure is the one worth reporting */
  va_list ap;
  va_start(ap, fmt);
  char *msg = g_strdup_vprintf(fmt, ap);
  va_end(ap);
  be->op_error = g_error_new_literal(MOELM_ERROR, code, msg);
  g_free(msg);
}

gboolean moelm_backend_check(MoelmBackend *be, const char *what, GError **error)
{
  if (be->ops->synchronize(be, error))
    return TRUE;
  if (what != NULL)
    moelm_error_prefix(error, "%s", what);
  return FALSE;
}

/* ---- activations from and to host fp32 ----------------------------------------------------- */

gboolean moelm_backend_act_to_host(MoelmBackend *be, float *host, const MoelmAct *src, size_t n, GError **error)
{
  if (be->act_dtype == MOELM_DT_F32) {
    be->ops->to_host(be, host, src, n * sizeof(float));
    return TRUE;
  }
  uint16_t *stage = g_try_new(uint16_t, n > 0 ? n : 1);
  if (stage == NULL) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_NOMEM, "out of memory staging %zu activations", n);
    return FALSE;
  }
  be->ops->to_host(be, stage, src, moelm_act_bytes(be, n));
  moelm_convert_floats(host, MOELM_DT_F32, stage, be->act_dtype, n);
  g_free(stage);
  return TRUE;
}

gboolean moelm_backend_act_from_host(MoelmBackend *be, MoelmAct *dst, const float *host, size_t n, GError **error)
{
  if (be->act_dtype == MOELM_DT_F32) {
    be->ops->to_device(be, dst, host, n * sizeof(float));
    return TRUE;
  }
  uint16_t *stage = g_try_new(uint16_t, n > 0 ? n : 1);
  if (stage == NULL) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_NOMEM, "out of memory staging %zu activations", n);
    return FALSE;
  }
  moelm_convert_floats(stage, be->act_dtype, host, MOELM_DT_F32, n);
  be->ops->to_device(be, dst, stage, moelm_act_bytes(be, n));
  g_free(stage);
  return TRUE;
}

/* ---- model helpers that belong to no backend ---------------------------------------------- */

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

int moelm_route_capacity(int S, int E, int top_k, double capacity_factor, gboolean dropless, gboolean eval,
                         double eval_fraction)
{
  if (dropless)
    return 0;
  if (eval)
    return eval_fraction > 0 ? MAX(1, (int)ceil(eval_fraction * S)) : 0;
  const int per_expert = (S + E - 1) / E;
  return MAX(1, (int)(capacity_factor * (double)(top_k * per_expert)));
}
