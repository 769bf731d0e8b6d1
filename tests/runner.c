/* moelm — the one CUnit runner. Suites register themselves (MOELM_TEST_SUITE); the
 * arguments, if any, select suites by name. Exit status: 0 when every test passed. */
#include "config.h"

#include <stdio.h>
#include <string.h>

#include <CUnit/Basic.h>

#include "moelm-test.h"
#include "moelm/log.h"

typedef struct {
  const char *name;
  MoelmTestAddFunc add;
} Registered;

static Registered registry[256];
static int n_registered;

void moelm_test_register(const char *name, MoelmTestAddFunc add)
{
  if (n_registered < (int)G_N_ELEMENTS(registry))
    registry[n_registered++] = (Registered){name, add};
}

static int by_name(const void *a, const void *b)
{
  return strcmp(((const Registered *)a)->name, ((const Registered *)b)->name);
}

static gboolean selected(const char *name, int argc, char **argv)
{
  if (argc <= 1)
    return TRUE;
  for (int i = 1; i < argc; i++)
    if (strcmp(argv[i], name) == 0)
      return TRUE;
  return FALSE;
}

int main(int argc, char **argv)
{
  if (argc > 1 && (strcmp(argv[1], "--list") == 0)) {
    for (int i = 0; i < n_registered; i++)
      printf("%s\n", registry[i].name);
    return 0;
  }
  moelm_log_set_level(MOELM_LOG_WARNING);
  /* The CLI runs the tests start print no progress lines unless a test asks for them: many
   * tests read the exact lines of a run. */
  g_setenv("MOELM_NO_PROGRESS", "1", FALSE);
  qsort(registry, n_registered, sizeof registry[0], by_name);
  if (CU_initialize_registry() != CUE_SUCCESS)
    return 2;
  int n_selected = 0;
  for (int i = 0; i < n_registered; i++) {
    if (!selected(registry[i].name, argc, argv))
      continue;
    CU_pSuite suite = CU_add_suite(registry[i].name, NULL, NULL);
    if (suite == NULL)
      return 2;
    registry[i].add(suite);
    n_selected++;
  }
  if (n_selected == 0) {
    fprintf(stderr, "moelm-tests: no suite selected\n");
    CU_cleanup_registry();
    return 2;
  }
  CU_basic_set_mode(CU_BRM_VERBOSE);
  CU_basic_run_tests();
  unsigned failed = CU_get_number_of_failures() + CU_get_number_of_tests_failed();
  unsigned run = CU_get_number_of_tests_run();
  CU_cleanup_registry();
  return (failed == 0 && run > 0) ? 0 : 1;
}
