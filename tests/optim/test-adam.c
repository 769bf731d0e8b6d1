/* Adam (fairseq's, i.e. AdamW) over a flat buffer: hand-computed first steps, an
 * independent double-precision re-implementation over several steps with weight decay,
 * thread splits, errors, checkpoint state. */
#include "config.h"

#include <math.h>
#include <string.h>

#include "moelm-test.h"
#include "moelm/backend.h"
#include "moelm/optim.h"
#include "moelm/rng.h"

static void test_defaults_and_step_size(void)
{
  MoelmAdamConfig cfg;
  moelm_adam_config_init(&cfg);
  CU_ASSERT_EQUAL(cfg.beta1, 0.9);
  CU_ASSERT_EQUAL(cfg.beta2, 0.999);
  CU_ASSERT_EQUAL(cfg.eps, 1e-8);
  CU_ASSERT_EQUAL(cfg.weight_decay, 0.0);
  /* lr * sqrt(1 - 0.999^t) / (1 - 0.9^t) */
  CU_ASSERT_DOUBLE_EQUAL(moelm_adam_step_size(&cfg, 1, 1e-3), 3.1622776601683816e-4, 1e-18);
  CU_ASSERT_DOUBLE_EQUAL(moelm_adam_step_size(&cfg, 10, 1e-3), 1.5318907395118239e-4, 1e-18);
}

