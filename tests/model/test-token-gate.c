/* fairseq's Top1Gate/Top2Gate routing (the moe_gate_* ops of the CPU backend, the reference
 * every backend's routing is held to) against a brute-force per-token reference written here
 * from the definition, l_aux on hand-computed cases, and the router's gradient against
 * central differences. */
#include "config.h"

#include <float.h>
#include <math.h>
#include <string.h>

#include "moelm-test.h"
#include "moelm/backend.h"
#include "moelm/rng.h"

/* ---- the routing ops on the CPU backend (host memory), under the test's old names ---------- */

typedef struct {
  MoelmBackend *be;
  MoelmRouteBuffers buf;
  double stats[MOELM_ROUTE_N_STATS];
  int S, K;
  /* views of the last routing */
  int32_t *choice, *location, *offsets, *dispatch_token, *dispatch_slot;
  uint8_t *kept;
  float *weight, *dispatch_weight;
  int n_dispatch;
  double l_aux, overflow1, overflow2;
} MoelmRouting;

enum { MAX_S = 64, MAX_E = 8 };

static MoelmRouting *moelm_routing_new(void)
{
  MoelmRouting *r = g_new0(MoelmRouting, 1);
  r->be = moelm_backend_cpu_new(TRUE, 1, NULL);
  MoelmRouteBuffers *b = &r->buf;
  const size_t slots = (size_t)MAX_S * 2;
  b->gates = g_new0(float, (size_t)MAX_S * MAX_E);
  b->choice = g_new0(int32_t, slots);
  b->norm = g_new0(float, slots);
  b->queued = g_new0(uint8_t, slots);
  b->location = g_new0(int32_t, slots);
  b->kept = g_new0(uint8_t, slots);
  b->weight = g_new0(float, slots);
  b->count1 = g_new0(int32_t, MAX_E);
  b->offsets = g_new0(int32_t, MAX_E + 1);
  b->dispatch_token = g_new0(int32_t, slots);
  b->dispatch_slot = g_new0(int32_t, slots);
  b->dispatch_weight = g_new0(float, slots);
  b->order = g_new0(int32_t, MAX_S);
  return r;
}

static void moelm_routing_free(MoelmRouting *r)
{
  MoelmRouteBuffers *b = &r->buf;
  void *bufs[] = {b->gates, b->choice, b->norm, b->queued, b->location, b->kept, b->weight,
                  b->count1, b->offsets, b->dispatch_token, b->dispatch_slot, b->dispatch_weight, b->order};
  for (gsize i = 0; i < G_N_ELEMENTS(bufs); i++)
    g_free(bufs[i]);
  moelm_backend_free(r->be);
  g_free(r);
}

static void moelm_token_gate_route(const MoelmRouteParams *p, const float *logits, const uint8_t *pad, int S,
                                   MoelmRouting *r)
{
  g_assert(S <= MAX_S && p->experts <= MAX_E);
  MoelmBackend *be = r->be;
  be->ops->moe_gate_topk(be, p, logits, pad, S, &r->buf);
  be->ops->moe_gate_dispatch(be, p, S, &r->buf);
  be->ops->moe_gate_stats(be, p, S, &r->buf, r->stats);
  r->S = S;
  r->K = p->top_k;
  r->choice = r->buf.choice;
  r->location = r->buf.location;
  r->offsets = r->buf.offsets;
  r->dispatch_token = r->buf.dispatch_token;
  r->dispatch_slot = r->buf.dispatch_slot;
  r->kept = r->buf.kept;
  r->weight = r->buf.weight;
  r->dispatch_weight = r->buf.dispatch_weight;
  r->n_dispatch = r->buf.offsets[p->experts];
  r->l_aux = r->stats[MOELM_ROUTE_STAT_L_AUX];
  r->overflow1 = r->stats[MOELM_ROUTE_STAT_OVERFLOW1];
  r->overflow2 = r->stats[MOELM_ROUTE_STAT_OVERFLOW2];
}

