/* moelm — the process group's internals, shared by comm.c and grad_sync.c (not installed). */
#ifndef MOELM_DIST_INTERNAL_H
#define MOELM_DIST_INTERNAL_H

#include <glib.h>

#include "moelm/dist.h"

/* MPI counts are int: bigger buffers go in pieces of this many elements. */
#define MOELM_MPI_MAX_COUNT (1 << 30)

struct MoelmComm {
  int rank, size, local_rank;
  const char *name;
  gboolean mpi;        /* MPI_Init was called (and MPI_Finalize is due) */
  void *stage;         /* host staging for device backends without NCCL */
  size_t stage_bytes;
  void *nccl;          /* ncclComm_t once attached (nccl.c), else NULL */
  MoelmBackend *nccl_be; /* the CUDA backend whose stream it uses */
};

#ifdef MOELM_WITH_NCCL
/* NCCL on the attached backend's stream (nccl.c). */
gboolean moelm_nccl_allreduce_f32(MoelmComm *comm, float *buf, size_t n, GError **error);
gboolean moelm_nccl_alltoallv_rows(MoelmComm *comm, const void *send, const int32_t *send_rows, void *recv,
                                   const int32_t *recv_rows, size_t row_bytes, GError **error);
#endif

/* A host view of `bytes` of `be`'s memory at buf: buf itself for a CPU backend, else a staging
 * copy (downloaded when `download`); hand it back with moelm_comm_host_done, which uploads a
 * staged view. */
float *moelm_comm_host_view(MoelmComm *comm, MoelmBackend *be, void *buf, size_t bytes, gboolean download);
void moelm_comm_host_done(MoelmComm *comm, MoelmBackend *be, void *buf, const void *view, size_t bytes);

#ifdef HAVE_MPI
/* FALSE with a GError naming `what` when rc is not MPI_SUCCESS. */
gboolean moelm_mpi_check(int rc, const char *what, GError **error);
#endif

#endif