/* The CPU fast path, whose adam_step does the update. */
static MoelmBackend *cpu(int threads)
{
  MoelmBackend *be = moelm_backend_cpu_new(FALSE, threads, NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(be);
  return be;
}

/* One step from p = 1, g = 0.5, lr = 0.01: the bias corrections cancel the (1-b) factors, so
 * the update is lr * g*sqrt(1-b2) / (|g|*sqrt(1-b2) + eps); weight decay first takes lr*wd*p. */
static void test_first_step_by_hand(void)
{
  MoelmBackend *be = cpu(1);
  for (int with_decay = 0; with_decay <= 1; with_decay++) {
    MoelmAdamConfig cfg;
    moelm_adam_config_init(&cfg);
    cfg.weight_decay = with_decay ? 0.1 : 0.0;
    MoelmAdam adam;
    CU_ASSERT_FATAL(moelm_adam_init(&adam, &cfg, be, 3, NULL));
    float p[3] = {1.0f, -2.0f, 0.0f};
    const float g[3] = {0.5f, -0.5f, 0.0f};
    CU_ASSERT_FATAL(moelm_adam_step(&adam, p, g, 3, 0.01, NULL));
    CU_ASSERT_EQUAL(adam.step, 1);
    double expect0 = with_decay ? 0.98900000632455132 : 0.99000000632455132;
    double expect1 = with_decay ? -2.0 + 0.002 + 0.0099999936754486806 : -2.0 + 0.0099999936754486806;
    CU_ASSERT_DOUBLE_EQUAL(p[0], expect0, 1e-7);
    CU_ASSERT_DOUBLE_EQUAL(p[1], expect1, 2e-7);
    CU_ASSERT_EQUAL(p[2], 0.0f); /* zero gradient, zero parameter: nothing moves */
    CU_ASSERT_DOUBLE_EQUAL(adam.exp_avg[0], 0.05, 1e-9);
    CU_ASSERT_DOUBLE_EQUAL(adam.exp_avg_sq[0], 0.00025, 1e-10);
    moelm_adam_free(&adam);
  }
  moelm_backend_free(be);
}

typedef struct {
  double b1, b2, eps, wd;
} RefCfg;

/* The update written independently, in double. */
static void ref_adam_step(double *p, const double *g, double *m, double *v, size_t n, int t, double lr,
                          const RefCfg *c)
{
  double bc1 = 1.0 - pow(c->b1, t), bc2 = 1.0 - pow(c->b2, t);
  for (size_t i = 0; i < n; i++) {
    m[i] = c->b1 * m[i] + (1.0 - c->b1) * g[i];
    v[i] = c->b2 * v[i] + (1.0 - c->b2) * g[i] * g[i];
    p[i] -= lr * c->wd * p[i];
    p[i] -= (lr * sqrt(bc2) / bc1) * m[i] / (sqrt(v[i]) + c->eps);
  }
}

static void test_matches_double_reference(void)
{
  MoelmBackend *be = cpu(1);
  enum { N = 37, STEPS = 6 }; /* 37: four vector blocks and a tail */
  const RefCfg rc = {0.9, 0.98, 1e-6, 0.01};
  MoelmAdamConfig cfg = {rc.b1, rc.b2, rc.eps, rc.wd};
  MoelmAdam adam;
  CU_ASSERT_FATAL(moelm_adam_init(&adam, &cfg, be, N, NULL));
  float p[N], g[N];
  double rp[N], rg[N], rm[N] = {0}, rv[N] = {0};
  MoelmRng rng;
  moelm_rng_init(&rng, 7, 0, 0);
  for (int i = 0; i < N; i++)
    rp[i] = p[i] = moelm_rng_next_normal(&rng);
  const double lrs[STEPS] = {1e-2, 2e-2, 5e-3, 1e-2, 3e-2, 1e-3};
  for (int t = 1; t <= STEPS; t++) {
    for (int i = 0; i < N; i++) {
      /* some gradients tiny, so that eps and its placement matter */
      float scale = i % 5 == 0 ? 1e-5f : 1.0f;
      rg[i] = g[i] = scale * moelm_rng_next_normal(&rng);
    }
    CU_ASSERT_FATAL(moelm_adam_step(&adam, p, g, N, lrs[t - 1], NULL));
    ref_adam_step(rp, rg, rm, rv, N, t, lrs[t - 1], &rc);
  }
  CU_ASSERT_EQUAL(adam.step, STEPS);
  for (int i = 0; i < N; i++) {
    CU_ASSERT_DOUBLE_EQUAL(p[i], rp[i], 2e-6 * (1.0 + fabs(rp[i])));
    CU_ASSERT_DOUBLE_EQUAL(adam.exp_avg[i], rm[i], 1e-5 * fabs(rm[i]) + 1e-12);
    CU_ASSERT_DOUBLE_EQUAL(adam.exp_avg_sq[i], rv[i], 1e-5 * fabs(rv[i]) + 1e-20);
  }
  moelm_adam_free(&adam);
  moelm_backend_free(be);
}

static void run_threads(size_t n, int n_threads, float *p, float *m)
{
  MoelmAdamConfig cfg;
  moelm_adam_config_init(&cfg);
  cfg.weight_decay = 0.05;
  MoelmAdam adam;
  MoelmBackend *be = cpu(n_threads);
  CU_ASSERT_FATAL(moelm_adam_init(&adam, &cfg, be, n, NULL));
  float *g = g_new(float, n);
  MoelmRng rng;
  moelm_rng_init(&rng, 11, 0, 0);
  for (size_t i = 0; i < n; i++)
    p[i] = moelm_rng_next_normal(&rng);
  for (int t = 0; t < 3; t++) {
    for (size_t i = 0; i < n; i++)
      g[i] = moelm_rng_next_normal(&rng);
    CU_ASSERT_FATAL(moelm_adam_step(&adam, p, g, n, 1e-3, NULL));
  }
  memcpy(m, adam.exp_avg, n * sizeof(float));
  g_free(g);
  moelm_adam_free(&adam);
  moelm_backend_free(be);
}

static void test_thread_split_is_exact(void)
{
  const size_t n = 100003; /* large enough for 3 slices, not a multiple of anything */
  float *p1 = g_new(float, n), *m1 = g_new(float, n), *p2 = g_new(float, n), *m2 = g_new(float, n);
  run_threads(n, 1, p1, m1);
  for (int threads = 2; threads <= 3; threads++) {
    run_threads(n, threads, p2, m2);
    CU_ASSERT_EQUAL(memcmp(p1, p2, n * sizeof(float)), 0);
    CU_ASSERT_EQUAL(memcmp(m1, m2, n * sizeof(float)), 0);
  }
  g_free(p1);
  g_free(m1);
  g_free(p2);
  g_free(m2);
}

static void test_errors_and_reset(void)
{
  MoelmBackend *be = cpu(1);
  MoelmAdamConfig cfg;
  moelm_adam_config_init(&cfg);
  MoelmAdam adam;
  CU_ASSERT_FATAL(moelm_adam_init(&adam, &cfg, be, 4, NULL));
  float p[5] = {1, 2, 3, 4, 5}, g[5] = {1, 1, 1, 1, 1};
  GError *error = NULL;
  CU_ASSERT_FALSE(moelm_adam_step(&adam, p, g, 5, 1e-3, &error));
  MOELM_ASSERT_ERROR(error, "5 parameters");
  g_clear_error(&error);
  CU_ASSERT_EQUAL(adam.step, 0);
  CU_ASSERT_EQUAL(p[0], 1.0f);

  CU_ASSERT_TRUE(moelm_adam_step(&adam, p, g, 4, 1e-3, NULL));
  CU_ASSERT_NOT_EQUAL(adam.exp_avg[0], 0.0f);
  moelm_adam_reset(&adam);
  CU_ASSERT_EQUAL(adam.step, 0);
  CU_ASSERT_EQUAL(adam.exp_avg[3], 0.0f);
  CU_ASSERT_EQUAL(adam.exp_avg_sq[3], 0.0f);
  moelm_adam_free(&adam);

  cfg.beta2 = 1.0;
  CU_ASSERT_FALSE(moelm_adam_init(&adam, &cfg, be, 4, &error));
  MOELM_ASSERT_ERROR(error, "beta2");
  g_clear_error(&error);
  moelm_adam_config_init(&cfg);
  cfg.eps = -1;
  CU_ASSERT_FALSE(moelm_adam_config_validate(&cfg, &error));
  MOELM_ASSERT_ERROR(error, "--adam-eps");
  g_clear_error(&error);
  moelm_backend_free(be);
}

static void test_optimizer_names(void)
{
  GError *error = NULL;
  CU_ASSERT_TRUE(moelm_optimizer_check_name("adam", NULL));
  CU_ASSERT_TRUE(moelm_optimizer_check_name("adamw", NULL));
  CU_ASSERT_FALSE(moelm_optimizer_check_name("sgd", &error));
  MOELM_ASSERT_ERROR(error, "--optimizer sgd");
  g_clear_error(&error);
}

static void test_state_json(void)
{
  MoelmAdamConfig cfg;
  moelm_adam_config_init(&cfg);
  MoelmBackend *be = cpu(1);
  MoelmAdam a, b;
  CU_ASSERT_FATAL(moelm_adam_init(&a, &cfg, be, 2, NULL));
  CU_ASSERT_FATAL(moelm_adam_init(&b, &cfg, be, 2, NULL));
  a.step = 12345;
  JsonNode *node = moelm_adam_state_to_json(&a);
  char *text = json_to_string(node, FALSE);
  CU_ASSERT_PTR_NOT_NULL(strstr(text, "\"step\":12345"));
  CU_ASSERT_PTR_NOT_NULL(strstr(text, "\"name\":\"adam\""));
  g_free(text);
  CU_ASSERT_TRUE(moelm_adam_state_from_json(&b, node, NULL));
  CU_ASSERT_EQUAL(b.step, 12345);
  json_node_unref(node);

  GError *error = NULL;
  node = json_from_string("{\"name\": \"nag\", \"step\": 3}", NULL);
  CU_ASSERT_FALSE(moelm_adam_state_from_json(&b, node, &error));
  MOELM_ASSERT_ERROR(error, "nag");
  g_clear_error(&error);
  json_node_unref(node);
  node = json_from_string("{\"name\": \"adam\", \"step\": \"x\"}", NULL);
  CU_ASSERT_FALSE(moelm_adam_state_from_json(&b, node, &error));
  MOELM_ASSERT_ERROR(error, "'step'");
  g_clear_error(&error);
  json_node_unref(node);
  CU_ASSERT_EQUAL(b.step, 12345);
  moelm_adam_free(&a);
  moelm_adam_free(&b);
  moelm_backend_free(be);
}

MOELM_TEST_SUITE(optim_adam)
{
  CU_add_test(suite, "defaults and bias-corrected step size", test_defaults_and_step_size);
  CU_add_test(suite, "first step by hand, with and without weight decay", test_first_step_by_hand);
  CU_add_test(suite, "six steps against a double reference", test_matches_double_reference);
  CU_add_test(suite, "thread split gives identical results", test_thread_split_is_exact);
  CU_add_test(suite, "size mismatch, bad config, reset", test_errors_and_reset);
  CU_add_test(suite, "optimizer names", test_optimizer_names);
  CU_add_test(suite, "checkpoint state json", test_state_json);
}
