/* moelm — op harness cases: causal self-attention (forward, backward, KV-cache decode; with
 * and without key padding masks, with dropout) and the softmax losses (cross-entropy,
 * target log-probabilities, log-softmax). */
#include "config.h"

#include <math.h>

#include "ops-harness.h"

#define O(r) ((r)->be->ops)
#define BE(r) ((r)->be)

static const MoelmDropoutIds attn_ids = {.seed = 77, .update = 4, .layer = 3, .site = 1};

/* ---- attention ------------------------------------------------------------------------------
 * Key padding: row b % 3 == 0 pads its first 3 keys (so early queries see no key and must
 * output zeros), row b % 3 == 1 pads scattered keys and the last, row b % 3 == 2 none. */

static const uint8_t *padding_mask(OpsRun *r, int B, int T)
{
  uint8_t *m = g_new0(uint8_t, (size_t)B * T + 1);
  for (int b = 0; b < B; b++)
    for (int t = 0; t < T; t++)
      m[(size_t)b * T + t] = b % 3 == 0 ? t < 3 : b % 3 == 1 ? (t % 7 == 2 || t == T - 1) : 0;
  const uint8_t *p = ops_u8_from(r, m, (size_t)B * T);
  g_free(m);
  return p;
}

static void run_attention_forward(OpsRun *r, const OpsCase *c)
{
  const int B = c->d[0], T = c->d[1], C = c->d[2], NH = c->d[3];
  const size_t n = (size_t)B * T * C;
  const uint8_t *kpm = (c->flags & OPS_MASK) ? padding_mask(r, B, T) : NULL;
  const MoelmAct *qkv = ops_act(r, 3 * n, -2, 2);
  void *saved = (c->flags & OPS_NO_SAVE) ? NULL : ops_scratch(r, O(r)->attention_saved_bytes(BE(r), B, T, C, NH));
  MoelmAct *out = ops_act_out(r, "out", n);
  if (OPS_OK(r))
    O(r)->attention_forward(BE(r), out, saved, qkv, kpm, B, T, C, NH, c->f, &attn_ids);
}

/* The backward reads what this backend's own forward saved. */
static void run_attention_backward(OpsRun *r, const OpsCase *c)
{
  const int B = c->d[0], T = c->d[1], C = c->d[2], NH = c->d[3];
  const size_t n = (size_t)B * T * C;
  const uint8_t *kpm = (c->flags & OPS_MASK) ? padding_mask(r, B, T) : NULL;
  const MoelmAct *qkv = ops_act(r, 3 * n, -2, 2), *dout = ops_act(r, n, -1, 1);
  void *saved = ops_scratch(r, O(r)->attention_saved_bytes(BE(r), B, T, C, NH));
  MoelmAct *out = ops_scratch(r, moelm_act_bytes(BE(r), n));
  MoelmAct *dqkv = ops_act_acc(r, "dqkv", 3 * n, -0.5f, 0.5f);
  if (!OPS_OK(r))
    return;
  O(r)->attention_forward(BE(r), out, saved, qkv, kpm, B, T, C, NH, c->f, &attn_ids);
  O(r)->attention_backward(BE(r), dqkv, dout, qkv, saved, kpm, B, T, C, NH, c->f, &attn_ids);
}

/* Cache rows past Tk hold NaN: the op must not read them. */
static void run_attention_decode(OpsRun *r, const OpsCase *c)
{
  const int B = c->d[0], Tq = c->d[1], Tk = c->d[2], Tcap = c->d[3], C = c->d[4], NH = c->d[5];
  const size_t nc = (size_t)B * Tcap * C;
  const uint8_t *kpm = (c->flags & OPS_MASK) ? padding_mask(r, B, Tk) : NULL;
  const MoelmAct *q = ops_act(r, (size_t)B * Tq * C, -2, 2);
  const MoelmAct *cache[2];
  for (int i = 0; i < 2; i++) {
    float *h = ops_host_uniform(r, nc, -2, 2);
    for (int b = 0; b < B; b++)
      for (size_t j = (size_t)Tk * C; j < (size_t)Tcap * C; j++)
        h[(size_t)b * Tcap * C + j] = NAN;
    cache[i] = ops_act_from(r, h, nc);
    g_free(h);
  }
  MoelmAct *out = ops_act_out(r, "out", (size_t)B * Tq * C);
  if (OPS_OK(r))
    O(r)->attention_decode(BE(r), out, q, cache[0], cache[1], kpm, B, Tq, Tk, Tcap, C, NH);
}

