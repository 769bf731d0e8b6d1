/* fairseq's LR schedulers: values at chosen update numbers, worked out by hand from the
 * formulas in fairseq/optim/lr_scheduler (0.12), plus errors and checkpoint state. */
#include "config.h"

#include <math.h>
#include <string.h>

#include "moelm-test.h"
#include "moelm/lr_scheduler.h"

#define ASSERT_LR(actual, expected) CU_ASSERT_DOUBLE_EQUAL((actual), (expected), 1e-12 * fabs(expected) + 1e-20)

static MoelmLrScheduler *make(const MoelmLrSchedulerConfig *cfg)
{
  GError *error = NULL;
  MoelmLrScheduler *s = moelm_lr_scheduler_new(cfg, &error);
  if (error != NULL) {
    g_printerr("\n  %s\n", error->message);
    g_clear_error(&error);
  }
  CU_ASSERT_PTR_NOT_NULL_FATAL(s);
  return s;
}

static void expect_error(const MoelmLrSchedulerConfig *cfg, const char *needle)
{
  GError *error = NULL;
  CU_ASSERT_PTR_NULL(moelm_lr_scheduler_new(cfg, &error));
  MOELM_ASSERT_ERROR(error, needle);
  g_clear_error(&error);
}

static void test_defaults(void)
{
  MoelmLrSchedulerConfig cfg;
  moelm_lr_scheduler_config_init(&cfg);
  CU_ASSERT_STRING_EQUAL(cfg.name, "fixed");
  CU_ASSERT_EQUAL(cfg.n_lr, 1);
  CU_ASSERT_EQUAL(cfg.lr[0], 0.25);
  CU_ASSERT_EQUAL(cfg.lr_shrink, 0.1);
  CU_ASSERT_EQUAL(cfg.force_anneal, -1);
  MoelmLrScheduler *s = make(&cfg);
  CU_ASSERT_STRING_EQUAL(moelm_lr_scheduler_name(s), "fixed");
  CU_ASSERT_EQUAL(moelm_lr_get(s), 0.25);
  moelm_lr_scheduler_free(s);

  cfg.name = "reduce_lr_on_plateau";
  expect_error(&cfg, "--lr-scheduler reduce_lr_on_plateau");
}

/* warmup 4000 from 1e-7 to 7e-4, then 7e-4 * sqrt(4000 / n). */
static void test_inverse_sqrt(void)
{
  MoelmLrSchedulerConfig cfg;
  moelm_lr_scheduler_config_init(&cfg);
  cfg.name = "inverse_sqrt";
  cfg.lr[0] = 7e-4;
  cfg.warmup_init_lr = 1e-7;
  MoelmLrScheduler *s = make(&cfg); /* warmup_updates -1: inverse_sqrt's 4000 */
  ASSERT_LR(moelm_lr_get(s), 1e-7);
  ASSERT_LR(moelm_lr_step_update(s, 0), 1e-7);
  ASSERT_LR(moelm_lr_step_update(s, 1), 2.74975e-7);
  ASSERT_LR(moelm_lr_step_update(s, 2000), 3.5005e-4);
  ASSERT_LR(moelm_lr_step_update(s, 3999), 6.99825025e-4);
  ASSERT_LR(moelm_lr_step_update(s, 4000), 7e-4);
  ASSERT_LR(moelm_lr_step_update(s, 16000), 3.5e-4);
  ASSERT_LR(moelm_lr_get(s), 3.5e-4);
  /* epoch boundaries change nothing */
  ASSERT_LR(moelm_lr_step_begin_epoch(s, 2), 3.5e-4);
  ASSERT_LR(moelm_lr_step_epoch(s, 2, 3.0), 3.5e-4);
  moelm_lr_scheduler_free(s);

  /* --warmup-init-lr default: 0 with warmup */
  cfg.warmup_init_lr = -1;
  cfg.warmup_updates = 10;
  s = make(&cfg);
  ASSERT_LR(moelm_lr_step_update(s, 0), 0.0);
  ASSERT_LR(moelm_lr_step_update(s, 5), 3.5e-4);
  ASSERT_LR(moelm_lr_step_update(s, 40), 3.5e-4);
  moelm_lr_scheduler_free(s);

  cfg.warmup_updates = 0;
  expect_error(&cfg, "--warmup-updates > 0");
  cfg.warmup_updates = 10;
  cfg.lr[1] = 1e-4;
  cfg.n_lr = 2;
  expect_error(&cfg, "inverse_sqrt");
}