/* dweight per slot (S*K), as the old host router took it: mapped to the dispatch rows. */
static void moelm_token_gate_backward(const MoelmRouteParams *p, const MoelmRouting *r, const float *dweight,
                                      double aux_coef, float *dlogits)
{
  float drow[MAX_S * 2];
  for (int i = 0; i < r->S * r->K; i++)
    drow[i] = i < r->n_dispatch ? dweight[r->dispatch_slot[i]] : 0.0f;
  r->be->ops->moe_gate_backward(r->be, p, r->S, &r->buf, drow, aux_coef, dlogits);
}

/* ---- the reference: per token, straightforward loops --------------------------------- */

typedef struct {
  int choice[2];
  int kept[2];
  double weight[2];
} RefToken;

static double ref_unit(const MoelmRouteParams *p, uint16_t site, uint64_t i)
{
  return ((moelm_philox_word(p->seed, p->update, p->layer, site, i) >> 8) + 0.5) / 16777216.0;
}

/* Returns l_aux; fills out[S]. */
static double ref_route(const MoelmRouteParams *p, const float *logits, const uint8_t *pad, int S, RefToken *out)
{
  const int E = p->experts, K = p->top_k;
  double *g = g_new(double, (size_t)S * E), *v = g_new(double, (size_t)S * 2);
  int *queued = g_new0(int, (size_t)S * 2), *rank = g_new(int, S);
  for (int s = 0; s < S; s++) {
    const float *x = logits + (size_t)s * E;
    double z = 0;
    for (int e = 0; e < E; e++)
      z += exp((double)x[e]);
    for (int e = 0; e < E; e++)
      g[(size_t)s * E + e] = exp((double)x[e]) / z;
    int e1 = 0;
    for (int e = 1; e < E; e++)
      if ((float)g[(size_t)s * E + e] > (float)g[(size_t)s * E + e1])
        e1 = e;
    out[s].choice[0] = e1;
    out[s].choice[1] = -1;
    v[2 * s] = g[(size_t)s * E + e1];
    queued[2 * s] = pad == NULL || !pad[s];
    if (K == 2) {
      int e2 = -1;
      double best = 0;
      for (int e = 0; e < E; e++) {
        if (e == e1)
          continue;
        double score = x[e];
        if (p->noise && p->policy == MOELM_SECOND_EXPERT_SAMPLING)
          score += -log(-log(ref_unit(p, MOELM_GATE_SITE_GUMBEL, (uint64_t)s * E + e)));
        if (e2 < 0 || score > best) {
          e2 = e;
          best = score;
        }
      }
      out[s].choice[1] = e2;
      v[2 * s + 1] = g[(size_t)s * E + e2];
      if (p->normalize_before_dropping) {
        const double d = v[2 * s] + v[2 * s + 1];
        v[2 * s] /= d;
        v[2 * s + 1] /= d;
      }
      queued[2 * s + 1] = queued[2 * s];
      if (p->noise && p->policy == MOELM_SECOND_EXPERT_RANDOM &&
          !(2 * v[2 * s + 1] > ref_unit(p, MOELM_GATE_SITE_RANDOM, (uint64_t)s)))
        queued[2 * s + 1] = 0;
    }
  }
  /* priority rank: position of the token in the capacity queue order */
  for (int s = 0; s < S; s++) {
    rank[s] = s;
    if (p->batch_prioritized) {
      rank[s] = 0;
      const float gs = (float)g[(size_t)s * E + out[s].choice[0]];
      for (int t = 0; t < S; t++) {
        const float gt = (float)g[(size_t)t * E + out[t].choice[0]];
        rank[s] += gt > gs || (gt == gs && t < s);
      }
    }
  }
  int *count1 = g_new0(int, E);
  for (int s = 0; s < S; s++)
    count1[out[s].choice[0]] += queued[2 * s];
  for (int s = 0; s < S; s++)
    for (int k = 0; k < K; k++) {
      int loc = k == 1 ? count1[out[s].choice[1]] : 0;
      for (int t = 0; t < S; t++)
        loc += queued[2 * t + k] && out[t].choice[k] == out[s].choice[k] && rank[t] < rank[s];
      out[s].kept[k] = queued[2 * s + k] && (p->capacity <= 0 || loc < p->capacity);
    }
  for (int s = 0; s < S; s++) {
    for (int k = 0; k < 2; k++)
      out[s].weight[k] = k < K && out[s].kept[k] ? v[2 * s + k] : 0.0;
    if (K == 2 && !p->normalize_before_dropping) {
      const double d = out[s].weight[0] + out[s].weight[1];
      if (d > 0) {
        out[s].weight[0] /= d;
        out[s].weight[1] /= d;
      }
    }
  }
  double aux = 0;
  for (int e = 0; e < E; e++) {
    double me = 0;
    for (int s = 0; s < S; s++)
      me += g[(size_t)s * E + e] / S;
    aux += me * count1[e] / S;
  }
  g_free(g);
  g_free(v);
  g_free(queued);
  g_free(rank);
  g_free(count1);
  return aux * E;
}

