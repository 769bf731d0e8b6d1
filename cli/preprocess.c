/* moelm preprocess — placeholder until the data pipeline lands (being written now). */
#include "config.h"

#include "commands.h"
#include "moelm/errors.h"

int moelm_cmd_preprocess(int argc, char **argv)
{
  GError *error = g_error_new_literal(MOELM_ERROR, MOELM_ERROR_UNSUPPORTED, "not built yet");
  int rc = moelm_cli_fail("preprocess", error, 1);
  g_error_free(error);
  return rc;
}
