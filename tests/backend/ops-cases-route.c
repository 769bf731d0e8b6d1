/* moelm — op harness cases: token routing (moe_gate_topk, moe_gate_dispatch, moe_gate_stats,
 * moe_gate_backward) and MoEfication's top-k selection (topk_dispatch). Choices, queue flags, locations, kept flags, counts, offsets and
 * dispatch rows are integers and must equal the reference exactly, on every backend (routing
 * is fp32 even where activations are half precision); gates and weights are compared by NMSE.
 * A later op's case runs the earlier ops on the same backend to get its inputs (as the MoE
 * layer does); the earlier op's own cases check those. */
#include "config.h"

#include "ops-harness.h"

#define O(r) ((r)->be->ops)
#define BE(r) ((r)->be)

/* Which routing buffers a case compares; the others are scratch. */
enum {
  R_GATES = 1 << 0, R_CHOICE = 1 << 1, R_NORM = 1 << 2, R_QUEUED = 1 << 3, R_LOCATION = 1 << 4, R_KEPT = 1 << 5,
  R_WEIGHT = 1 << 6, R_COUNT1 = 1 << 7, R_OFFSETS = 1 << 8, R_DTOKEN = 1 << 9, R_DSLOT = 1 << 10, R_DWEIGHT = 1 << 11
};

/* d[3] capacity: > 0 slots per expert, 0 dropless, -1 fairseq's training capacity (factor 1). */
static MoelmRouteParams route_params(const OpsCase *c)
{
  const int S = c->d[0], E = c->d[1], K = c->d[2];
  MoelmRouteParams p = {.experts = E, .top_k = K, .seed = 99, .update = 5, .layer = 1};
  p.capacity = c->d[3] < 0 ? moelm_route_capacity(S, E, K, 1.0, FALSE, FALSE, 0) : c->d[3];
  p.policy = (c->flags & OPS_ALL) ? MOELM_SECOND_EXPERT_ALL
             : (c->flags & OPS_RANDOM) ? MOELM_SECOND_EXPERT_RANDOM
                                       : MOELM_SECOND_EXPERT_SAMPLING;
  p.normalize_before_dropping = !!(c->flags & OPS_NORM_BEFORE);
  p.batch_prioritized = !!(c->flags & OPS_BPR);
  p.noise = !!(c->flags & OPS_NOISE);
  return p;
}

static float *f32_buf(OpsRun *r, unsigned compare, unsigned bit, const char *name, size_t n)
{
  return (compare & bit) ? ops_f32_out(r, name, n) : ops_scratch(r, n * sizeof(float));
}

static int32_t *i32_buf(OpsRun *r, unsigned compare, unsigned bit, const char *name, size_t n)
{
  return (compare & bit) ? ops_i32_out(r, name, n) : ops_scratch(r, n * sizeof(int32_t));
}

static uint8_t *u8_buf(OpsRun *r, unsigned compare, unsigned bit, const char *name, size_t n)
{
  return (compare & bit) ? ops_u8_out(r, name, n) : ops_scratch(r, n);
}

static MoelmRouteBuffers route_buffers(OpsRun *r, const OpsCase *c, unsigned compare)
{
  const size_t S = (size_t)c->d[0], E = (size_t)c->d[1], SK = S * (size_t)c->d[2];
  MoelmRouteBuffers b = {
      .gates = f32_buf(r, compare, R_GATES, "gates", S * E),
      .choice = i32_buf(r, compare, R_CHOICE, "choice", SK),
      .norm = f32_buf(r, compare, R_NORM, "norm", SK),
      .queued = u8_buf(r, compare, R_QUEUED, "queued", SK),
      .location = i32_buf(r, compare, R_LOCATION, "location", SK),
      .kept = u8_buf(r, compare, R_KEPT, "kept", SK),
      .weight = f32_buf(r, compare, R_WEIGHT, "weight", SK),
      .count1 = i32_buf(r, compare, R_COUNT1, "count1", E),
      .offsets = i32_buf(r, compare, R_OFFSETS, "offsets", E + 1),
      .dispatch_token = i32_buf(r, compare, R_DTOKEN, "dispatch_token", SK),
      .dispatch_slot = i32_buf(r, compare, R_DSLOT, "dispatch_slot", SK),
      .dispatch_weight = f32_buf(r, compare, R_DWEIGHT, "dispatch_weight", SK),
      .order = ops_scratch(r, S * sizeof(int32_t)),
  };
  return b;
}

