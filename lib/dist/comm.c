/* moelm — the process group: one process, or MPI (see lib/moelm/dist.h). */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#ifdef HAVE_MPI
#include <mpi.h>
#endif

#include "dist/dist-internal.h"
#include "moelm/errors.h"

/* Whether a launcher started this process as one of several. */
static gboolean launched_by_mpi(void)
{
  static const char *const vars[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "PMI_RANK", "MV2_COMM_WORLD_SIZE",
                                     "SLURM_NTASKS"};
  for (gsize i = 0; i < G_N_ELEMENTS(vars); i++)
    if (g_getenv(vars[i]) != NULL)
      return TRUE;
  return FALSE;
}

#ifdef HAVE_MPI
gboolean moelm_mpi_check(int rc, const char *what, GError **error)
{
  if (rc == MPI_SUCCESS)
    return TRUE;
  char msg[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, msg, &len);
  g_set_error(error, MOELM_ERROR, MOELM_ERROR_IO, "MPI %s failed: %.*s", what, len, msg);
  return FALSE;
}
#endif

MoelmComm *moelm_comm_open(GError **error)
{
  MoelmComm *c = g_new0(MoelmComm, 1);
  c->size = 1;
  c->name = "single";
  if (!launched_by_mpi())
    return c;
#ifdef HAVE_MPI
  int provided = 0;
  /* our threads never call MPI: only the main thread does */
  int rc = MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided);
  if (!moelm_mpi_check(rc, "init", error)) {
    g_free(c);
    return NULL;
  }
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  MPI_Comm_rank(MPI_COMM_WORLD, &c->rank);
  MPI_Comm_size(MPI_COMM_WORLD, &c->size);
  MPI_Comm local;
  MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, c->rank, MPI_INFO_NULL, &local);
  MPI_Comm_rank(local, &c->local_rank);
  MPI_Comm_free(&local);
  c->mpi = TRUE;
  c->name = "mpi";
  return c;
#else
  const char *size = g_getenv("OMPI_COMM_WORLD_SIZE");
  if (size != NULL && atoi(size) > 1) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_UNSUPPORTED,
                "started by mpirun with %s processes, but this moelm was built without MPI (install libopenmpi-dev "
                "and rebuild)",
                size);
    g_free(c);
    return NULL;
  }
  return c;
#endif
}

void moelm_comm_free(MoelmComm *c)
{
  if (c == NULL)
    return;
#ifdef HAVE_MPI
  if (c->mpi)
    MPI_Finalize();
#endif
  moelm_comm_detach_nccl(c);
  g_free(c->stage);
  g_free(c);
}

#ifndef MOELM_WITH_NCCL
gboolean moelm_comm_attach_nccl(MoelmComm *c, MoelmBackend *be, GError **error)
{
  g_set_error(error, MOELM_ERROR, MOELM_ERROR_UNSUPPORTED,
              "this moelm was built without NCCL (configure --with-cuda --with-nccl)");
  return FALSE;
}

void moelm_comm_detach_nccl(MoelmComm *c) {}
#endif

gboolean moelm_comm_has_nccl(const MoelmComm *c) { return c != NULL && c->nccl != NULL; }

void moelm_comm_abort(MoelmComm *c, int status)
{
#ifdef HAVE_MPI
  if (c != NULL && c->mpi)
    MPI_Abort(MPI_COMM_WORLD, status);
#else
  (void)c;
  (void)status;
#endif
}

int moelm_comm_rank(const MoelmComm *c) { return c ? c->rank : 0; }
int moelm_comm_size(const MoelmComm *c) { return c ? c->size : 1; }
int moelm_comm_local_rank(const MoelmComm *c) { return c ? c->local_rank : 0; }
const char *moelm_comm_name(const MoelmComm *c) { return c ? c->name : "single"; }

gboolean moelm_comm_allreduce_f64(MoelmComm *c, double *buf, size_t n, GError **error)
{
  if (c == NULL || c->size == 1 || n == 0)
    return TRUE;
#ifdef HAVE_MPI
  return moelm_mpi_check(MPI_Allreduce(MPI_IN_PLACE, buf, (int)n, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD), "allreduce",
                         error);
#else
  return TRUE;
#endif
}

float *moelm_comm_host_view(MoelmComm *c, MoelmBackend *be, void *buf, size_t bytes, gboolean download)
{
  if (be == NULL || be->device_id < 0)
    return buf; /* CPU backends: backend memory is host memory */
  if (bytes > c->stage_bytes) {
    g_free(c->stage);
    c->stage = g_malloc(bytes);
    c->stage_bytes = bytes;
  }
  if (download)
    be->ops->to_host(be, c->stage, buf, bytes);
  return c->stage;
}

void moelm_comm_host_done(MoelmComm *c, MoelmBackend *be, void *buf, const void *view, size_t bytes)
{
  if (view != buf)
    be->ops->to_device(be, buf, view, bytes);
}