/* ---- comparisons ------------------------------------------------------------------------ */

/* Logits with a preference for expert 0 so that capacity binds. */
static void random_logits(float *x, int S, int E, uint64_t seed)
{
  MoelmRng rng;
  moelm_rng_init(&rng, seed, 7, 0);
  for (int i = 0; i < S * E; i++)
    x[i] = 1.5f * moelm_rng_next_normal(&rng) + (i % E == 0 ? 1.0f : 0.0f);
}

typedef struct {
  int checked, dropped;
} Tally;

static void compare(const MoelmRouteParams *p, const float *logits, const uint8_t *pad, int S, Tally *tally)
{
  RefToken *ref = g_new0(RefToken, S);
  const double aux = ref_route(p, logits, pad, S, ref);
  MoelmRouting *r = moelm_routing_new();
  moelm_token_gate_route(p, logits, pad, S, r);
  const int K = p->top_k, E = p->experts;
  int mismatches = 0, kept_total = 0;
  for (int s = 0; s < S; s++)
    for (int k = 0; k < K; k++) {
      const size_t j = (size_t)s * K + k;
      const gboolean ok = r->choice[j] == ref[s].choice[k] && r->kept[j] == ref[s].kept[k] &&
                          fabs(r->weight[j] - ref[s].weight[k]) < 1e-5;
      if (!ok && mismatches++ < 3)
        g_printerr("\n  K=%d policy=%d cap=%d token %d choice %d: got e%d kept %d w %.6f, want e%d kept %d w %.6f", K,
                   p->policy, p->capacity, s, k, r->choice[j], r->kept[j], r->weight[j], ref[s].choice[k],
                   ref[s].kept[k], ref[s].weight[k]);
      kept_total += ref[s].kept[k];
      tally->dropped += (pad == NULL || !pad[s]) && !ref[s].kept[k];
      tally->checked++;
    }
  CU_ASSERT_EQUAL(mismatches, 0);
  CU_ASSERT_DOUBLE_EQUAL(r->l_aux, aux, 1e-5);
  /* the dispatch order: every kept slot once, grouped by expert, carrying its token and weight */
  CU_ASSERT_EQUAL(r->n_dispatch, kept_total);
  CU_ASSERT_EQUAL(r->offsets[0], 0);
  CU_ASSERT_EQUAL(r->offsets[E], r->n_dispatch);
  int *seen = g_new0(int, (size_t)S * K);
  for (int e = 0; e < E; e++)
    for (int i = r->offsets[e]; i < r->offsets[e + 1]; i++) {
      const int j = r->dispatch_slot[i];
      CU_ASSERT_EQUAL(r->choice[j], e);
      CU_ASSERT_EQUAL(r->dispatch_token[i], j / K);
      CU_ASSERT_EQUAL(r->dispatch_weight[i], r->weight[j]);
      seen[j]++;
    }
  for (int j = 0; j < S * K; j++)
    CU_ASSERT_EQUAL(seen[j], r->kept[j] ? 1 : 0);
  if (p->capacity > 0)
    for (int e = 0; e < E; e++)
      CU_ASSERT(r->offsets[e + 1] - r->offsets[e] <= p->capacity);
  g_free(seen);
  moelm_routing_free(r);
  g_free(ref);
}