/* Router logits: uniform, or quantised to {0, 1, 2} (exact ties), or with expert 0 favoured
 * so that its queue overflows; every fifth token is padding with OPS_MASK. */
typedef struct {
  const float *logits;
  const uint8_t *pad;
} RouteInputs;

static RouteInputs route_inputs(OpsRun *r, const OpsCase *c)
{
  const int S = c->d[0], E = c->d[1];
  float *x = ops_host_uniform(r, (size_t)S * E, -2, 2);
  for (int s = 0; s < S; s++)
    for (int e = 0; e < E; e++) {
      float *v = &x[(size_t)s * E + e];
      if (c->flags & OPS_TIES)
        *v = (float)ops_below(r, 3);
      if ((c->flags & OPS_SKEW) && e == 0)
        *v += 1.5f;
    }
  RouteInputs in = {ops_f32_from(r, x, (size_t)S * E), NULL};
  g_free(x);
  if (c->flags & OPS_MASK) {
    uint8_t *pad = g_new0(uint8_t, S + 1);
    for (int s = 0; s < S; s++)
      pad[s] = s % 5 == 4;
    in.pad = ops_u8_from(r, pad, S);
    g_free(pad);
  }
  return in;
}

static void run_topk(OpsRun *r, const OpsCase *c)
{
  const MoelmRouteParams p = route_params(c);
  RouteInputs in = route_inputs(r, c);
  MoelmRouteBuffers b = route_buffers(r, c, R_GATES | R_CHOICE | R_NORM | R_QUEUED);
  if (OPS_OK(r))
    O(r)->moe_gate_topk(BE(r), &p, in.logits, in.pad, c->d[0], &b);
}

static void run_dispatch(OpsRun *r, const OpsCase *c)
{
  const MoelmRouteParams p = route_params(c);
  RouteInputs in = route_inputs(r, c);
  MoelmRouteBuffers b = route_buffers(r, c,
                                      R_LOCATION | R_KEPT | R_WEIGHT | R_COUNT1 | R_OFFSETS | R_DTOKEN | R_DSLOT |
                                          R_DWEIGHT);
  if (!OPS_OK(r))
    return;
  O(r)->moe_gate_topk(BE(r), &p, in.logits, in.pad, c->d[0], &b);
  O(r)->moe_gate_dispatch(BE(r), &p, c->d[0], &b);
}

/* Each statistic is its own output (so a small one is not drowned by the percentages); the
 * expert counts must be exact. */
static void run_stats(OpsRun *r, const OpsCase *c)
{
  static const char *const names[MOELM_ROUTE_N_STATS] = {
      "l_aux", "entropy", "overflow1", "overflow2", "unused1", "unused2",
      "balance_top1", "balance_bottom1", "balance_top2", "balance_bottom2"};
  const MoelmRouteParams p = route_params(c);
  RouteInputs in = route_inputs(r, c);
  MoelmRouteBuffers b = route_buffers(r, c, 0);
  double *stats = ops_scratch(r, MOELM_ROUTE_N_STATS * sizeof(double));
  double *out[MOELM_ROUTE_N_STATS];
  for (int i = 0; i < MOELM_ROUTE_N_STATS; i++)
    out[i] = ops_f64_out(r, names[i], 1, i == MOELM_ROUTE_STAT_UNUSED1 || i == MOELM_ROUTE_STAT_UNUSED2);
  if (!OPS_OK(r))
    return;
  O(r)->moe_gate_topk(BE(r), &p, in.logits, in.pad, c->d[0], &b);
  O(r)->moe_gate_dispatch(BE(r), &p, c->d[0], &b);
  O(r)->moe_gate_stats(BE(r), &p, c->d[0], &b, stats);
  for (int i = 0; i < MOELM_ROUTE_N_STATS; i++)
    O(r)->copy(BE(r), out[i], stats + i, sizeof(double));
}

