/* moelm — the command: `moelm SUBCOMMAND [options]`, fairseq's commands without the
 * `fairseq-` prefix. */
#include "config.h"

#include <stdio.h>
#include <string.h>

#include "commands.h"
#include "moelm/errors.h"

typedef struct {
  const char *name;
  int (*run)(int argc, char **argv);
  const char *summary;
} Subcommand;

static const Subcommand subcommands[] = {
  {"preprocess", moelm_cmd_preprocess, "binarize text into a fairseq data-bin (dict.txt, .bin/.idx)"},
  {"info", moelm_cmd_info, "describe and validate a data-bin"},
  {"train", moelm_cmd_train, "train a language model (fairseq-train)"},
  {"eval-lm", moelm_cmd_eval_lm, "perplexity of a trained model with a context window (fairseq-eval-lm)"},
  {"generate", moelm_cmd_generate, "generate text from prompts (fairseq-interactive)"},
  {"interactive", moelm_cmd_generate, "alias of generate"},
  {"convert", moelm_cmd_convert, "import a fairseq (PyTorch) checkpoint: dense or sharded MoE"},
  {"score", moelm_cmd_score, "log-probabilities of choices given a context (fairseq hub's score; COPA-style)"},
  {"moefy", moelm_cmd_moefy, "split a trained dense model's FFNs into experts that run sparsely (MoEfication)"},
};

int moelm_cli_fail(const char *subcommand, const GError *error, int status)
{
  /* one line, even if a message quotes a control byte from a file */
  char *shown = moelm_escape_controls(error ? error->message : "failed", 0);
  fprintf(stderr, "moelm %s: error: %s\n", subcommand, shown);
  g_free(shown);
  return status;
}

static void usage(FILE *out)
{
  fprintf(out, "usage: moelm SUBCOMMAND [options]\n\nsubcommands:\n");
  for (gsize i = 0; i < G_N_ELEMENTS(subcommands); i++)
    fprintf(out, "  %-12s %s\n", subcommands[i].name, subcommands[i].summary);
  fprintf(out, "\n`moelm SUBCOMMAND --help` lists a subcommand's options.\n");
}

int main(int argc, char **argv)
{
  if (argc < 2) {
    usage(stderr);
    return 2;
  }
  if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "help") == 0) {
    usage(stdout);
    return 0;
  }
  if (strcmp(argv[1], "--version") == 0) {
    printf("moelm %s\n", PACKAGE_VERSION);
    return 0;
  }
  /* Every line reaches a pipe when it is printed (`moelm eval-lm ... | tee log` shows the run
   * as it goes), not when a 4 KB buffer fills. */
  setvbuf(stdout, NULL, _IOLBF, 0);
  const char *name = argv[1];
  if (g_str_has_prefix(name, "fairseq-"))
    name += strlen("fairseq-");
  for (gsize i = 0; i < G_N_ELEMENTS(subcommands); i++)
    if (strcmp(name, subcommands[i].name) == 0)
      return subcommands[i].run(argc - 1, argv + 1);
  fprintf(stderr, "moelm: error: unknown subcommand '%s' (see moelm --help)\n", argv[1]);
  return 2;
}
