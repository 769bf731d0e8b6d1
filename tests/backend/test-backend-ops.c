/* moelm — the op harness suite: every case of the tables (ops-cases-*.c) on every backend
 * that is built and present, against the CPU reference; a report table on stderr; and a
 * self-check that the harness catches broken ops (a wrong sign, an unwritten element, an
 * overwrite instead of +=, a different dropout mask, a wrong routing choice, a missing op). */
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "moelm-test.h"
#include "ops-harness.h"

/* ---- the backends under test ----------------------------------------------------------------
 * A new backend adds one entry here; one that is not built or has no device returns NULL with
 * the reason and is reported as skipped. */

static MoelmBackend *cpu(MoelmCpuIsa isa, int threads, MoelmDtype act, GError **error)
{
  return moelm_backend_cpu_new_full(FALSE, threads, isa, act, error);
}

static MoelmBackend *open_avx2_1(GError **e) { return cpu(MOELM_CPU_ISA_AVX2, 1, MOELM_DT_F32, e); }
static MoelmBackend *open_avx2_3(GError **e) { return cpu(MOELM_CPU_ISA_AVX2, 3, MOELM_DT_F32, e); }
static MoelmBackend *open_generic_1(GError **e) { return cpu(MOELM_CPU_ISA_GENERIC, 1, MOELM_DT_F32, e); }
static MoelmBackend *open_generic_3(GError **e) { return cpu(MOELM_CPU_ISA_GENERIC, 3, MOELM_DT_F32, e); }
static MoelmBackend *open_bf16(GError **e) { return cpu(MOELM_CPU_ISA_AUTO, 3, MOELM_DT_BF16, e); }
static MoelmBackend *open_fp16(GError **e) { return cpu(MOELM_CPU_ISA_GENERIC, 1, MOELM_DT_F16, e); }

static MoelmBackend *open_cuda(MoelmPrecision precision, GError **error)
{
  MoelmBackendSpec spec;
  moelm_backend_spec_init(&spec);
  spec.kind = MOELM_BACKEND_CUDA;
  spec.device_id = 0;
  spec.precision = precision;
  return moelm_backend_open(&spec, error);
}

static MoelmBackend *open_cuda_fp32(GError **e) { return open_cuda(MOELM_PRECISION_FP32, e); }
static MoelmBackend *open_cuda_bf16(GError **e) { return open_cuda(MOELM_PRECISION_BF16, e); }
static MoelmBackend *open_cuda_fp16(GError **e) { return open_cuda(MOELM_PRECISION_FP16, e); }

static const OpsBackendEntry backend_list[] = {
    {"cpu avx2 1 thread", open_avx2_1},
    {"cpu avx2 3 threads", open_avx2_3},
    {"cpu generic 1 thread", open_generic_1},
    {"cpu generic 3 threads", open_generic_3},
    {"cpu-bf16 3 threads", open_bf16},
    {"cpu-fp16 generic 1 th", open_fp16},
    {"cuda fp32", open_cuda_fp32},
    {"cuda bf16", open_cuda_bf16},
    {"cuda fp16", open_cuda_fp16},
};
enum { N_BACKENDS = G_N_ELEMENTS(backend_list) };

static const OpsTable *const tables[] = {&ops_dense_table, &ops_attn_table, &ops_route_table};

typedef struct {
  MoelmBackend *be; /* NULL: not present */
  char *absent;     /* why not */
  int run, passed, failed, skipped;
  double worst[OPS_N_FAMILIES];
  int family_run[OPS_N_FAMILIES], family_skipped[OPS_N_FAMILIES];
} BackendState;

static MoelmBackend *reference;
static BackendState states[N_BACKENDS];
static gboolean opened;
static double started;

static void open_backends(void)
{
  if (opened)
    return;
  opened = TRUE;
  started = g_get_monotonic_time() / 1e6;
  GError *error = NULL;
  reference = moelm_backend_cpu_new(TRUE, 1, &error);
  g_assert_no_error(error);
  for (int i = 0; i < N_BACKENDS; i++) {
    states[i].be = backend_list[i].open(&error);
    if (states[i].be == NULL) {
      states[i].absent = g_strdup(error ? error->message : "not present");
      g_clear_error(&error);
    }
  }
}