static void run_gate_backward(OpsRun *r, const OpsCase *c)
{
  const int S = c->d[0], E = c->d[1], K = c->d[2];
  const MoelmRouteParams p = route_params(c);
  RouteInputs in = route_inputs(r, c);
  MoelmRouteBuffers b = route_buffers(r, c, 0);
  const float *drow = ops_f32(r, (size_t)S * K, -1, 1);
  float *dlogits = ops_f32_out(r, "dlogits", (size_t)S * E);
  if (!OPS_OK(r))
    return;
  O(r)->moe_gate_topk(BE(r), &p, in.logits, in.pad, S, &b);
  O(r)->moe_gate_dispatch(BE(r), &p, S, &b);
  O(r)->moe_gate_backward(BE(r), &p, S, &b, drow, c->f, dlogits);
}

/* MoEfication's top-k selection by score (no capacity, no weights): the choices, offsets and
 * dispatch tokens are integers and exact. */
static void run_topk_dispatch(OpsRun *r, const OpsCase *c)
{
  const int S = c->d[0], E = c->d[1], K = c->d[2];
  RouteInputs in = route_inputs(r, c);
  int32_t *choice = ops_i32_out(r, "choice", (size_t)S * K);
  int32_t *offsets = ops_i32_out(r, "offsets", (size_t)E + 1);
  int32_t *tokens = ops_i32_out(r, "dispatch_token", (size_t)S * K);
  if (OPS_OK(r))
    O(r)->topk_dispatch(BE(r), in.logits, in.pad, S, E, K, choice, offsets, tokens);
}

/* Routing is fp32 on every backend: one tolerance for all activation types. */
#define TOL_ROUTE OPS_TOL_F32_SUMS

static const OpsDef def_topk = {"moe_gate_topk", OPS_ROUTE, "S E K cap", NULL, {OPS_NEEDS(moe_gate_topk)}, TOL_ROUTE,
                                run_topk};
static const OpsDef def_dispatch = {"moe_gate_dispatch", OPS_ROUTE, "S E K cap", NULL,
                                    {OPS_NEEDS(moe_gate_topk), OPS_NEEDS(moe_gate_dispatch)}, TOL_ROUTE,
                                    run_dispatch};
static const OpsDef def_stats = {"moe_gate_stats", OPS_ROUTE, "S E K cap", NULL,
                                 {OPS_NEEDS(moe_gate_topk), OPS_NEEDS(moe_gate_dispatch), OPS_NEEDS(moe_gate_stats),
                                  OPS_NEEDS(copy)},
                                 TOL_ROUTE, run_stats};
static const OpsDef def_topk_dispatch = {"topk_dispatch", OPS_ROUTE, "S E K", NULL, {OPS_NEEDS(topk_dispatch)},
                                         TOL_ROUTE, run_topk_dispatch};
static const OpsDef def_gate_backward = {"moe_gate_backward", OPS_ROUTE, "S E K cap", "aux",
                                         {OPS_NEEDS(moe_gate_topk), OPS_NEEDS(moe_gate_dispatch),
                                          OPS_NEEDS(moe_gate_backward)},
                                         TOL_ROUTE, run_gate_backward};

/* ---- the cases ------------------------------------------------------------------------------ */

enum { TOKENS = 2048, FAIRSEQ = -1, DROPLESS = 0 };

