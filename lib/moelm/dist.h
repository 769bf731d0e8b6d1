/* moelm — the process group of a distributed run (DESIGN §11): one process, or N processes
 * started by mpirun/srun that talk through MPI (and, on GPUs, NCCL bootstrapped over MPI).
 *
 * Every collective is called by every rank in the same order. Buffers are host memory unless
 * the call takes a backend (then they are that backend's memory: direct for the CPU, staged
 * through the host or handed to NCCL for a GPU). Errors come back as GError; a rank that dies
 * makes mpirun end the others (Open MPI aborts the job when a process exits without
 * finalising), so nobody hangs. docs/distributed.md has the whole story. */
#ifndef MOELM_DIST_H
#define MOELM_DIST_H

#include <stddef.h>
#include <stdint.h>
#include <glib.h>

#include "moelm/backend.h"

G_BEGIN_DECLS

typedef struct MoelmComm MoelmComm;

/* Join the process group the environment describes: MPI when this build has it and the
 * process was started by mpirun/srun (OMPI_COMM_WORLD_SIZE, PMI_SIZE, PMIX_RANK or SLURM's
 * task variables), else a group of one. Call before any thread is started. */
MoelmComm *moelm_comm_open(GError **error);
/* Leave the group (MPI_Finalize). NULL is fine. */
void moelm_comm_free(MoelmComm *comm);
/* Have the launcher end every rank of an MPI group now with `status` (MPI_Abort, which does
 * not return). For a group of one it does nothing: the caller ends its own process. */
void moelm_comm_abort(MoelmComm *comm, int status);

int moelm_comm_rank(const MoelmComm *comm);       /* 0 for NULL */
int moelm_comm_size(const MoelmComm *comm);       /* 1 for NULL */
int moelm_comm_local_rank(const MoelmComm *comm); /* rank on this machine (binds the GPU) */
const char *moelm_comm_name(const MoelmComm *comm); /* "single", "mpi" */

/* NCCL (builds with the CUDA backend and NCCL): make the group's collectives on `be`'s memory
 * (a CUDA backend) go through NCCL on its stream; every rank calls it. Elsewhere it fails with
 * a message. detach ends the communicator (moelm_comm_free does it too). */
gboolean moelm_comm_attach_nccl(MoelmComm *comm, MoelmBackend *be, GError **error);
void moelm_comm_detach_nccl(MoelmComm *comm);
/* Whether NCCL is attached. */
gboolean moelm_comm_has_nccl(const MoelmComm *comm);

/* Element-wise sums over the ranks, in place. */
gboolean moelm_comm_allreduce_f64(MoelmComm *comm, double *buf, size_t n, GError **error);
gboolean moelm_comm_allreduce_f32(MoelmComm *comm, MoelmBackend *be, float *buf, size_t n, GError **error);
/* rank 0's bytes to everyone. */
gboolean moelm_comm_broadcast(MoelmComm *comm, void *buf, size_t bytes, GError **error);
/* Logical AND of `value` over the ranks (all agree, or everyone learns that someone did not). */
gboolean moelm_comm_all_true(MoelmComm *comm, gboolean value, gboolean *all, GError **error);
/* Every rank sends `per_rank` int32 to each rank: send (size, per_rank) → recv (size, per_rank). */
gboolean moelm_comm_alltoall_i32(MoelmComm *comm, const int32_t *send, int32_t *recv, int per_rank,
                                 GError **error);
/* Rows of `row_bytes` bytes: send_rows[r] rows (contiguous, in rank order) go to rank r;
 * recv_rows[r] rows come from rank r into recv, in rank order. Backend memory of `be`. */
gboolean moelm_comm_alltoallv_rows(MoelmComm *comm, MoelmBackend *be, const void *send, const int32_t *send_rows,
                                   void *recv, const int32_t *recv_rows, size_t row_bytes, GError **error);

/* ---- gradient buckets that overlap with the backward -------------------------------------- *
 * The gradient arena (n floats of backend memory) is cut into buckets of about `bucket_bytes`.
 * During the backward the model reports finished parameter ranges (moelm_grad_sync_ready); a
 * bucket whose elements are all finished is all-reduced at once, asynchronously
 * (MPI_Iallreduce), while the backward goes on. moelm_grad_sync_finish reduces what is left and
 * waits for everything: then the arena holds the sum over the ranks. */
typedef struct MoelmGradSync MoelmGradSync;

MoelmGradSync *moelm_grad_sync_new(MoelmComm *comm, MoelmBackend *be, float *grads, size_t n, size_t bucket_bytes,
                                   GError **error);
void moelm_grad_sync_free(MoelmGradSync *sync);
/* Start an update's reduction (every bucket pending). */
void moelm_grad_sync_begin(MoelmGradSync *sync);
/* [offset, offset + count) of the arena holds its final gradient for this update. */
void moelm_grad_sync_ready(MoelmGradSync *sync, size_t offset, size_t count);
/* Reduce every bucket not yet started, wait for all; FALSE on a communication error. */
gboolean moelm_grad_sync_finish(MoelmGradSync *sync, GError **error);
/* Buckets launched during the backward (before finish) in the last update, and in all. */
int moelm_grad_sync_overlapped(const MoelmGradSync *sync);
int moelm_grad_sync_n_buckets(const MoelmGradSync *sync);
/* Seconds spent inside finish (waiting on the network) in the last update. */
double moelm_grad_sync_wait_seconds(const MoelmGradSync *sync);

G_END_DECLS

#endif