/* lr 1e-3 (max), min 1e-5, warmup 100 from min, max-update 1100: period 1000, shrink 0.1. */
static void test_cosine(void)
{
  MoelmLrSchedulerConfig cfg;
  moelm_lr_scheduler_config_init(&cfg);
  cfg.name = "cosine";
  cfg.lr[0] = 1e-3;
  cfg.min_lr = 1e-5;
  cfg.warmup_updates = 100;
  cfg.max_update = 1100;
  MoelmLrScheduler *s = make(&cfg);
  ASSERT_LR(moelm_lr_get(s), 1e-5);
  ASSERT_LR(moelm_lr_step_update(s, 0), 1e-5);
  ASSERT_LR(moelm_lr_step_update(s, 50), 5.05e-4);
  ASSERT_LR(moelm_lr_step_update(s, 100), 1e-3);
  ASSERT_LR(moelm_lr_step_update(s, 350), 8.5501785668734098e-4); /* 1e-5 + 4.95e-4 (1 + cos(pi/4)) */
  ASSERT_LR(moelm_lr_step_update(s, 600), 5.05e-4);
  ASSERT_LR(moelm_lr_step_update(s, 1100), 1e-4);                 /* second period, shrunk 0.1 */
  ASSERT_LR(moelm_lr_step_update(s, 1350), 8.5501785668734098e-5);
  moelm_lr_scheduler_free(s);

  /* t_mult 2: periods of 100, 200, 400 updates; lr_shrink 0.5; no warmup */
  cfg.warmup_updates = -1;
  cfg.lr_period_updates = 100;
  cfg.t_mult = 2;
  cfg.lr_shrink = 0.5;
  s = make(&cfg);
  ASSERT_LR(moelm_lr_step_update(s, 0), 1e-3);
  ASSERT_LR(moelm_lr_step_update(s, 99), 1.0244252618962858e-05);
  ASSERT_LR(moelm_lr_step_update(s, 100), 5e-4);
  ASSERT_LR(moelm_lr_step_update(s, 150), 4.2750892834367049e-4);
  ASSERT_LR(moelm_lr_step_update(s, 300), 2.5e-4);
  ASSERT_LR(moelm_lr_step_update(s, 301), 2.4999618325854272e-4);
  ASSERT_LR(moelm_lr_step_update(s, 700), 1.25e-4);
  moelm_lr_scheduler_free(s);

  cfg.lr_period_updates = -1;
  cfg.max_update = 0;
  expect_error(&cfg, "--max-update or --lr-period-updates");
  cfg.max_update = 1000;
  cfg.min_lr = 1e-3;
  expect_error(&cfg, "must be more than --min-lr");
}

