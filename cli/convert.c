/* moelm convert — `moelm convert --from fairseq PATH --save OUT [--dtype fp32|fp16|bf16]`:
 * a fairseq checkpoint (PyTorch format: model.pt, or model-shared.pt with its
 * model-rank-R.pt expert shards, or their directory) to a moelm checkpoint
 * (tasks/convert_fairseq.h). */
#include "config.h"

#include <stdio.h>
#include <string.h>

#include "args.h"
#include "commands.h"
#include "moelm/errors.h"
#include "tasks/convert_fairseq.h"

#define PROG "moelm convert"

int moelm_cmd_convert(int argc, char **argv)
{
  char *from = NULL, *save = NULL, *dtype = g_strdup("keep"), *dict = NULL;
  const MoelmArgSpec spec[] = {
    {"--from", NULL, MOELM_ARG_CHOICE, &from, "fairseq", "the checkpoint's format (required): fairseq", NULL},
    {"--save", NULL, MOELM_ARG_STRING, &save, NULL, "the moelm checkpoint to write (required)", NULL},
    {"--dtype", NULL, MOELM_ARG_CHOICE, &dtype, "keep|fp32|fp16|bf16",
     "stored type of the parameters (keep: fp16/bf16 stay, others become fp32)", NULL},
    {"--dict", NULL, MOELM_ARG_STRING, &dict, NULL, "the model's dict.txt (default: the one beside the checkpoint)",
     NULL},
    {NULL, NULL, 0, NULL, NULL, NULL, NULL},
  };
  const MoelmArgSpec *const tables[] = {spec, NULL};
  GPtrArray *positional = g_ptr_array_new();
  gboolean help = FALSE;
  GError *error = NULL;
  int rc = 0;
  MoelmConvertOptions opt = {0};
  if (!moelm_args_parse(PROG, tables, argc, argv, 1, positional, &help, &error)) {
    rc = moelm_cli_fail("convert", error, 2);
  } else if (help) {
    moelm_args_print_help(stdout, PROG, "--from fairseq PATH --save OUT", tables);
  } else if (positional->len != 1 || from == NULL || save == NULL) {
    fprintf(stderr, PROG ": error: expected --from fairseq, one PATH (model.pt, model-shared.pt or their "
                    "directory) and --save OUT\n");
    rc = 2;
  } else if (!moelm_convert_dtype_parse(dtype, &opt.dtype, &error)) {
    rc = moelm_cli_fail("convert", error, 2);
  } else {
    opt.path = positional->pdata[0];
    opt.save = save;
    opt.dict = dict;
    MoelmConvertReport rep;
    if (!moelm_convert_fairseq(&opt, &rep, &error)) {
      rc = moelm_cli_fail("convert", error, 1);
    } else {
      for (guint i = 0; i < rep.notes->len; i++)
        fprintf(stderr, PROG ": note: %s\n", (const char *)rep.notes->pdata[i]);
      char *moe = rep.model.moe_freq > 0 ? g_strdup_printf(", %d experts every %d layers", rep.model.moe_experts,
                                                           rep.model.moe_freq)
                                         : g_strdup("");
      printf("%s: fairseq %s, %d layers, %d-dim, vocabulary %d%s; %u file%s read\n", opt.path, rep.fairseq_arch,
             rep.model.layers, rep.model.embed_dim, rep.model.vocab_size, moe, rep.n_files,
             rep.n_files == 1 ? "" : "s");
      g_free(moe);
      printf("wrote %s: %" G_GUINT64_FORMAT " parameters in %u tensors (%s); %u left out (buffers, tied copies)\n",
             save, rep.n_params, rep.n_tensors, dtype, rep.n_skipped);
    }
    moelm_convert_report_clear(&rep);
  }
  g_clear_error(&error);
  moelm_args_free_strings(tables);
  g_ptr_array_unref(positional);
  return rc;
}