static void fail_case(const char *backend, const char *label, const char *message)
{
  char *text = g_strdup_printf("%s: %s: %s", backend, label, message);
  fprintf(stderr, "\n  backend_ops FAILED: %s\n", text);
  CU_assertImplementation(CU_FALSE, __LINE__, text, __FILE__, "", CU_FALSE); /* CUnit copies it */
  g_free(text);
}

static void run_family(OpsFamily family)
{
  open_backends();
  int cases = 0;
  for (size_t t = 0; t < G_N_ELEMENTS(tables); t++)
    for (size_t k = 0; k < tables[t]->n; k++) {
      const OpsCase *c = &tables[t]->cases[k];
      if (c->def->family != family)
        continue;
      cases++;
      char *label = ops_case_label(c);
      OpsRefCache *cache = ops_ref_cache_new(reference, c);
      for (int i = 0; i < N_BACKENDS; i++) {
        BackendState *s = &states[i];
        if (s->be == NULL)
          continue;
        double nmse;
        char *message;
        if (ops_verbose())
          fprintf(stderr, "%-22s %s:", backend_list[i].name, label);
        OpsVerdict v = ops_check_case(c, s->be, cache, &nmse, &message);
        if (ops_verbose())
          fprintf(stderr, " %s\n", v == OPS_PASS ? "ok" : v == OPS_SKIP ? "skipped" : "FAILED");
        if (v == OPS_SKIP) {
          s->skipped++;
          s->family_skipped[family]++;
        } else {
          s->run++;
          s->family_run[family]++;
          if (v == OPS_PASS) {
            s->passed++;
            s->worst[family] = fmax(s->worst[family], nmse);
          } else {
            s->failed++;
            fail_case(backend_list[i].name, label, message);
          }
        }
        g_free(message);
      }
      ops_ref_cache_free(cache);
      g_free(label);
    }
  CU_ASSERT(cases > 0);
}

#define FAMILY_TEST(f) \
  static void test_##f(void) { run_family(f); }
FAMILY_TEST(OPS_MEM)
FAMILY_TEST(OPS_GEMM)
FAMILY_TEST(OPS_EMBED)
FAMILY_TEST(OPS_LNORM)
FAMILY_TEST(OPS_LINEAR)
FAMILY_TEST(OPS_GROUPED)
FAMILY_TEST(OPS_ATTN)
FAMILY_TEST(OPS_ACT)
FAMILY_TEST(OPS_DROPOUT)
FAMILY_TEST(OPS_ROWS)
FAMILY_TEST(OPS_LOSS)
FAMILY_TEST(OPS_ROUTE)
FAMILY_TEST(OPS_ADAM)

/* ---- the report ---------------------------------------------------------------------------- */

static void test_report(void)
{
  open_backends();
  size_t total = 0, per_family[OPS_N_FAMILIES] = {0};
  for (size_t t = 0; t < G_N_ELEMENTS(tables); t++)
    for (size_t k = 0; k < tables[t]->n; k++, total++)
      per_family[tables[t]->cases[k].def->family]++;
  fprintf(stderr, "\nbackend_ops: %zu op cases per backend against %s, %.1f s; cases per family:", total,
          reference->description, g_get_monotonic_time() / 1e6 - started);
  for (int f = 0; f < OPS_N_FAMILIES; f++)
    fprintf(stderr, " %s %zu", ops_family_name(f), per_family[f]);
  fprintf(stderr, "\nworst NMSE per family (tolerances in docs/backend.md, \"The op harness\"):\n");
  fprintf(stderr, "%-22s %4s %4s %4s %4s |", "backend", "run", "pass", "fail", "skip");
  for (int f = 0; f < OPS_N_FAMILIES; f++)
    fprintf(stderr, " %-7s", ops_family_name(f));
  fprintf(stderr, "\n");
  int present = 0;
  for (int i = 0; i < N_BACKENDS; i++) {
    const BackendState *s = &states[i];
    if (s->be == NULL) {
      fprintf(stderr, "%-22s skipped: %s\n", backend_list[i].name, s->absent);
      continue;
    }
    present++;
    fprintf(stderr, "%-22s %4d %4d %4d %4d |", backend_list[i].name, s->run, s->passed, s->failed, s->skipped);
    for (int f = 0; f < OPS_N_FAMILIES; f++) {
      if (s->family_run[f] > 0)
        fprintf(stderr, " %7.1e", s->worst[f]);
      else
        fprintf(stderr, " %-7s", s->family_skipped[f] > 0 ? "skip" : "-");
    }
    fprintf(stderr, "\n");
    CU_ASSERT(s->run > 0);
    CU_ASSERT_EQUAL(s->failed, 0);
    CU_ASSERT_EQUAL((size_t)(s->run + s->skipped), total); /* every family test ran */
  }
  CU_ASSERT(present > 0);
  for (int i = 0; i < N_BACKENDS; i++) {
    moelm_backend_free(states[i].be);
    g_free(states[i].absent);
  }
  moelm_backend_free(reference);
  memset(states, 0, sizeof states);
  reference = NULL;
  opened = FALSE;
}

