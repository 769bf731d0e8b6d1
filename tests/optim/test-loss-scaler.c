/* fairseq's fp16 DynamicLossScaler: growth every window, back-off on overflow, tolerance,
 * threshold, the minimum scale, the derived window. */
#include "config.h"

#include <math.h>
#include <string.h>

#include "moelm-test.h"
#include "moelm/optim.h"

static MoelmLossScaler make(double init, int64_t window, double tolerance, double threshold, double min_scale)
{
  MoelmLossScalerConfig cfg;
  moelm_loss_scaler_config_init(&cfg);
  cfg.init_scale = init;
  cfg.scale_window = window;
  cfg.tolerance = tolerance;
  cfg.threshold = threshold;
  cfg.min_loss_scale = min_scale;
  MoelmLossScaler s;
  CU_ASSERT_FATAL(moelm_loss_scaler_init(&s, &cfg, 1, 1, NULL));
  return s;
}

static gboolean overflow_of(MoelmLossScaler *s, double norm)
{
  gboolean overflow = FALSE;
  GError *error = NULL;
  CU_ASSERT_TRUE(moelm_loss_scaler_check_overflow(s, norm, &overflow, &error));
  CU_ASSERT_PTR_NULL(error);
  g_clear_error(&error);
  return overflow;
}

static void test_defaults_and_window(void)
{
  MoelmLossScalerConfig cfg;
  moelm_loss_scaler_config_init(&cfg);
  CU_ASSERT_EQUAL(cfg.init_scale, 128.0);
  CU_ASSERT_EQUAL(cfg.scale_factor, 2.0);
  CU_ASSERT_EQUAL(cfg.tolerance, 0.0);
  CU_ASSERT_EQUAL(cfg.min_loss_scale, 1e-4);
  CU_ASSERT_EQUAL(moelm_loss_scaler_default_window(1, 1), 16384);
  CU_ASSERT_EQUAL(moelm_loss_scaler_default_window(2, 1), 8192);
  CU_ASSERT_EQUAL(moelm_loss_scaler_default_window(3, 1), 5461);
  CU_ASSERT_EQUAL(moelm_loss_scaler_default_window(4, 2), 2048);
  CU_ASSERT_EQUAL(moelm_loss_scaler_default_window(100000, 1), 1);
  MoelmLossScaler s;
  CU_ASSERT_FATAL(moelm_loss_scaler_init(&s, &cfg, 2, 1, NULL));
  CU_ASSERT_EQUAL(s.cfg.scale_window, 8192);
  CU_ASSERT_EQUAL(s.loss_scale, 128.0);
  cfg.scale_window = 2000;
  CU_ASSERT_FATAL(moelm_loss_scaler_init(&s, &cfg, 2, 1, NULL));
  CU_ASSERT_EQUAL(s.cfg.scale_window, 2000);
  /* the first growth comes after exactly scale_window clean updates */
  for (int i = 0; i < 1999; i++)
    moelm_loss_scaler_update(&s);
  CU_ASSERT_EQUAL(s.loss_scale, 128.0);
  moelm_loss_scaler_update(&s);
  CU_ASSERT_EQUAL(s.loss_scale, 256.0);

  GError *error = NULL;
  cfg.init_scale = 0;
  CU_ASSERT_FALSE(moelm_loss_scaler_init(&s, &cfg, 1, 1, &error));
  MOELM_ASSERT_ERROR(error, "--fp16-init-scale");
  g_clear_error(&error);
}

static void test_growth_and_backoff_sequence(void)
{
  MoelmLossScaler s = make(128, 3, 0.0, 0.0, 1e-4);
  moelm_loss_scaler_update(&s);
  moelm_loss_scaler_update(&s);
  CU_ASSERT_EQUAL(s.loss_scale, 128.0);
  moelm_loss_scaler_update(&s); /* third clean iteration: grow */
  CU_ASSERT_EQUAL(s.loss_scale, 256.0);
  CU_ASSERT_FALSE(overflow_of(&s, 12.5)); /* finite norm: nothing happens */
  CU_ASSERT_EQUAL(s.iter, 3);
  CU_ASSERT_TRUE(overflow_of(&s, INFINITY));
  CU_ASSERT_EQUAL(s.loss_scale, 128.0);
  CU_ASSERT_EQUAL(s.iter, 4);
  /* the window restarts at the overflow */
  moelm_loss_scaler_update(&s);
  moelm_loss_scaler_update(&s);
  CU_ASSERT_EQUAL(s.loss_scale, 128.0);
  moelm_loss_scaler_update(&s);
  CU_ASSERT_EQUAL(s.loss_scale, 256.0);
  CU_ASSERT_TRUE(overflow_of(&s, NAN));
  CU_ASSERT_TRUE(overflow_of(&s, -INFINITY));
  CU_ASSERT_EQUAL(s.loss_scale, 64.0);
  CU_ASSERT_EQUAL(s.iter, 9);

  /* clipping under the scaler: max/norm when norm > max > 0, no 1e-6 */
  CU_ASSERT_EQUAL(moelm_loss_scaler_clip_coef(10.0, 5.0), 0.5);
  CU_ASSERT_EQUAL(moelm_loss_scaler_clip_coef(5.0, 5.0), 1.0);
  CU_ASSERT_EQUAL(moelm_loss_scaler_clip_coef(10.0, 0.0), 1.0);
}