static void test_router_matches_reference(void)
{
  enum { S = 37, E = 4 };
  float logits[S * E];
  uint8_t pad[S];
  for (int s = 0; s < S; s++)
    pad[s] = s % 9 == 4 || s >= S - 3; /* scattered and trailing padding */
  Tally binding = {0, 0}, loose = {0, 0}, random_drops = {0, 0};
  for (int K = 1; K <= 2; K++)
    for (int policy = 0; policy < (K == 2 ? 3 : 1); policy++)
      for (int variant = 0; variant < 16; variant++) {
        MoelmRouteParams p = {
            .experts = E,
            .top_k = K,
            .policy = (MoelmSecondExpertPolicy)policy,
            .normalize_before_dropping = (variant & 1) != 0,
            .batch_prioritized = (variant & 2) != 0,
            .noise = TRUE,
            .seed = 11,
            .update = (uint32_t)variant,
            .layer = 3,
        };
        const gboolean bind = (variant & 4) != 0, masked = (variant & 8) != 0;
        p.capacity = bind ? moelm_route_capacity(S, E, K, 1.0, FALSE, FALSE, 0) : 0;
        random_logits(logits, S, E, (uint64_t)(100 + variant + 16 * policy + 64 * K));
        Tally *t = bind ? &binding : policy == MOELM_SECOND_EXPERT_RANDOM ? &random_drops : &loose;
        compare(&p, logits, masked ? pad : NULL, S, t);
      }
  /* the cases really differ: a binding capacity drops tokens, an unlimited one only the
   * random policy's second choices */
  CU_ASSERT(binding.dropped > binding.checked / 10);
  CU_ASSERT(random_drops.dropped > 0);
  CU_ASSERT_EQUAL(loose.dropped, 0);
}

/* Without noise (eval) the second expert is the plain argmax and always kept. */
static void test_router_eval_is_deterministic(void)
{
  enum { S = 20, E = 5 };
  float logits[S * E];
  random_logits(logits, S, E, 5);
  for (int policy = 0; policy < 3; policy++) {
    MoelmRouteParams p = {.experts = E, .top_k = 2, .policy = (MoelmSecondExpertPolicy)policy, .noise = FALSE};
    MoelmRouteParams all = p;
    all.policy = MOELM_SECOND_EXPERT_ALL;
    Tally t = {0, 0};
    compare(&p, logits, NULL, S, &t);
    CU_ASSERT_EQUAL(t.dropped, 0);
    MoelmRouting *a = moelm_routing_new(), *b = moelm_routing_new();
    moelm_token_gate_route(&p, logits, NULL, S, a);
    moelm_token_gate_route(&all, logits, NULL, S, b);
    CU_ASSERT_EQUAL(memcmp(a->choice, b->choice, S * 2 * sizeof(int32_t)), 0);
    moelm_routing_free(a);
    moelm_routing_free(b);
  }
}

static void test_capacity_formula(void)
{
  /* fairseq: top-1 int(f * ceil(S/E)); top-2 2 * ceil(S/E); eval ceil(fraction * S) */
  CU_ASSERT_EQUAL(moelm_route_capacity(10, 4, 1, 1.0, FALSE, FALSE, 0), 3);
  CU_ASSERT_EQUAL(moelm_route_capacity(10, 4, 1, 1.5, FALSE, FALSE, 0), 4);
  CU_ASSERT_EQUAL(moelm_route_capacity(10, 4, 2, 1.0, FALSE, FALSE, 0), 6);
  CU_ASSERT_EQUAL(moelm_route_capacity(10, 4, 2, 1.0, FALSE, TRUE, 0.25), 3);
  CU_ASSERT_EQUAL(moelm_route_capacity(10, 4, 2, 1.0, FALSE, TRUE, -1), 0);
  CU_ASSERT_EQUAL(moelm_route_capacity(10, 4, 2, 1.0, TRUE, FALSE, 0), 0);
}