/* lr 1e-3, warmup 10, end 1e-5, power 2, total 110 (from --max-update). */
static void test_polynomial_decay(void)
{
  MoelmLrSchedulerConfig cfg;
  moelm_lr_scheduler_config_init(&cfg);
  cfg.name = "polynomial_decay";
  cfg.lr[0] = 1e-3;
  cfg.warmup_updates = 10;
  cfg.end_learning_rate = 1e-5;
  cfg.power = 2;
  cfg.max_update = 110;
  MoelmLrScheduler *s = make(&cfg);
  ASSERT_LR(moelm_lr_get(s), 1e-4); /* warmup_factor 1/10 at construction */
  ASSERT_LR(moelm_lr_step_update(s, 0), 0.0);
  ASSERT_LR(moelm_lr_step_update(s, 5), 5e-4);
  ASSERT_LR(moelm_lr_step_update(s, 10), 1e-3);
  ASSERT_LR(moelm_lr_step_update(s, 60), 2.575e-4); /* 9.9e-4 * 0.5^2 + 1e-5 */
  ASSERT_LR(moelm_lr_step_update(s, 109), 1.0099e-5);
  ASSERT_LR(moelm_lr_step_update(s, 110), 1e-5);
  ASSERT_LR(moelm_lr_step_update(s, 200), 1e-5);
  moelm_lr_scheduler_free(s);

  /* --total-num-update wins over --max-update; power 1 is linear */
  cfg.total_num_update = 1010;
  cfg.power = 1;
  s = make(&cfg);
  ASSERT_LR(moelm_lr_step_update(s, 510), 5.05e-4);
  moelm_lr_scheduler_free(s);

  /* --force-anneal: from that epoch on, the base is the lr the optimizer has then */
  cfg.force_anneal = 2;
  cfg.warmup_updates = 0;
  cfg.total_num_update = 100;
  cfg.end_learning_rate = 0;
  s = make(&cfg);
  ASSERT_LR(moelm_lr_step_begin_epoch(s, 1), 1e-3);
  ASSERT_LR(moelm_lr_step_update(s, 50), 5e-4);
  ASSERT_LR(moelm_lr_step_begin_epoch(s, 2), 5e-4);
  ASSERT_LR(moelm_lr_step_update(s, 50), 2.5e-4);
  moelm_lr_scheduler_free(s);

  /* an --lr list is indexed by the epoch itself here (fairseq's polynomial_decay quirk:
   * epoch 1 takes the second value) */
  cfg.force_anneal = -1;
  cfg.lr[1] = 4e-4;
  cfg.n_lr = 2;
  s = make(&cfg);
  ASSERT_LR(moelm_lr_get(s), 1e-3);
  moelm_lr_step_begin_epoch(s, 1);
  ASSERT_LR(moelm_lr_step_update(s, 50), 2e-4);
  moelm_lr_scheduler_free(s);

  cfg.total_num_update = 0;
  cfg.max_update = 0;
  expect_error(&cfg, "--total-num-update or --max-update");
}

static void test_fixed(void)
{
  MoelmLrSchedulerConfig cfg;
  moelm_lr_scheduler_config_init(&cfg);
  cfg.warmup_updates = 4;
  MoelmLrScheduler *s = make(&cfg);
  ASSERT_LR(moelm_lr_step_begin_epoch(s, 1), 0.25 / 4);
  ASSERT_LR(moelm_lr_step_update(s, 0), 0.0625); /* (n+1)/warmup */
  ASSERT_LR(moelm_lr_step_update(s, 1), 0.125);
  ASSERT_LR(moelm_lr_step_update(s, 3), 0.25);
  ASSERT_LR(moelm_lr_step_update(s, 4), 0.25);
  ASSERT_LR(moelm_lr_step_update(s, 1000), 0.25);
  moelm_lr_scheduler_free(s);

  /* a per-epoch list; epochs past its end keep the last value */
  cfg.warmup_updates = -1;
  cfg.lr[0] = 1.0;
  cfg.lr[1] = 0.5;
  cfg.n_lr = 2;
  s = make(&cfg);
  ASSERT_LR(moelm_lr_step_begin_epoch(s, 1), 1.0);
  ASSERT_LR(moelm_lr_step_update(s, 10), 1.0);
  ASSERT_LR(moelm_lr_step_begin_epoch(s, 2), 0.5);
  ASSERT_LR(moelm_lr_step_update(s, 20), 0.5);
  ASSERT_LR(moelm_lr_step_begin_epoch(s, 5), 0.5);
  moelm_lr_scheduler_free(s);

  /* --force-anneal 2 --lr-shrink 0.5: lr[-1] * shrink^(epoch + 1 - 2) from epoch 2 */
  cfg.force_anneal = 2;
  cfg.lr_shrink = 0.5;
  s = make(&cfg);
  ASSERT_LR(moelm_lr_step_begin_epoch(s, 1), 1.0);
  ASSERT_LR(moelm_lr_step_begin_epoch(s, 2), 0.25);
  ASSERT_LR(moelm_lr_step_update(s, 7), 0.25);
  ASSERT_LR(moelm_lr_step_begin_epoch(s, 3), 0.125);
  moelm_lr_scheduler_free(s);
}