static const OpsDef def_attention_forward = {
    "attention_forward", OPS_ATTN, "B T C NH", "p", {OPS_NEEDS(attention_saved_bytes), OPS_NEEDS(attention_forward)},
    OPS_TOL_SUMS, run_attention_forward};
static const OpsDef def_attention_backward = {
    "attention_backward", OPS_ATTN, "B T C NH", "p",
    {OPS_NEEDS(attention_saved_bytes), OPS_NEEDS(attention_forward), OPS_NEEDS(attention_backward)},
    OPS_TOL_SUMS, run_attention_backward};
static const OpsDef def_attention_decode = {"attention_decode", OPS_ATTN, "B Tq Tk Tcap C NH", NULL,
                                            {OPS_NEEDS(attention_decode)}, OPS_TOL_SUMS,
                                            run_attention_decode};

/* ---- losses ------------------------------------------------------------------------------
 * ignore_index 1; every fifth target is ignored. */

enum { IGNORE = 1 };

static const int32_t *loss_targets(OpsRun *r, int N, int V)
{
  int32_t *t = g_new(int32_t, N + 1);
  for (int n = 0; n < N; n++)
    t[n] = n % 5 == 3 ? IGNORE : (int32_t)ops_below(r, (uint32_t)V);
  const int32_t *p = ops_i32_from(r, t, N);
  g_free(t);
  return p;
}

static void run_cross_entropy(OpsRun *r, const OpsCase *c)
{
  const int N = c->d[0], V = c->d[1];
  const int32_t *targets = loss_targets(r, N, V);
  /* logits become their gradient with dloss, and must stay untouched without */
  MoelmAct *logits = ops_act_inout(r, "logits", (size_t)N * V, -8, 8);
  const float *dloss = (c->flags & OPS_GRAD) ? ops_f32(r, N, 0, 1) : NULL;
  float *losses = (c->flags & OPS_NO_LOSS) ? NULL : ops_f32_out(r, "losses", N);
  if (OPS_OK(r))
    O(r)->cross_entropy(BE(r), losses, logits, targets, dloss, N, V, IGNORE);
}

static void run_target_log_probs(OpsRun *r, const OpsCase *c)
{
  const int N = c->d[0], V = c->d[1];
  const int32_t *targets = loss_targets(r, N, V);
  const MoelmAct *logits = ops_act(r, (size_t)N * V, -8, 8);
  float *lprobs = ops_f32_out(r, "lprobs", N);
  if (OPS_OK(r))
    O(r)->target_log_probs(BE(r), lprobs, logits, targets, N, V, IGNORE);
}

static void run_log_softmax_forward(OpsRun *r, const OpsCase *c)
{
  const int N = c->d[0], V = c->d[1];
  const MoelmAct *inp = ops_act(r, (size_t)N * V, -8, 8);
  float *out = ops_f32_out(r, "out", (size_t)N * V);
  if (OPS_OK(r))
    O(r)->log_softmax_forward(BE(r), out, inp, N, V);
}

/* The forward's result the backward reads: a log-softmax computed on the host. */
static void run_log_softmax_backward(OpsRun *r, const OpsCase *c)
{
  const int N = c->d[0], V = c->d[1];
  float *x = ops_host_uniform(r, (size_t)N * V, -8, 8);
  for (int n = 0; n < N; n++) {
    float *row = x + (size_t)n * V;
    double mx = row[0], sum = 0;
    for (int v = 1; v < V; v++)
      mx = fmax(mx, row[v]);
    for (int v = 0; v < V; v++)
      sum += exp(row[v] - mx);
    for (int v = 0; v < V; v++)
      row[v] = (float)(row[v] - mx - log(sum));
  }
  const float *out = ops_f32_from(r, x, (size_t)N * V), *dout = ops_f32(r, (size_t)N * V, -1, 1);
  g_free(x);
  MoelmAct *dinp = ops_act_acc(r, "dinp", (size_t)N * V, -1, 1);
  if (OPS_OK(r))
    O(r)->log_softmax_backward(BE(r), dinp, out, dout, N, V);
}

static const OpsDef def_cross_entropy = {"cross_entropy", OPS_LOSS, "N V", NULL, {OPS_NEEDS(cross_entropy)},
                                         OPS_TOL_SUMS, run_cross_entropy};
