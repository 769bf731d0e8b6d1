/* moelm preprocess — the command line (internal to the CLI). */
#ifndef MOELM_CLI_PREPROCESS_H
#define MOELM_CLI_PREPROCESS_H

#include "tasks/preprocess.h"

/* Parse and check the command line into `cfg` (its Namespace log line included). Returns -1
 * when the caller should go on, else the exit status (0 after --help, 2 for a bad command
 * line, the error already printed). */
int pp_options_parse(MoelmPreprocessConfig *cfg, int argc, char **argv);

#endif