static void test_best_and_state(void)
{
  MoelmLrSchedulerConfig cfg;
  moelm_lr_scheduler_config_init(&cfg);
  cfg.name = "polynomial_decay";
  cfg.lr[0] = 1e-3;
  cfg.max_update = 1000;
  cfg.force_anneal = 2;
  cfg.warmup_updates = 10;
  MoelmLrScheduler *a = make(&cfg);
  double best = 0;
  CU_ASSERT_FALSE(moelm_lr_scheduler_best(a, &best));
  moelm_lr_step_update(a, 0);
  moelm_lr_step_begin_epoch(a, 1);
  for (int u = 1; u <= 300; u++)
    moelm_lr_step_update(a, u);
  moelm_lr_step_epoch(a, 1, 4.5);
  moelm_lr_step_epoch(a, 1, NAN);
  moelm_lr_step_epoch(a, 1, 5.0);
  CU_ASSERT_TRUE(moelm_lr_scheduler_best(a, &best));
  CU_ASSERT_EQUAL(best, 4.5);
  moelm_lr_step_begin_epoch(a, 2); /* annealing: base becomes the current lr */
  moelm_lr_step_update(a, 300);

  /* a resumed scheduler continues exactly like the uninterrupted one */
  JsonNode *node = moelm_lr_scheduler_state_to_json(a);
  char *text = json_to_string(node, FALSE);
  JsonNode *parsed = json_from_string(text, NULL);
  g_free(text);
  MoelmLrScheduler *b = make(&cfg);
  CU_ASSERT_TRUE_FATAL(moelm_lr_scheduler_state_from_json(b, parsed, NULL));
  for (int u = 301; u <= 600; u += 37)
    CU_ASSERT_EQUAL(moelm_lr_step_update(a, u), moelm_lr_step_update(b, u));
  CU_ASSERT_EQUAL(moelm_lr_step_begin_epoch(a, 3), moelm_lr_step_begin_epoch(b, 3));
  CU_ASSERT_EQUAL(moelm_lr_step_update(a, 700), moelm_lr_step_update(b, 700));
  CU_ASSERT_TRUE(moelm_lr_scheduler_best(b, &best));
  CU_ASSERT_EQUAL(best, 4.5);

  /* a state from another scheduler restores only the best loss */
  MoelmLrSchedulerConfig other = cfg;
  other.name = "fixed";
  MoelmLrScheduler *c = make(&other);
  CU_ASSERT_TRUE(moelm_lr_scheduler_state_from_json(c, parsed, NULL));
  CU_ASSERT_TRUE(moelm_lr_scheduler_best(c, &best));
  CU_ASSERT_EQUAL(best, 4.5);
  ASSERT_LR(moelm_lr_get(c), 1e-3);

  GError *error = NULL;
  JsonNode *bad = json_from_string("{\"name\": \"polynomial_decay\", \"lr\": \"x\", \"best\": null}", NULL);
  CU_ASSERT_FALSE(moelm_lr_scheduler_state_from_json(b, bad, &error));
  MOELM_ASSERT_ERROR(error, "'lr'");
  g_clear_error(&error);
  json_node_unref(bad);

  json_node_unref(parsed);
  json_node_unref(node);
  moelm_lr_scheduler_free(a);
  moelm_lr_scheduler_free(b);
  moelm_lr_scheduler_free(c);
}

MOELM_TEST_SUITE(optim_lr_scheduler)
{
  CU_add_test(suite, "defaults and unknown names", test_defaults);
  CU_add_test(suite, "inverse_sqrt", test_inverse_sqrt);
  CU_add_test(suite, "cosine", test_cosine);
  CU_add_test(suite, "polynomial_decay", test_polynomial_decay);
  CU_add_test(suite, "fixed", test_fixed);
  CU_add_test(suite, "best loss and checkpoint state", test_best_and_state);
}