static void test_tolerance(void)
{
  /* tolerance 0.3: back off only when overflows / iterations since the last rescale >= 0.3 */
  MoelmLossScaler s = make(128, 1000, 0.3, 0.0, 1e-4);
  for (int i = 0; i < 3; i++)
    moelm_loss_scaler_update(&s);
  CU_ASSERT_TRUE(overflow_of(&s, INFINITY)); /* 1 of 4: keep the scale, still skip the update */
  CU_ASSERT_EQUAL(s.loss_scale, 128.0);
  CU_ASSERT_EQUAL(s.overflows_since_rescale, 1);
  CU_ASSERT_TRUE(overflow_of(&s, INFINITY)); /* 2 of 5 */
  CU_ASSERT_EQUAL(s.loss_scale, 64.0);
  CU_ASSERT_EQUAL(s.overflows_since_rescale, 0);
  CU_ASSERT_EQUAL(s.last_rescale_iter, 4);
}

static void test_threshold_and_minimum(void)
{
  MoelmLossScaler s = make(4, 100, 0.0, 3.0, 1e-4);
  CU_ASSERT_TRUE(overflow_of(&s, INFINITY));
  CU_ASSERT_EQUAL(s.loss_scale, 3.0); /* floored at the threshold */
  CU_ASSERT_TRUE(overflow_of(&s, INFINITY));
  CU_ASSERT_EQUAL(s.loss_scale, 3.0);

  s = make(4e-4, 100, 0.0, 0.0, 1e-4);
  CU_ASSERT_TRUE(overflow_of(&s, INFINITY));
  CU_ASSERT_DOUBLE_EQUAL(s.loss_scale, 2e-4, 1e-18);
  int64_t iter = s.iter;
  gboolean overflow = FALSE;
  GError *error = NULL;
  CU_ASSERT_FALSE(moelm_loss_scaler_check_overflow(&s, INFINITY, &overflow, &error));
  MOELM_ASSERT_ERROR(error, "minimum loss scale reached (0.0001)");
  g_clear_error(&error);
  CU_ASSERT_DOUBLE_EQUAL(s.loss_scale, 2e-4, 1e-18); /* restored, as fairseq does */
  CU_ASSERT_EQUAL(s.iter, iter);
}

static void test_state_json(void)
{
  MoelmLossScaler a = make(128, 10, 0.0, 0.0, 1e-4);
  a.loss_scale = 32768;
  JsonNode *node = moelm_loss_scaler_state_to_json(&a);
  MoelmLossScaler b = make(128, 10, 0.0, 0.0, 1e-4);
  CU_ASSERT_TRUE(moelm_loss_scaler_state_from_json(&b, node, NULL));
  CU_ASSERT_EQUAL(b.loss_scale, 32768.0);
  json_node_unref(node);
  GError *error = NULL;
  node = json_from_string("{\"loss_scale\": -1}", NULL);
  CU_ASSERT_FALSE(moelm_loss_scaler_state_from_json(&b, node, &error));
  MOELM_ASSERT_ERROR(error, "loss_scale");
  g_clear_error(&error);
  json_node_unref(node);
  CU_ASSERT_EQUAL(b.loss_scale, 32768.0);
}

MOELM_TEST_SUITE(optim_loss_scaler)
{
  CU_add_test(suite, "defaults and scale window", test_defaults_and_window);
  CU_add_test(suite, "growth and back-off sequence", test_growth_and_backoff_sequence);
  CU_add_test(suite, "overflow tolerance", test_tolerance);
  CU_add_test(suite, "threshold and minimum scale", test_threshold_and_minimum);
  CU_add_test(suite, "checkpoint state json", test_state_json);
}
