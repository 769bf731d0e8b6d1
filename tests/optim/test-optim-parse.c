/* The number lists fairseq users write: --adam-betas '(0.9, 0.98)' and --lr 0.25,0.1. */
#include "config.h"

#include <string.h>

#include "moelm-test.h"
#include "moelm/lr_scheduler.h"
#include "moelm/optim.h"

static void test_betas_forms(void)
{
  const char *forms[] = {"(0.9, 0.98)", "0.9,0.98", "[0.9, 0.98]", "  ( 0.9 ,0.98 )  ", "(0.9,0.98,)",
                         "9e-1, 98e-2"};
  for (size_t i = 0; i < G_N_ELEMENTS(forms); i++) {
    double b1 = -1, b2 = -1;
    GError *error = NULL;
    CU_ASSERT_TRUE(moelm_parse_adam_betas(forms[i], &b1, &b2, &error));
    if (error != NULL) {
      g_printerr("\n  %s: %s\n", forms[i], error->message);
      g_clear_error(&error);
    }
    CU_ASSERT_EQUAL(b1, 0.9);
    CU_ASSERT_EQUAL(b2, 0.98);
  }
  double b1, b2;
  CU_ASSERT_TRUE(moelm_parse_adam_betas("(0, 0.999)", &b1, &b2, NULL));
  CU_ASSERT_EQUAL(b1, 0.0);
  CU_ASSERT_EQUAL(b2, 0.999);
}

static void test_betas_errors(void)
{
  static const struct {
    const char *text, *needle;
  } bad[] = {
    {"", "no value"},
    {"0.9", "only one value"},
    {"(0.9, 0.98", "missing ')'"},
    {"[0.9, 0.98)", "expected ',' or ']'"},
    {"0.9;0.98", "unexpected ';0.98'"},
    {"0.9 0.98", "unexpected '0.98'"},
    {"(a, b)", "expected a number at 'a, b)'"},
    {"(0.9,, 0.98)", "expected a number"},
    {"(0.9, 0.98, 0.5)", "more than 2 values"},
    {"(0.9, 1.0)", "beta2 = 1 is outside [0, 1)"},
    {"(-0.1, 0.9)", "beta1 = -0.1 is outside"},
    {"(nan, 0.9)", "not a finite number"},
    {"()", "no value"},
  };
  for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
    double b1 = 7, b2 = 7;
    GError *error = NULL;
    CU_ASSERT_FALSE(moelm_parse_adam_betas(bad[i].text, &b1, &b2, &error));
    MOELM_ASSERT_ERROR(error, bad[i].needle);
    MOELM_ASSERT_ERROR(error, "--adam-betas");
    CU_ASSERT_EQUAL(b1, 7); /* untouched on error */
    g_clear_error(&error);
  }
}

static void test_lr_lists(void)
{
  double lrs[MOELM_LR_MAX];
  int n = 0;
  CU_ASSERT_TRUE(moelm_parse_lr_list("0.0005", lrs, MOELM_LR_MAX, &n, NULL));
  CU_ASSERT_EQUAL(n, 1);
  CU_ASSERT_EQUAL(lrs[0], 0.0005);
  CU_ASSERT_TRUE(moelm_parse_lr_list("0.25,0.1", lrs, MOELM_LR_MAX, &n, NULL));
  CU_ASSERT_EQUAL(n, 2);
  CU_ASSERT_EQUAL(lrs[1], 0.1);
  CU_ASSERT_TRUE(moelm_parse_lr_list("[1, 0.5, 0.25]", lrs, MOELM_LR_MAX, &n, NULL));
  CU_ASSERT_EQUAL(n, 3);
  CU_ASSERT_EQUAL(lrs[2], 0.25);
  CU_ASSERT_TRUE(moelm_parse_lr_list("(3e-4,)", lrs, MOELM_LR_MAX, &n, NULL));
  CU_ASSERT_EQUAL(n, 1);
  CU_ASSERT_EQUAL(lrs[0], 3e-4);

  GError *error = NULL;
  CU_ASSERT_FALSE(moelm_parse_lr_list("-0.1", lrs, MOELM_LR_MAX, &n, &error));
  MOELM_ASSERT_ERROR(error, "negative");
  g_clear_error(&error);
  CU_ASSERT_FALSE(moelm_parse_lr_list("fast", lrs, MOELM_LR_MAX, &n, &error));
  MOELM_ASSERT_ERROR(error, "--lr 'fast'");
  g_clear_error(&error);
  CU_ASSERT_FALSE(moelm_parse_lr_list("1,2,3", lrs, 2, &n, &error));
  MOELM_ASSERT_ERROR(error, "more than 2 values");
  g_clear_error(&error);
  CU_ASSERT_FALSE(moelm_parse_lr_list("inf", lrs, MOELM_LR_MAX, &n, &error));
  MOELM_ASSERT_ERROR(error, "not a finite number");
  g_clear_error(&error);
}

MOELM_TEST_SUITE(optim_parse)
{
  CU_add_test(suite, "--adam-betas forms", test_betas_forms);
  CU_add_test(suite, "--adam-betas errors", test_betas_errors);
  CU_add_test(suite, "--lr lists", test_lr_lists);
}
