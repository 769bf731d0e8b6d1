/* moelm — the test framework: CUnit suites that register themselves.
 *
 *   MOELM_TEST_SUITE(dictionary) {
 *     CU_add_test(suite, "round trip", test_round_trip);
 *   }
 *
 * Every test file in every tests/<area>/ folder is linked into the one runner
 * (tests/moelm-tests); `tests/moelm-tests SUITE...` runs only the named suites. */
#ifndef MOELM_TEST_H
#define MOELM_TEST_H

#include <CUnit/CUnit.h>
#include <glib.h>

typedef void (*MoelmTestAddFunc)(CU_pSuite suite);
void moelm_test_register(const char *name, MoelmTestAddFunc add);

#define MOELM_TEST_SUITE(name)                                                      \
  static void name##_add_tests(CU_pSuite suite);                                    \
  __attribute__((constructor)) static void name##_register_suite(void)             \
  {                                                                                 \
    moelm_test_register(#name, name##_add_tests);                                   \
  }                                                                                 \
  static void name##_add_tests(CU_pSuite suite)

/* A path inside the source tree ($MOELM_SRCDIR, else "."); g_free the result. */
char *moelm_test_srcpath(const char *relative);
/* A path inside the build tree ($MOELM_BUILDDIR, else "."); g_free the result. */
char *moelm_test_buildpath(const char *relative);
/* The moelm binary of this build tree. */
char *moelm_test_cli_path(void);
/* A fresh temporary directory, removed recursively by moelm_test_rmtree. */
char *moelm_test_tmpdir(void);
void moelm_test_rmtree(const char *path);

/* Write bytes to a file (asserting success). */
void moelm_test_write_file(const char *path, const void *data, gsize len);
/* Read a whole file; NULL when missing. */
char *moelm_test_read_file(const char *path, gsize *len);

/* The number of U+2581 (SentencePiece's space) the first len bytes of s consist of; 0 when
 * anything else is among them. */
int moelm_test_spm_spaces(const char *s, gsize len);

/* Run the CLI: argv without the program; returns the exit status, fills outputs if non-NULL.
 * stdin_text may be NULL (stdin is /dev/null). */
int moelm_test_run_cli(const char *const *args, const char *stdin_text, char **out, char **err);

/* Fail the test when a CLI run's stderr holds a sanitizer report (make check-sanitize);
 * moelm_test_run_cli checks every run it makes. */
void moelm_test_check_sanitizers(const char *err);

/* The same with the arguments given as two NULL-terminated lists (base, then extra; extra
 * may be NULL): a fixed command line plus a test's own options. */
int moelm_test_run_cli2(const char *const *base, const char *const *extra, const char *stdin_text, char **out,
                        char **err);

/* Built with AddressSanitizer (make check-sanitize): it reserves terabytes of address space,
 * so tests that run the CLI under `ulimit -v` skip. */
#if defined(__SANITIZE_ADDRESS__)
#define MOELM_TEST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define MOELM_TEST_ASAN 1
#endif
#endif
#ifndef MOELM_TEST_ASAN
#define MOELM_TEST_ASAN 0
#endif

/* Assert that a GError is set, in MOELM_ERROR, and its message contains `needle`. */
/* The fast CPU path with `threads` threads, as a backend spec. */
#define MOELM_TEST_CPU_SPEC(n_threads)                                                                         \
  (&(MoelmBackendSpec){.kind = MOELM_BACKEND_CPU, .device_id = -1, .threads = (n_threads)})

/* A host float array as an fp32 CPU backend's activation buffer (CPU-only tests). */
#define A(p) ((MoelmAct *)(p))

#define MOELM_ASSERT_ERROR(err, needle)                                            \
  do {                                                                             \
    CU_ASSERT_PTR_NOT_NULL_FATAL(err);                                             \
    if (strstr((err)->message, (needle)) == NULL)                                  \
      g_printerr("\n  error message was: %s (expected to contain \"%s\")\n",      \
                 (err)->message, (needle));                                        \
    CU_ASSERT_PTR_NOT_NULL(strstr((err)->message, (needle)));                      \
  } while (0)

#endif
