/* moelm — NCCL for device backends (built with the CUDA backend and NCCL): one communicator
 * over the process group, bootstrapped by broadcasting rank 0's ncclGetUniqueId over MPI (or
 * made alone in a group of one). Once attached, the group's all-reduces and all-to-alls of a
 * CUDA backend's memory go through NCCL on that backend's stream instead of being staged
 * through the host. Not yet run on a GPU: tests/gpu/nccl-check.c is its check. */
#include "config.h"

#include <string.h>

/* nccl.h declares some functions without prototypes */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wstrict-prototypes"
#include <nccl.h>
#pragma GCC diagnostic pop

#include "dist/dist-internal.h"
#include "moelm/errors.h"

static gboolean nccl_check(ncclResult_t rc, const char *what, GError **error)
{
  if (rc == ncclSuccess)
    return TRUE;
  g_set_error(error, MOELM_ERROR, MOELM_ERROR_IO, "NCCL %s failed: %s", what, ncclGetErrorString(rc));
  return FALSE;
}

gboolean moelm_comm_attach_nccl(MoelmComm *c, MoelmBackend *be, GError **error)
{
  if (be == NULL || be->device_id < 0 || be->native_stream == NULL) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG, "NCCL needs a CUDA backend");
    return FALSE;
  }
  if (c->nccl != NULL)
    return TRUE;
  ncclUniqueId id;
  memset(&id, 0, sizeof id);
  if (c->rank == 0 && !nccl_check(ncclGetUniqueId(&id), "get unique id", error))
    return FALSE;
  if (!moelm_comm_broadcast(c, &id, sizeof id, error))
    return FALSE;
  ncclComm_t comm;
  if (!nccl_check(ncclCommInitRank(&comm, c->size, id, c->rank), "communicator init", error))
    return FALSE;
  c->nccl = comm;
  c->nccl_be = be;
  return TRUE;
}

void moelm_comm_detach_nccl(MoelmComm *c)
{
  if (c && c->nccl) {
    ncclCommDestroy((ncclComm_t)c->nccl);
    c->nccl = NULL;
    c->nccl_be = NULL;
  }
}

gboolean moelm_nccl_allreduce_f32(MoelmComm *c, float *buf, size_t n, GError **error)
{
  return nccl_check(ncclAllReduce(buf, buf, n, ncclFloat32, ncclSum, (ncclComm_t)c->nccl,
                                  (cudaStream_t)c->nccl_be->native_stream),
                    "all-reduce", error);
}

gboolean moelm_nccl_alltoallv_rows(MoelmComm *c, const void *send, const int32_t *send_rows, void *recv,
                                   const int32_t *recv_rows, size_t row_bytes, GError **error)
{
  cudaStream_t s = (cudaStream_t)c->nccl_be->native_stream;
  size_t so = 0, ro = 0;
  gboolean ok = nccl_check(ncclGroupStart(), "group start", error);
  for (int r = 0; ok && r < c->size; r++) {
    if (send_rows[r] > 0)
      ok = nccl_check(ncclSend((const char *)send + so * row_bytes, (size_t)send_rows[r] * row_bytes, ncclUint8, r,
                               (ncclComm_t)c->nccl, s),
                      "send", error);
    if (ok && recv_rows[r] > 0)
      ok = nccl_check(ncclRecv((char *)recv + ro * row_bytes, (size_t)recv_rows[r] * row_bytes, ncclUint8, r,
                               (ncclComm_t)c->nccl, s),
                      "recv", error);
    so += (size_t)send_rows[r];
    ro += (size_t)recv_rows[r];
  }
  const ncclResult_t end = ncclGroupEnd();
  return ok && nccl_check(end, "group end", error);
}
