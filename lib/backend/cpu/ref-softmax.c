/* moelm — reference softmax-family ops over rows of V: fused cross-entropy (with the
 * gradient written over the logits), target log-probabilities, log_softmax. */
#include "config.h"

#include "backend/cpu/cpu-internal.h"

/* log(sum(exp(row))) in double. */
static double row_logsumexp(const float *row, int V)
{
  double max = -INFINITY;
  for (int v = 0; v < V; v++)
    if (row[v] > max)
      max = row[v];
  double sum = 0;
  for (int v = 0; v < V; v++)
    sum += exp(row[v] - max);
  return max + log(sum);
}

static void ref_cross_entropy(MoelmBackend *be, float *losses, MoelmAct *logits_, const int32_t *targets,
                              const float *dloss, int N, int V, int ignore_index)
{
  float *logits = (float *)logits_;
  for (int n = 0; n < N; n++) {
    float *row = logits + (size_t)n * V;
    int target = targets[n];
    gboolean ignored = target == ignore_index;
    double lse = row_logsumexp(row, V);
    if (losses != NULL)
      losses[n] = ignored ? 0.0f : (float)(lse - row[target]);
    if (dloss == NULL)
      continue;
    double w = ignored ? 0.0 : dloss[n];
    for (int v = 0; v < V; v++)
      row[v] = (float)((exp(row[v] - lse) - (v == target ? 1.0 : 0.0)) * w);
  }
}

static void ref_target_log_probs(MoelmBackend *be, float *lprobs, const MoelmAct *logits_, const int32_t *targets,
                                 int N, int V, int ignore_index)
{
  const float *logits = (const float *)logits_;
  for (int n = 0; n < N; n++) {
    const float *row = logits + (size_t)n * V;
    lprobs[n] = targets[n] == ignore_index ? 0.0f : (float)(row[targets[n]] - row_logsumexp(row, V));
  }
}

static void ref_log_softmax_forward(MoelmBackend *be, float *out, const MoelmAct *inp_, int N, int V)
{
  const float *inp = (const float *)inp_;
  for (int n = 0; n < N; n++) {
    const float *x = inp + (size_t)n * V;
    float *o = out + (size_t)n * V;
    double lse = row_logsumexp(x, V);
    for (int v = 0; v < V; v++)
      o[v] = (float)(x[v] - lse);
  }
}

static void ref_log_softmax_backward(MoelmBackend *be, MoelmAct *dinp_, const float *out, const float *dout, int N,
                                     int V)
{
  float *dinp = (float *)dinp_;
  for (int n = 0; n < N; n++) {
    const float *y = out + (size_t)n * V;
    const float *g = dout + (size_t)n * V;
    double sum = 0;
    for (int v = 0; v < V; v++)
      sum += g[v];
    for (int v = 0; v < V; v++)
      dinp[(size_t)n * V + v] += (float)(g[v] - exp(y[v]) * sum);
  }
}

void moelm_ref_fill_softmax(struct moelm_backend_ops *ops)
{
  ops->cross_entropy = ref_cross_entropy;
  ops->target_log_probs = ref_target_log_probs;
  ops->log_softmax_forward = ref_log_softmax_forward;
  ops->log_softmax_backward = ref_log_softmax_backward;
}
