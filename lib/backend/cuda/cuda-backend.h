/* moelm — creating the CUDA backend (only in builds with HAVE_CUDA_BACKEND). */
#ifndef MOELM_CUDA_BACKEND_H
#define MOELM_CUDA_BACKEND_H

#include <glib.h>

#include "moelm/backend.h"

/* The number of CUDA devices; 0 with an error that says why (none, an old driver, ...). */
int moelm_cuda_device_count(GError **error);
/* A backend on GPU `device_id` with activations in `act_dtype` (F32, BF16 or F16). */
MoelmBackend *moelm_backend_cuda_new(int device_id, MoelmDtype act_dtype, GError **error);

#endif