/* ---- the harness can fail ---------------------------------------------------------------------
 * Test doubles of a fast fp32 CPU backend with one op broken. They touch the (host) buffers
 * directly, which only a CPU test double may do. */

static const struct moelm_backend_ops *good;
static struct moelm_backend_ops broken;

static float *F(void *p) { return p; }

/* the last element of out never written (it keeps the poison) */
static void unwritten_layernorm(MoelmBackend *be, MoelmAct *out, float *mean, float *rstd, const MoelmAct *inp,
                                const float *w, const float *b, int N, int C, float eps)
{
  good->layernorm_forward(be, out, mean, rstd, inp, w, b, N, C, eps);
  F(out)[(size_t)N * C - 1] = NAN;
}

/* the unused rows past offsets[E] left as they were */
static void unwritten_grouped(MoelmBackend *be, MoelmAct *out, const MoelmAct *inp, const float *w, size_t ws,
                              const float *b, size_t bs, const int32_t *off, int E, int R, int IC, int OC)
{
  good->grouped_linear_forward(be, out, inp, w, ws, b, bs, off, E, R, IC, OC);
  for (size_t i = (size_t)off[E] * OC; i < (size_t)R * OC; i++)
    F(out)[i] = NAN;
}

/* dinp = instead of += */
static void overwriting_activation_backward(MoelmBackend *be, MoelmActivation act, MoelmAct *dinp,
                                            const MoelmAct *inp, const MoelmAct *dout, size_t n)
{
  memset(dinp, 0, n * sizeof(float));
  good->activation_backward(be, act, dinp, inp, dout, n);
}

/* the bias subtracted */
static void sign_linear_forward(MoelmBackend *be, MoelmAct *out, const MoelmAct *inp, const float *w,
                                const float *bias, int N, int IC, int OC)
{
  good->linear_forward(be, out, inp, w, bias, N, IC, OC);
  if (bias != NULL)
    for (int n = 0; n < N; n++)
      for (int o = 0; o < OC; o++)
        F(out)[(size_t)n * OC + o] -= 2 * bias[o];
}

/* masks from another Philox stream: the same keep rate, other elements */
static void other_mask_dropout(MoelmBackend *be, MoelmAct *out, const MoelmAct *inp, size_t n, float p,
                               const MoelmDropoutIds *ids)
{
  MoelmDropoutIds other = *ids;
  other.site++;
  good->dropout_forward(be, out, inp, n, p, &other);
}

/* token 0's two choices swapped */
static void swapped_topk(MoelmBackend *be, const MoelmRouteParams *p, const float *logits, const uint8_t *pad,
                         int S, const MoelmRouteBuffers *r)
{
  good->moe_gate_topk(be, p, logits, pad, S, r);
  if (p->top_k == 2 && S > 0) {
    int32_t t = r->choice[0];
    r->choice[0] = r->choice[1];
    r->choice[1] = t;
  }
}

static const OpsCase *find_case(const char *op, unsigned flags)
{
  for (size_t t = 0; t < G_N_ELEMENTS(tables); t++)
    for (size_t k = 0; k < tables[t]->n; k++) {
      const OpsCase *c = &tables[t]->cases[k];
      if (strcmp(c->def->name, op) == 0 && (c->flags & flags) == flags && c->d[0] > 1)
        return c;
    }
  CU_FAIL_FATAL("no such case");
  return NULL;
}

/* The case passes on the good table and gets `expect` on the broken one; the message must
 * contain `needle`. */