/* l_aux and combine weights on cases small enough to do by hand. */
static void test_l_aux_by_hand(void)
{
  MoelmRouting *r = moelm_routing_new();
  MoelmRouteParams p = {.experts = 2, .top_k = 1};
  /* gates [0.75, 0.25] and [0.5, 0.5] (tie: expert 0): me = [0.625, 0.375], ce = [1, 0] */
  const float a[4] = {logf(3.0f), 0.0f, 0.0f, 0.0f};
  moelm_token_gate_route(&p, a, NULL, 2, r);
  CU_ASSERT_DOUBLE_EQUAL(r->l_aux, 2 * 0.625, 1e-6);
  CU_ASSERT_DOUBLE_EQUAL(r->weight[0], 0.75, 1e-6); /* top-1: the raw gate */
  CU_ASSERT_DOUBLE_EQUAL(r->weight[1], 0.5, 1e-6);
  /* balanced: gates [0.75, 0.25], [0.25, 0.75]: me = [0.5, 0.5], ce = [0.5, 0.5] → 1 */
  const float b[4] = {logf(3.0f), 0.0f, 0.0f, logf(3.0f)};
  moelm_token_gate_route(&p, b, NULL, 2, r);
  CU_ASSERT_DOUBLE_EQUAL(r->l_aux, 1.0, 1e-6);
  /* the second token is padding: ce = [0.5, 0] (S stays 2), me unchanged → 0.5 */
  const uint8_t pad[2] = {0, 1};
  moelm_token_gate_route(&p, b, pad, 2, r);
  CU_ASSERT_DOUBLE_EQUAL(r->l_aux, 0.5, 1e-6);
  CU_ASSERT_EQUAL(r->kept[1], 0);
  CU_ASSERT_EQUAL(r->n_dispatch, 1);
  /* top-2 over 3 experts, gates [4/7, 2/7, 1/7]: weights renormalised to [2/3, 1/3] */
  MoelmRouteParams p2 = {.experts = 3, .top_k = 2, .policy = MOELM_SECOND_EXPERT_ALL};
  const float c[3] = {logf(4.0f), logf(2.0f), 0.0f};
  moelm_token_gate_route(&p2, c, NULL, 1, r);
  CU_ASSERT_EQUAL(r->choice[0], 0);
  CU_ASSERT_EQUAL(r->choice[1], 1);
  CU_ASSERT_DOUBLE_EQUAL(r->weight[0], 2.0 / 3, 1e-6);
  CU_ASSERT_DOUBLE_EQUAL(r->weight[1], 1.0 / 3, 1e-6);
  CU_ASSERT_DOUBLE_EQUAL(r->l_aux, 3 * (4.0 / 7), 1e-6); /* ce = [1, 0, 0] */
  /* capacity 1, both tokens prefer expert 0; token 1's second choice is expert 2: token 1's
   * first choice overflows, its second survives alone with weight 1 */
  p2.capacity = 1;
  const float d[6] = {logf(4.0f), logf(2.0f), 0.0f, logf(4.0f), 0.0f, logf(2.0f)};
  moelm_token_gate_route(&p2, d, NULL, 2, r);
  CU_ASSERT_EQUAL(r->choice[3], 2);
  CU_ASSERT(r->kept[0] && r->kept[1] && !r->kept[2] && r->kept[3]);
  CU_ASSERT_DOUBLE_EQUAL(r->weight[0], 2.0 / 3, 1e-6);
  CU_ASSERT_DOUBLE_EQUAL(r->weight[2], 0.0, 1e-9);
  CU_ASSERT_DOUBLE_EQUAL(r->weight[3], 1.0, 1e-6);
  CU_ASSERT_DOUBLE_EQUAL(r->overflow1, 50.0, 1e-9);
  CU_ASSERT_DOUBLE_EQUAL(r->overflow2, 0.0, 1e-9);
  /* normalised before dropping instead: token 1 keeps its pre-drop share 1/3 */
  p2.normalize_before_dropping = TRUE;
  moelm_token_gate_route(&p2, d, NULL, 2, r);
  CU_ASSERT_DOUBLE_EQUAL(r->weight[3], 1.0 / 3, 1e-6);
  moelm_routing_free(r);
}

