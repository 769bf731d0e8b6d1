/* Python's formatting as preprocess logs it (expected values printed by CPython 3). */
#include "config.h"

#include <string.h>

#include "moelm/pyformat.h"
#include "moelm-test.h"

static void check(char *got, const char *expected)
{
  if (strcmp(got, expected) != 0)
    g_printerr("\n  got '%s', expected '%s'\n", got, expected);
  CU_ASSERT_STRING_EQUAL(got, expected);
  g_free(got);
}

static void test_g3(void)
{
  /* "{:.3}".format(x) */
  check(moelm_py_format_g3(0.0), "0.0");
  check(moelm_py_format_g3(1.0), "1.0");
  check(moelm_py_format_g3(12.0), "12.0");
  check(moelm_py_format_g3(100.0), "1e+02");
  check(moelm_py_format_g3(99.96), "1e+02");
  check(moelm_py_format_g3(99.94), "99.9");
  check(moelm_py_format_g3(28.571428571428573), "28.6");
  check(moelm_py_format_g3(33.333333333333336), "33.3");
  check(moelm_py_format_g3(0.0147), "0.0147");
  check(moelm_py_format_g3(0.0001), "0.0001");
  check(moelm_py_format_g3(0.00012345), "0.000123");
  check(moelm_py_format_g3(1.5e-05), "1.5e-05");
  check(moelm_py_format_g3(1e-05), "1e-05");
  check(moelm_py_format_g3(1.2345e-07), "1.23e-07");
  check(moelm_py_format_g3(5.0), "5.0");
  check(moelm_py_format_g3(2.5), "2.5");
  check(moelm_py_format_g3(0.125), "0.125");
  check(moelm_py_format_g3(0.00125), "0.00125");
}

static void test_repr(void)
{
  check(moelm_py_repr_float(0.0001), "0.0001");
  check(moelm_py_repr_float(0.0), "0.0");
  check(moelm_py_repr_float(1e-05), "1e-05");
  check(moelm_py_repr_float(100000.0), "100000.0");
  check(moelm_py_repr_float(1e16), "1e+16");
  check(moelm_py_repr_float(0.1), "0.1");
  check(moelm_py_repr_float(2.5), "2.5");
  check(moelm_py_repr_float(-3.0), "-3.0");
  check(moelm_py_repr_float(123456789.125), "123456789.125");
  check(moelm_py_repr_str(NULL), "None");
  check(moelm_py_repr_str("data-bin"), "'data-bin'");
  check(moelm_py_repr_str("it's"), "\"it's\"");
  check(moelm_py_repr_str("a'b\"c"), "'a\\'b\"c'");
  check(moelm_py_repr_str("tab\there\\"), "'tab\\there\\\\'");
  check(moelm_py_repr_str("caf\xc3\xa9"), "'caf\xc3\xa9'");
}

static void test_namespace(void)
{
  GPtrArray *items = g_ptr_array_new_with_free_func(g_free);
  g_ptr_array_add(items, g_strdup("workers=1"));
  g_ptr_array_add(items, g_strdup("amp_init_scale=128"));
  g_ptr_array_add(items, g_strdup("amp=False"));
  g_ptr_array_add(items, g_strdup("align_suffix=None"));
  check(moelm_py_namespace_line(items), "Namespace(align_suffix=None, amp=False, amp_init_scale=128, workers=1)");
  g_ptr_array_unref(items);
}

MOELM_TEST_SUITE(pyformat)
{
  CU_add_test(suite, "format(x, '.3')", test_g3);
  CU_add_test(suite, "repr of float and str", test_repr);
  CU_add_test(suite, "Namespace order", test_namespace);
}