static const OpsDef def_target_log_probs = {"target_log_probs", OPS_LOSS, "N V", NULL,
                                            {OPS_NEEDS(target_log_probs)}, OPS_TOL_SUMS,
                                            run_target_log_probs};
static const OpsDef def_log_softmax_forward = {"log_softmax_forward", OPS_LOSS, "N V", NULL,
                                               {OPS_NEEDS(log_softmax_forward)}, OPS_TOL_SUMS,
                                               run_log_softmax_forward};
static const OpsDef def_log_softmax_backward = {"log_softmax_backward", OPS_LOSS, "N V", NULL,
                                                {OPS_NEEDS(log_softmax_backward)}, OPS_TOL_SUMS,
                                                run_log_softmax_backward};

/* ---- the cases ------------------------------------------------------------------------------ */

enum { SEQ = 256, DIM = 256, HEADS = 4, VOCAB = 8000 };

static const OpsCase attn_cases[] = {
    {&def_attention_forward, {2, 70, 24, 3}, 0.0f, OPS_MASK},
    {&def_attention_forward, {2, 70, 24, 3}, 0.1f, OPS_MASK},
    {&def_attention_forward, {3, 37, 40, 5}, 0.0f, 0},
    {&def_attention_forward, {3, 37, 40, 5}, 0.0f, OPS_MASK | OPS_NO_SAVE},
    {&def_attention_forward, {1, 9, 12, 2}, 0.5f, 0},
    {&def_attention_forward, {1, 1, 1, 1}, 0.0f, 0},
    {&def_attention_forward, {1, 1, 1, 1}, 0.0f, OPS_MASK}, /* the only key is padding */
    {&def_attention_forward, {2, SEQ, DIM, HEADS}, 0.1f, 0},
    {&def_attention_forward, {2, SEQ, DIM, HEADS}, 0.0f, OPS_MASK},
    {&def_attention_backward, {2, 70, 24, 3}, 0.0f, OPS_MASK},
    {&def_attention_backward, {2, 70, 24, 3}, 0.1f, OPS_MASK},
    {&def_attention_backward, {3, 37, 40, 5}, 0.0f, 0},
    {&def_attention_backward, {1, 9, 12, 2}, 0.5f, 0},
    {&def_attention_backward, {1, 1, 1, 1}, 0.0f, 0},
    {&def_attention_backward, {1, SEQ, DIM, HEADS}, 0.1f, 0},
    {&def_attention_backward, {3, SEQ, DIM, HEADS}, 0.0f, OPS_MASK},
    {&def_attention_decode, {2, 1, 9, 16, 24, 3}, 0, 0},
    {&def_attention_decode, {2, 1, 9, 16, 24, 3}, 0, OPS_MASK},
    {&def_attention_decode, {3, 4, 37, 41, 40, 5}, 0, OPS_MASK}, /* several new queries */
    {&def_attention_decode, {1, 1, 1, 1, 1, 1}, 0, 0},
    {&def_attention_decode, {5, 1, 200, SEQ, DIM, HEADS}, 0, OPS_MASK}, /* beam search, late step */

    {&def_cross_entropy, {37, 1003}, 0, 0},
    {&def_cross_entropy, {37, 1003}, 0, OPS_GRAD},
    {&def_cross_entropy, {37, 1003}, 0, OPS_GRAD | OPS_NO_LOSS},
    {&def_cross_entropy, {1, 1}, 0, OPS_GRAD},
    {&def_cross_entropy, {64, VOCAB}, 0, OPS_GRAD},
    {&def_target_log_probs, {37, 1003}, 0, 0},
    {&def_target_log_probs, {1, 1}, 0, 0},
    {&def_target_log_probs, {64, VOCAB}, 0, 0},
    {&def_log_softmax_forward, {37, 1003}, 0, 0},
    {&def_log_softmax_forward, {1, 1}, 0, 0},
    {&def_log_softmax_forward, {16, VOCAB}, 0, 0},
    {&def_log_softmax_backward, {37, 1003}, 0, 0},
    {&def_log_softmax_backward, {1, 2}, 0, 0},
    {&def_log_softmax_backward, {16, VOCAB}, 0, 0},
};

const OpsTable ops_attn_table = {attn_cases, G_N_ELEMENTS(attn_cases)};
