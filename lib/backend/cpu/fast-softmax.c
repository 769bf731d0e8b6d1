/* moelm — fast softmax-family ops: rows split over the pool, vectorised exp. */
#include "config.h"

#include "backend/cpu/cpu-internal.h"
#include "backend/cpu/simd.h"

typedef struct {
  float *losses;
  float *logits;
  const float *cinp;
  float *out;
  const float *dout;
  float *dinp;
  const int32_t *targets;
  const float *dloss;
  int V, ignore_index;
} RowJob;

/* Rows per chunk so a chunk is at least ~32k elements. */
static int64_t row_grain(int V)
{
  return V >= 32768 ? 1 : 32768 / (V > 0 ? V : 1);
}

static float row_logsumexp(const float *row, int V)
{
  float max = moelm_vmax(row, V);
  return max + logf(moelm_vsum_exp_shift(row, max, V));
}

static void cross_entropy_rows(void *ctx, int64_t begin, int64_t end)
{
  const RowJob *j = ctx;
  for (int64_t n = begin; n < end; n++) {
    float *row = j->logits + n * j->V;
    int target = j->targets[n];
    gboolean ignored = target == j->ignore_index;
    float lse = row_logsumexp(row, j->V);
    if (j->losses != NULL)
      j->losses[n] = ignored ? 0.0f : lse - row[target];
    if (j->dloss == NULL)
      continue;
    float w = ignored ? 0.0f : j->dloss[n];
    moelm_vexp_shift_scale(row, row, lse, w, j->V);
    if (!ignored)
      row[target] -= w;
  }
}

static void fast_cross_entropy(MoelmBackend *be, float *losses, MoelmAct *logits_, const int32_t *targets,
                               const float *dloss, int N, int V, int ignore_index)
{
  float *logits = (float *)logits_;
  RowJob j = {.losses = losses, .logits = logits, .targets = targets, .dloss = dloss, .V = V,
              .ignore_index = ignore_index};
  moelm_thread_pool_run(moelm_cpu_pool(be), N, row_grain(V), cross_entropy_rows, &j);
}

static void target_log_probs_rows(void *ctx, int64_t begin, int64_t end)
{
  const RowJob *j = ctx;
  for (int64_t n = begin; n < end; n++) {
    const float *row = j->cinp + n * j->V;
    int target = j->targets[n];
    j->out[n] = target == j->ignore_index ? 0.0f : row[target] - row_logsumexp(row, j->V);
  }
}

static void fast_target_log_probs(MoelmBackend *be, float *lprobs, const MoelmAct *logits_, const int32_t *targets,
                                  int N, int V, int ignore_index)
{
  const float *logits = (const float *)logits_;
  RowJob j = {.out = lprobs, .cinp = logits, .targets = targets, .V = V, .ignore_index = ignore_index};
  moelm_thread_pool_run(moelm_cpu_pool(be), N, row_grain(V), target_log_probs_rows, &j);
}

static void log_softmax_rows(void *ctx, int64_t begin, int64_t end)
{
  const RowJob *j = ctx;
  for (int64_t n = begin; n < end; n++) {
    const float *x = j->cinp + n * j->V;
    float *o = j->out + n * j->V;
    float lse = row_logsumexp(x, j->V);
    for (int v = 0; v < j->V; v++)
      o[v] = x[v] - lse;
  }
}

static void fast_log_softmax_forward(MoelmBackend *be, float *out, const MoelmAct *inp_, int N, int V)
{
  const float *inp = (const float *)inp_;
  RowJob j = {.out = out, .cinp = inp, .V = V};
  moelm_thread_pool_run(moelm_cpu_pool(be), N, row_grain(V), log_softmax_rows, &j);
}

static void log_softmax_backward_rows(void *ctx, int64_t begin, int64_t end)
{
  const RowJob *j = ctx;
  for (int64_t n = begin; n < end; n++) {
    const float *y = j->cinp + n * j->V;
    const float *g = j->dout + n * j->V;
    float *d = j->dinp + n * j->V;
    float sum = 0.0f;
    for (int v = 0; v < j->V; v++)
      sum += g[v];
    for (int v = 0; v < j->V; v++)
      d[v] += g[v] - expf(y[v]) * sum;
  }
}

static void fast_log_softmax_backward(MoelmBackend *be, MoelmAct *dinp_, const float *out, const float *dout, int N,
                                      int V)
{
  float *dinp = (float *)dinp_;
  RowJob j = {.dinp = dinp, .cinp = out, .dout = dout, .V = V};
  moelm_thread_pool_run(moelm_cpu_pool(be), N, row_grain(V), log_softmax_backward_rows, &j);
}

void moelm_fast_fill_softmax(struct moelm_backend_ops *ops)
{
  ops->cross_entropy = fast_cross_entropy;
  ops->target_log_probs = fast_target_log_probs;
  ops->log_softmax_forward = fast_log_softmax_forward;
  ops->log_softmax_backward = fast_log_softmax_backward;
}