/* f(logits) = sum_j c_j weight_j + c_aux l_aux, routing held fixed. */
static double router_objective(const MoelmRouteParams *p, const float *logits, const uint8_t *pad, int S,
                               const float *c, double c_aux, MoelmRouting *r, const MoelmRouting *expect)
{
  moelm_token_gate_route(p, logits, pad, S, r);
  if (expect) { /* the perturbation must not change a decision */
    const size_t slots = (size_t)S * p->top_k;
    CU_ASSERT_EQUAL(memcmp(r->choice, expect->choice, slots * sizeof(int32_t)), 0);
    CU_ASSERT_EQUAL(memcmp(r->kept, expect->kept, slots), 0);
    CU_ASSERT_EQUAL(memcmp(r->location, expect->location, slots * sizeof(int32_t)), 0);
  }
  double f = c_aux * r->l_aux;
  for (int j = 0; j < S * p->top_k; j++)
    f += (double)c[j] * r->weight[j];
  return f;
}

static void test_router_gradient(void)
{
  enum { S = 12, E = 4 };
  float logits[S * E], c[S * 2], dlogits[S * E];
  uint8_t pad[S] = {0};
  pad[5] = pad[11] = 1;
  MoelmRng rng;
  moelm_rng_init(&rng, 9, 1, 0);
  for (int j = 0; j < S * 2; j++)
    c[j] = moelm_rng_next_normal(&rng);
  int bad = 0, checked = 0;
  for (int variant = 0; variant < 8; variant++) {
    const int K = variant & 1 ? 1 : 2;
    MoelmRouteParams p = {.experts = E,
                              .top_k = K,
                              .policy = MOELM_SECOND_EXPERT_ALL,
                              .normalize_before_dropping = (variant & 2) != 0,
                              .capacity = variant & 4 ? K * 2 : 0, /* binding: 12 tokens, 4 experts */
                              .batch_prioritized = (variant & 4) != 0};
    /* well separated logits: no decision flips within the finite-difference step */
    for (int s = 0; s < S; s++)
      for (int e = 0; e < E; e++)
        logits[s * E + e] = 0.9f * (float)((s * 7 + e * 3 + variant) % E) + 0.05f * moelm_rng_next_normal(&rng);
    MoelmRouting *r0 = moelm_routing_new(), *r = moelm_routing_new();
    const double c_aux = variant & 1 ? 30.0 : 3.0; /* l_aux's gradient is small per logit: make it count */
    router_objective(&p, logits, pad, S, c, c_aux, r0, NULL);
    if (p.capacity > 0) {
      int dropped = 0;
      for (int j = 0; j < S * K; j++)
        dropped += r0->location[j] >= 0 && !r0->kept[j];
      CU_ASSERT(dropped > 0);
    }
    moelm_token_gate_backward(&p, r0, c, c_aux, dlogits);
    for (int i = 0; i < S * E; i++) {
      const float saved = logits[i], h = 1e-3f;
      logits[i] = saved + h;
      const double fp = router_objective(&p, logits, pad, S, c, c_aux, r, r0);
      logits[i] = saved - h;
      const double fm = router_objective(&p, logits, pad, S, c, c_aux, r, r0);
      logits[i] = saved;
      const double numeric = (fp - fm) / (2.0 * h);
      if (fabs(numeric - dlogits[i]) > 2e-3 + 1e-2 * fabs(numeric)) {
        if (bad++ < 5)
          g_printerr("\n  variant %d logit %d: analytic %.6g numeric %.6g", variant, i, dlogits[i], numeric);
      }
      checked++;
    }
    moelm_routing_free(r0);
    moelm_routing_free(r);
  }
  CU_ASSERT_EQUAL(bad, 0);
  CU_ASSERT_EQUAL(checked, 8 * S * E);
}

MOELM_TEST_SUITE(moe_gate)
{
  CU_add_test(suite, "capacity formula", test_capacity_formula);
  CU_add_test(suite, "l_aux and combine weights by hand", test_l_aux_by_hand);
  CU_add_test(suite, "routing equals the brute-force reference", test_router_matches_reference);
  CU_add_test(suite, "eval routing: no noise, second expert kept", test_router_eval_is_deterministic);
  CU_add_test(suite, "router gradient against central differences", test_router_gradient);
}