gboolean moelm_comm_allreduce_f32(MoelmComm *c, MoelmBackend *be, float *buf, size_t n, GError **error)
{
  if (c == NULL || n == 0)
    return TRUE;
#ifdef MOELM_WITH_NCCL
  if (c->nccl != NULL && be == c->nccl_be)
    return moelm_nccl_allreduce_f32(c, buf, n, error);
#endif
  if (c->size == 1)
    return TRUE;
#ifdef HAVE_MPI
  float *h = moelm_comm_host_view(c, be, buf, n * sizeof(float), TRUE);
  gboolean ok = TRUE;
  /* MPI counts are int: large arenas go in pieces */
  for (size_t off = 0; ok && off < n; off += MOELM_MPI_MAX_COUNT) {
    const int cnt = (int)MIN(n - off, (size_t)MOELM_MPI_MAX_COUNT);
    ok = moelm_mpi_check(MPI_Allreduce(MPI_IN_PLACE, h + off, cnt, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD), "allreduce",
                         error);
  }
  if (ok)
    moelm_comm_host_done(c, be, buf, h, n * sizeof(float));
  return ok;
#else
  return TRUE;
#endif
}

gboolean moelm_comm_broadcast(MoelmComm *c, void *buf, size_t bytes, GError **error)
{
  if (c == NULL || c->size == 1 || bytes == 0)
    return TRUE;
#ifdef HAVE_MPI
  return moelm_mpi_check(MPI_Bcast(buf, (int)bytes, MPI_BYTE, 0, MPI_COMM_WORLD), "broadcast", error);
#else
  return TRUE;
#endif
}

gboolean moelm_comm_all_true(MoelmComm *c, gboolean value, gboolean *all, GError **error)
{
  *all = value;
  if (c == NULL || c->size == 1)
    return TRUE;
#ifdef HAVE_MPI
  int v = value ? 1 : 0, r = 0;
  if (!moelm_mpi_check(MPI_Allreduce(&v, &r, 1, MPI_INT, MPI_LAND, MPI_COMM_WORLD), "allreduce", error))
    return FALSE;
  *all = r != 0;
#endif
  return TRUE;
}

gboolean moelm_comm_alltoall_i32(MoelmComm *c, const int32_t *send, int32_t *recv, int per_rank, GError **error)
{
  if (c == NULL || c->size == 1) {
    memcpy(recv, send, (size_t)per_rank * sizeof(int32_t));
    return TRUE;
  }
#ifdef HAVE_MPI
  return moelm_mpi_check(MPI_Alltoall(send, per_rank, MPI_INT32_T, recv, per_rank, MPI_INT32_T, MPI_COMM_WORLD),
                         "alltoall", error);
#else
  return TRUE;
#endif
}

gboolean moelm_comm_alltoallv_rows(MoelmComm *c, MoelmBackend *be, const void *send, const int32_t *send_rows,
                                   void *recv, const int32_t *recv_rows, size_t row_bytes, GError **error)
{
  const int W = moelm_comm_size(c);
#ifdef MOELM_WITH_NCCL
  if (c != NULL && c->nccl != NULL && be == c->nccl_be)
    return moelm_nccl_alltoallv_rows(c, send, send_rows, recv, recv_rows, row_bytes, error);
#endif
  size_t send_total = 0, recv_total = 0;
  for (int r = 0; r < W; r++) {
    send_total += (size_t)send_rows[r];
    recv_total += (size_t)recv_rows[r];
  }
  if (W == 1) {
    if (send_total > 0)
      be->ops->copy(be, recv, send, send_total * row_bytes);
    return TRUE;
  }
#ifdef HAVE_MPI
  /* counts and displacements in units of one row (a contiguous MPI type) */
  MPI_Datatype row;
  if (!moelm_mpi_check(MPI_Type_contiguous((int)row_bytes, MPI_BYTE, &row), "type", error))
    return FALSE;
  MPI_Type_commit(&row);
  const gsize nw = (gsize)MAX(W, 1);
  int *sc = g_new(int, nw), *sd = g_new(int, nw), *rc = g_new(int, nw), *rd = g_new(int, nw);
  for (int r = 0, s = 0, t = 0; r < W; r++) {
    sc[r] = send_rows[r];
    sd[r] = s;
    s += send_rows[r];
    rc[r] = recv_rows[r];
    rd[r] = t;
    t += recv_rows[r];
  }
  gboolean ok;
  if (be->device_id < 0) {
    ok = moelm_mpi_check(MPI_Alltoallv(send, sc, sd, row, recv, rc, rd, row, MPI_COMM_WORLD), "alltoallv", error);
  } else { /* a device backend without NCCL: through host memory */
    void *hs = g_malloc(send_total * row_bytes + 1), *hr = g_malloc(recv_total * row_bytes + 1);
    be->ops->to_host(be, hs, send, send_total * row_bytes);
    ok = moelm_mpi_check(MPI_Alltoallv(hs, sc, sd, row, hr, rc, rd, row, MPI_COMM_WORLD), "alltoallv", error);
    if (ok)
      be->ops->to_device(be, recv, hr, recv_total * row_bytes);
    g_free(hs);
    g_free(hr);
  }
  MPI_Type_free(&row);
  g_free(sc);
  g_free(sd);
  g_free(rc);
  g_free(rd);
  return ok;
#else
  return TRUE;
#endif
}
