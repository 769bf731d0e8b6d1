/* moelm — gradient all-reduce in buckets that overlap with the backward (see
 * lib/moelm/dist.h). Buckets are fixed ranges of the arena; each counts the floats of it that
 * the backward has finished; a full bucket starts its MPI_Iallreduce at once. The backward
 * finishes the arena roughly from the end to the start (last layer first), so buckets start
 * in that order too. MPI wants non-blocking collectives started in the same order on every
 * rank: the order follows the sequence of ready() calls, which the trainer makes the same on
 * every rank (a rank without a batch replays the model's sequence). */
#include "config.h"

#include <string.h>

#ifdef HAVE_MPI
#include <mpi.h>
#endif

#include "dist/dist-internal.h"
#include "moelm/errors.h"
#include "moelm/timer.h"

typedef struct {
  size_t begin, end; /* floats of the arena */
  size_t ready;      /* floats finished in this update */
  gboolean started;
#ifdef HAVE_MPI
  MPI_Request req;
#endif
} Bucket;

struct MoelmGradSync {
  MoelmComm *comm;
  MoelmBackend *be;
  float *grads;  /* backend memory */
  float *host;   /* its host view (the arena itself on the CPU) */
  size_t n;
  Bucket *buckets;
  int n_buckets;
  size_t bucket_floats;
  int overlapped;
  double wait_s;
  GError *error; /* the first failure of a start during the backward */
};

MoelmGradSync *moelm_grad_sync_new(MoelmComm *comm, MoelmBackend *be, float *grads, size_t n, size_t bucket_bytes,
                                   GError **error)
{
  MoelmGradSync *s = g_new0(MoelmGradSync, 1);
  s->comm = comm;
  s->be = be;
  s->grads = grads;
  s->n = n;
  s->bucket_floats = MAX(bucket_bytes / sizeof(float), (size_t)1024);
  s->bucket_floats = MIN(s->bucket_floats, (size_t)MOELM_MPI_MAX_COUNT);
  s->n_buckets = (int)((n + s->bucket_floats - 1) / s->bucket_floats);
  s->buckets = g_new0(Bucket, MAX(s->n_buckets, 1));
  for (int b = 0; b < s->n_buckets; b++) {
    s->buckets[b].begin = (size_t)b * s->bucket_floats;
    s->buckets[b].end = MIN(n, (size_t)(b + 1) * s->bucket_floats);
  }
  return s;
}

void moelm_grad_sync_free(MoelmGradSync *s)
{
  if (s == NULL)
    return;
  g_clear_error(&s->error);
  g_free(s->buckets);
  g_free(s);
}

void moelm_grad_sync_begin(MoelmGradSync *s)
{
  for (int b = 0; b < s->n_buckets; b++) {
    s->buckets[b].ready = 0;
    s->buckets[b].started = FALSE;
  }
  s->overlapped = 0;
  s->wait_s = 0;
  g_clear_error(&s->error);
  s->host = NULL;
}

static void start(MoelmGradSync *s, Bucket *bk)
{
  bk->started = TRUE;
  if (moelm_comm_size(s->comm) == 1)
    return;
#ifdef HAVE_MPI
  if (s->host == NULL) /* device arenas are staged once, when the first bucket starts */
    s->host = moelm_comm_host_view(s->comm, s->be, s->grads, s->n * sizeof(float), TRUE);
  const int rc = MPI_Iallreduce(MPI_IN_PLACE, s->host + bk->begin, (int)(bk->end - bk->begin), MPI_FLOAT, MPI_SUM,
                                MPI_COMM_WORLD, &bk->req);
  if (s->error == NULL)
    moelm_mpi_check(rc, "iallreduce", &s->error);
  if (rc != MPI_SUCCESS)
    bk->req = MPI_REQUEST_NULL;
#endif
}

void moelm_grad_sync_ready(MoelmGradSync *s, size_t offset, size_t count)
{
  /* a device arena would be staged before all of it is final: start only at finish then */
  if (s->be != NULL && s->be->device_id >= 0)
    return;
  const size_t end = MIN(offset + count, s->n);
  for (size_t i = offset; i < end;) {
    Bucket *bk = &s->buckets[i / s->bucket_floats];
    const size_t upto = MIN(end, bk->end);
    bk->ready += upto - i;
    if (!bk->started && bk->ready >= bk->end - bk->begin) {
      start(s, bk);
      s->overlapped++;
    }
    i = upto;
  }
#ifdef HAVE_MPI
  /* nudge the started reductions along (MPI progresses non-blocking collectives inside calls) */
  if (moelm_comm_size(s->comm) > 1)
    for (int b = 0; b < s->n_buckets; b++)
      if (s->buckets[b].started && s->buckets[b].req != MPI_REQUEST_NULL) {
        int done = 0;
        MPI_Test(&s->buckets[b].req, &done, MPI_STATUS_IGNORE);
      }
#endif
}

gboolean moelm_grad_sync_finish(MoelmGradSync *s, GError **error)
{
  const double t0 = moelm_time_now();
  /* the rest in the same order every rank uses: from the end of the arena to the start */
  for (int b = s->n_buckets - 1; b >= 0; b--)
    if (!s->buckets[b].started)
      start(s, &s->buckets[b]);
  gboolean ok = TRUE;
#ifdef HAVE_MPI
  if (moelm_comm_size(s->comm) > 1)
    for (int b = 0; b < s->n_buckets; b++)
      if (s->buckets[b].req != MPI_REQUEST_NULL) {
        const int rc = MPI_Wait(&s->buckets[b].req, MPI_STATUS_IGNORE);
        if (ok && !moelm_mpi_check(rc, "iallreduce", error))
          ok = FALSE;
      }
  if (ok && s->error != NULL) {
    g_propagate_error(error, s->error);
    s->error = NULL;
    ok = FALSE;
  }
  if (ok && s->host != NULL)
    moelm_comm_host_done(s->comm, s->be, s->grads, s->host, s->n * sizeof(float));
#endif
  s->wait_s = moelm_time_now() - t0;
  return ok;
}

int moelm_grad_sync_overlapped(const MoelmGradSync *s) { return s->overlapped; }
int moelm_grad_sync_n_buckets(const MoelmGradSync *s) { return s->n_buckets; }
double moelm_grad_sync_wait_seconds(const MoelmGradSync *s) { return s->wait_s; }