static const OpsCase route_cases[] = {
    {&def_topk, {1, 4, 2, FAIRSEQ}, 0, 0},
    {&def_topk, {37, 4, 2, FAIRSEQ}, 0, 0},
    {&def_topk, {37, 4, 2, FAIRSEQ}, 0, OPS_NOISE},
    {&def_topk, {37, 4, 2, FAIRSEQ}, 0, OPS_NOISE | OPS_RANDOM | OPS_NORM_BEFORE},
    {&def_topk, {37, 4, 2, FAIRSEQ}, 0, OPS_ALL | OPS_MASK},
    {&def_topk, {37, 4, 1, FAIRSEQ}, 0, OPS_MASK},
    {&def_topk, {37, 3, 2, FAIRSEQ}, 0, OPS_TIES},
    {&def_topk, {37, 1, 1, FAIRSEQ}, 0, 0},
    {&def_topk, {TOKENS, 4, 2, FAIRSEQ}, 0, OPS_NOISE},

    {&def_dispatch, {1, 4, 2, FAIRSEQ}, 0, 0},
    {&def_dispatch, {37, 4, 2, FAIRSEQ}, 0, OPS_SKEW},     /* capacity binds */
    {&def_dispatch, {37, 4, 2, DROPLESS}, 0, OPS_SKEW},
    {&def_dispatch, {37, 4, 2, FAIRSEQ}, 0, OPS_SKEW | OPS_BPR},
    {&def_dispatch, {37, 4, 2, FAIRSEQ}, 0, OPS_SKEW | OPS_MASK},
    {&def_dispatch, {37, 4, 2, FAIRSEQ}, 0, OPS_SKEW | OPS_NORM_BEFORE},
    {&def_dispatch, {37, 4, 2, FAIRSEQ}, 0, OPS_SKEW | OPS_NOISE | OPS_RANDOM},
    {&def_dispatch, {37, 4, 2, 3}, 0, OPS_NOISE},
    {&def_dispatch, {37, 4, 1, FAIRSEQ}, 0, OPS_SKEW},
    {&def_dispatch, {37, 3, 2, 5}, 0, OPS_TIES | OPS_BPR}, /* ties in the priority order */
    {&def_dispatch, {64, 8, 2, FAIRSEQ}, 0, OPS_NOISE},
    {&def_dispatch, {TOKENS, 4, 2, FAIRSEQ}, 0, OPS_SKEW | OPS_NOISE},
    {&def_dispatch, {TOKENS, 4, 2, DROPLESS}, 0, OPS_NOISE | OPS_BPR | OPS_MASK},

    {&def_stats, {1, 4, 2, FAIRSEQ}, 0, 0},
    {&def_stats, {37, 4, 2, FAIRSEQ}, 0, OPS_SKEW},
    {&def_stats, {37, 4, 1, FAIRSEQ}, 0, OPS_SKEW | OPS_MASK},
    {&def_stats, {TOKENS, 4, 2, FAIRSEQ}, 0, OPS_SKEW | OPS_NOISE},

    {&def_gate_backward, {1, 4, 2, FAIRSEQ}, 0.3f, 0},
    {&def_gate_backward, {37, 4, 2, FAIRSEQ}, 0.3f, OPS_SKEW},
    {&def_gate_backward, {37, 4, 2, FAIRSEQ}, 0.3f, OPS_SKEW | OPS_NORM_BEFORE},
    {&def_gate_backward, {37, 4, 1, FAIRSEQ}, 0.3f, OPS_SKEW | OPS_MASK},
    {&def_gate_backward, {37, 4, 2, DROPLESS}, 0.0f, OPS_BPR},
    {&def_gate_backward, {TOKENS, 4, 2, FAIRSEQ}, 0.01f, OPS_SKEW | OPS_NOISE},

    {&def_topk_dispatch, {1, 4, 1}, 0, 0},
    {&def_topk_dispatch, {37, 8, 3}, 0, 0},
    {&def_topk_dispatch, {37, 8, 3}, 0, OPS_TIES | OPS_MASK},
    {&def_topk_dispatch, {37, 8, 8}, 0, OPS_TIES},
    {&def_topk_dispatch, {64, 128, 13}, 0, OPS_SKEW},
    {&def_topk_dispatch, {TOKENS, 32, 6}, 0, OPS_MASK},
};

const OpsTable ops_route_table = {route_cases, G_N_ELEMENTS(route_cases)};