static void expect_verdict(MoelmBackend *be, MoelmBackend *ref, const char *op, unsigned flags, OpsVerdict expect,
                           const char *needle)
{
  const OpsCase *c = find_case(op, flags);
  OpsRefCache *cache = ops_ref_cache_new(ref, c);
  double nmse;
  char *message;
  const struct moelm_backend_ops *table = be->ops;
  be->ops = good;
  CU_ASSERT_EQUAL(ops_check_case(c, be, cache, &nmse, &message), OPS_PASS);
  g_free(message);
  be->ops = table;
  OpsVerdict v = ops_check_case(c, be, cache, &nmse, &message);
  CU_ASSERT_EQUAL(v, expect);
  CU_ASSERT(message != NULL && strstr(message, needle) != NULL);
  if (v != expect || message == NULL || strstr(message, needle) == NULL)
    fprintf(stderr, "\n  %s: verdict %d, message: %s\n", op, v, message ? message : "(none)");
  g_free(message);
  ops_ref_cache_free(cache);
}

static void test_harness_fails(void)
{
  GError *error = NULL;
  MoelmBackend *ref = moelm_backend_cpu_new(TRUE, 1, &error);
  MoelmBackend *be = moelm_backend_cpu_new_full(FALSE, 2, MOELM_CPU_ISA_AUTO, MOELM_DT_F32, &error);
  CU_ASSERT_PTR_NOT_NULL_FATAL(ref);
  CU_ASSERT_PTR_NOT_NULL_FATAL(be);
  good = be->ops;
  struct {
    const char *op;
    unsigned flags;
    OpsVerdict expect;
    const char *needle;
  } checks[] = {
      {"layernorm_forward", 0, OPS_FAIL, "unwritten"},
      {"grouped_linear_forward", OPS_BIAS, OPS_FAIL, "unwritten"},
      {"activation_backward", 0, OPS_FAIL, "dinp: NMSE"},
      {"linear_forward", OPS_BIAS, OPS_FAIL, "out: NMSE"},
      {"dropout_forward", 0, OPS_FAIL, "out: NMSE"},
      {"moe_gate_topk", 0, OPS_FAIL, "choice: 2 of"},
      {"moe_gate_dispatch", 0, OPS_SKIP, "moe_gate_dispatch is not in this backend's table"},
  };
  for (size_t i = 0; i < G_N_ELEMENTS(checks); i++) {
    broken = *good;
    switch (i) {
    case 0: broken.layernorm_forward = unwritten_layernorm; break;
    case 1: broken.grouped_linear_forward = unwritten_grouped; break;
    case 2: broken.activation_backward = overwriting_activation_backward; break;
    case 3: broken.linear_forward = sign_linear_forward; break;
    case 4: broken.dropout_forward = other_mask_dropout; break;
    case 5: broken.moe_gate_topk = swapped_topk; break;
    case 6: broken.moe_gate_dispatch = NULL; break;
    }
    be->ops = &broken;
    expect_verdict(be, ref, checks[i].op, checks[i].flags, checks[i].expect, checks[i].needle);
  }
  be->ops = good;
  moelm_backend_free(be);
  moelm_backend_free(ref);
}

MOELM_TEST_SUITE(backend_ops)
{
  CU_add_test(suite, "harness self-check: broken ops are caught, missing ops skipped", test_harness_fails);
  CU_add_test(suite, "mem: zero, copy, convert, fill, add, axpy, scale, sum_squares", test_OPS_MEM);
  CU_add_test(suite, "gemm", test_OPS_GEMM);
  CU_add_test(suite, "embedding forward/backward", test_OPS_EMBED);
  CU_add_test(suite, "layernorm forward/backward", test_OPS_LNORM);
  CU_add_test(suite, "linear forward/backward", test_OPS_LINEAR);
  CU_add_test(suite, "grouped linear forward/backward", test_OPS_GROUPED);
  CU_add_test(suite, "attention forward/backward/decode", test_OPS_ATTN);
  CU_add_test(suite, "activations forward/backward", test_OPS_ACT);
  CU_add_test(suite, "dropout forward/backward", test_OPS_DROPOUT);
  CU_add_test(suite, "gather/scatter rows", test_OPS_ROWS);
  CU_add_test(suite, "cross-entropy, target log-probs, log-softmax", test_OPS_LOSS);
  CU_add_test(suite, "token routing: topk, dispatch, stats, backward; topk_dispatch", test_OPS_ROUTE);
  CU_add_test(suite, "adam step", test_OPS_ADAM);
  CU_add_test(suite, "report: every backend, every case", test_report);
}
