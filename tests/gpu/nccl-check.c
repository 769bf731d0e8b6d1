/* NCCL on one GPU (issue 12's device check): the process group (one process, or mpirun's),
 * a CUDA backend, NCCL bootstrapped over MPI, then an all-reduce and an all-to-all of device
 * rows checked against what they must give. Exit 0 when both are right, 77 without a GPU. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>

#include "moelm/backend.h"
#include "moelm/dist.h"

int main(void)
{
  GError *error = NULL;
  MoelmComm *comm = moelm_comm_open(&error);
  if (comm == NULL) {
    fprintf(stderr, "nccl-check: %s\n", error->message);
    return 1;
  }
  const int W = moelm_comm_size(comm), rank = moelm_comm_rank(comm);
  MoelmBackendSpec spec;
  moelm_backend_spec_init(&spec);
  spec.kind = MOELM_BACKEND_CUDA;
  spec.device_id = moelm_comm_local_rank(comm);
  spec.precision = MOELM_PRECISION_FP32;
  MoelmBackend *be = moelm_backend_open(&spec, &error);
  if (be == NULL) {
    fprintf(stderr, "nccl-check: skipped: %s\n", error->message);
    moelm_comm_free(comm);
    return 77;
  }
  if (!moelm_comm_attach_nccl(comm, be, &error)) {
    fprintf(stderr, "nccl-check: %s\n", error->message);
    return 1;
  }
  /* all-reduce: rank r contributes (r + 1) * (i + 1) */
  enum { N = 1 << 20, C = 16 };
  float *h = g_new(float, N);
  for (int i = 0; i < N; i++)
    h[i] = (float)(rank + 1) * (float)(i % 1000 + 1);
  float *d = be->ops->alloc(be, N * sizeof(float), &error);
  be->ops->to_device(be, d, h, N * sizeof(float));
  gboolean ok = moelm_comm_allreduce_f32(comm, be, d, N, &error) && be->ops->synchronize(be, &error);
  be->ops->to_host(be, h, d, N * sizeof(float));
  const float ranks = (float)W * (W + 1) / 2;
  int bad = 0;
  for (int i = 0; ok && i < N; i++)
    bad += h[i] != ranks * (float)(i % 1000 + 1);
  printf("nccl all-reduce over %d rank%s of %d floats: %s\n", W, W == 1 ? "" : "s", N,
         ok && bad == 0 ? "right" : "WRONG");
  /* all-to-all: rank r sends q + 1 rows of C floats, all = 100 r + q, to each rank q */
  int32_t *send_rows = g_new(int32_t, W), *recv_rows = g_new(int32_t, W);
  int ns = 0, nr = 0;
  for (int q = 0; q < W; q++) {
    send_rows[q] = q + 1;
    recv_rows[q] = rank + 1;
    ns += send_rows[q];
    nr += recv_rows[q];
  }
  float *hs = g_new(float, (size_t)ns * C), *hr = g_new(float, (size_t)nr * C);
  for (int q = 0, row = 0; q < W; q++)
    for (int k = 0; k < send_rows[q]; k++, row++)
      for (int c = 0; c < C; c++)
        hs[row * C + c] = (float)(100 * rank + q);
  float *ds = be->ops->alloc(be, (size_t)ns * C * sizeof(float), &error);
  float *dr = be->ops->alloc(be, (size_t)nr * C * sizeof(float), &error);
  be->ops->to_device(be, ds, hs, (size_t)ns * C * sizeof(float));
  const gboolean ok2 = moelm_comm_alltoallv_rows(comm, be, ds, send_rows, dr, recv_rows, C * sizeof(float), &error) &&
                       be->ops->synchronize(be, &error);
  be->ops->to_host(be, hr, dr, (size_t)nr * C * sizeof(float));
  int bad2 = 0;
  for (int q = 0, row = 0; ok2 && q < W; q++)
    for (int k = 0; k < recv_rows[q]; k++, row++)
      for (int c = 0; c < C; c++)
        bad2 += hr[row * C + c] != (float)(100 * q + rank);
  printf("nccl all-to-all over %d rank%s: %s\n", W, W == 1 ? "" : "s", ok2 && bad2 == 0 ? "right" : "WRONG");
  if (error)
    fprintf(stderr, "nccl-check: %s\n", error->message);
  be->ops->free(be, d);
  be->ops->free(be, ds);
  be->ops->free(be, dr);
  moelm_comm_detach_nccl(comm);
  moelm_backend_free(be);
  moelm_comm_free(comm);
  return ok && ok2 && bad == 0 && bad2 == 0 ? 0 : 1;
}
