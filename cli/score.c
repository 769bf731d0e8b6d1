/* moelm score — placeholder, filled in below. */
#include "config.h"

#include "commands.h"

int moelm_cmd_score(int argc, char **argv) { return 2; }
