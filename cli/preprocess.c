/* moelm preprocess — the command: fairseq-preprocess's flags (preprocess_options.c) into a
 * MoelmPreprocessConfig, then the job (tasks/preprocess.c). */
#include "config.h"

#include "commands.h"
#include "moelm/log.h"
#include "preprocess.h"

/* fairseq reads its log level from $LOGLEVEL (DEBUG shows moelm's phase timings). */
static void log_level_from_env(void)
{
  const char *level = g_getenv("LOGLEVEL");
  static const struct {
    const char *name;
    MoelmLogLevel level;
  } levels[] = {{"DEBUG", MOELM_LOG_DEBUG}, {"INFO", MOELM_LOG_INFO}, {"WARNING", MOELM_LOG_WARNING},
                {"ERROR", MOELM_LOG_ERROR}, {"CRITICAL", MOELM_LOG_ERROR}};
  for (gsize i = 0; level && i < G_N_ELEMENTS(levels); i++)
    if (g_ascii_strcasecmp(level, levels[i].name) == 0)
      moelm_log_set_level(levels[i].level);
}

int moelm_cmd_preprocess(int argc, char **argv)
{
  log_level_from_env();
  MoelmPreprocessConfig cfg;
  int rc = pp_options_parse(&cfg, argc, argv);
  if (rc < 0) {
    GError *error = NULL;
    rc = 0;
    if (!moelm_preprocess_run(&cfg, &error)) {
      rc = moelm_cli_fail("preprocess", error, 1);
      g_error_free(error);
    }
  }
  moelm_preprocess_config_clear(&cfg);
  return rc;
}
