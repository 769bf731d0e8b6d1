/* moelm — the subcommands. Each parses its own options and returns the exit status:
 * 0 success, 1 failure (one-line error on stderr), 2 bad command line. */
#ifndef MOELM_CLI_COMMANDS_H
#define MOELM_CLI_COMMANDS_H

#include <glib.h>

int moelm_cmd_preprocess(int argc, char **argv);
int moelm_cmd_info(int argc, char **argv);
int moelm_cmd_train(int argc, char **argv);
int moelm_cmd_eval_lm(int argc, char **argv);
int moelm_cmd_generate(int argc, char **argv);
int moelm_cmd_convert(int argc, char **argv);
int moelm_cmd_score(int argc, char **argv);
int moelm_cmd_moefy(int argc, char **argv);

/* Print "moelm SUBCOMMAND: error: MESSAGE" and return the status to exit with. */
int moelm_cli_fail(const char *subcommand, const GError *error, int status);

#endif
