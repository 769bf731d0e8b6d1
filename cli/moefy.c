/* moelm moefy — MoEfication: `moelm moefy DATA --path dense.pt --num-experts E --save moe.pt
 * [--split param-cluster|coactivation] [--select similarity|mlp|groundtruth] [--top-k k]`.
 * Splits every FFN of a trained dense checkpoint into E experts and writes a checkpoint whose
 * FFNs compute only the k selected experts per token (tasks/moefy.h, docs/moefy.md). The
 * log goes to stderr. */
#include "config.h"

#include <stdio.h>
#include <string.h>

#include "commands.h"
#include "common_options.h"
#include "moelm/errors.h"
#include "tasks/moefy.h"

typedef struct {
  char *path, *save, *split, *select, *subset;
  int num_experts, top_k, kmeans_iters, router_dim, router_epochs, router_batch;
  gint64 collect_tokens, max_tokens, seed;
  double router_lr;
  MoelmBackendOptions backend;
} MoefyOptions;

static void options_init(MoefyOptions *o)
{
  MoelmMoefyOptions d;
  moelm_moefy_options_init(&d);
  memset(o, 0, sizeof *o);
  o->split = g_strdup(moelm_moefy_split_name(d.split));
  o->select = g_strdup(moelm_moefy_select_name(d.select));
  o->subset = g_strdup("train");
  o->kmeans_iters = d.kmeans_iters;
  o->router_dim = d.router.hidden;
  o->router_epochs = d.router.epochs;
  o->router_batch = d.router.batch;
  o->router_lr = d.router.lr;
  o->collect_tokens = 32768;
  o->max_tokens = 2048;
  o->seed = 1;
  moelm_backend_options_init(&o->backend);
}

static const MoelmArgSpec *moefy_table(MoefyOptions *o)
{
  static MoelmArgSpec t[24];
  const MoelmArgSpec spec[] = {
    {"--path", NULL, MOELM_ARG_STRING, &o->path, NULL, "the dense checkpoint to moefy (required)", NULL},
    {"--save", NULL, MOELM_ARG_STRING, &o->save, NULL, "where to write the moefied checkpoint (required)", NULL},
    {"--num-experts", NULL, MOELM_ARG_INT, &o->num_experts, NULL,
     "experts per FFN; must divide --decoder-ffn-embed-dim (required)", NULL},
    {"--split", NULL, MOELM_ARG_CHOICE, &o->split, "param-cluster|coactivation",
     "expert construction: balanced k-means of fc1 rows, or METIS on co-activations (param-cluster)", NULL},
    {"--select", NULL, MOELM_ARG_CHOICE, &o->select, "similarity|mlp|groundtruth",
     "expert selection; groundtruth is an upper bound that computes the whole FFN to choose (mlp)", NULL},
    {"--top-k", NULL, MOELM_ARG_INT, &o->top_k, NULL,
     "experts computed per token (default: a fifth of them); eval-lm/generate --moefy-top-k overrides it", NULL},
    {"--train-subset", NULL, MOELM_ARG_STRING, &o->subset, NULL,
     "split whose activations build the co-activation graph and train the MLP (train)", NULL},
    {"--moefy-tokens", NULL, MOELM_ARG_INT64, &o->collect_tokens, NULL, "tokens of it to collect (32768)", NULL},
    {"--max-tokens", NULL, MOELM_ARG_INT64, &o->max_tokens, NULL, "tokens per forward pass while collecting (2048)",
     NULL},
    {"--seed", NULL, MOELM_ARG_INT64, &o->seed, NULL, "k-means++, METIS, the router and the sampled blocks (1)", NULL},
    {"--kmeans-iters", NULL, MOELM_ARG_INT, &o->kmeans_iters, NULL, "balanced k-means rounds at most (30)", NULL},
    {"--router-dim", NULL, MOELM_ARG_INT, &o->router_dim, NULL, "hidden units of the MLP router (64)", NULL},
    {"--router-epochs", NULL, MOELM_ARG_INT, &o->router_epochs, NULL, "passes over the collected tokens (10)", NULL},
    {"--router-batch-size", NULL, MOELM_ARG_INT, &o->router_batch, NULL, "tokens per router update (256)", NULL},
    {"--router-lr", NULL, MOELM_ARG_DOUBLE, &o->router_lr, NULL, "the router's Adam learning rate (0.001)", NULL},
    {NULL, NULL, 0, NULL, NULL, NULL, NULL},
  };
  memcpy(t, spec, sizeof spec);
  return t;
}

/* The command line as the task's configuration; bad values are errors naming the flag. */
static gboolean to_run(const MoefyOptions *o, const char *data, MoelmMoefyRun *run, GError **error)
{
  memset(run, 0, sizeof *run);
  MoelmMoefyOptions *opt = &run->opt;
  moelm_moefy_options_init(opt);
  if (!moelm_moefy_split_parse(o->split, &opt->split, error) || !moelm_moefy_select_parse(o->select, &opt->select, error) ||
      !moelm_backend_options_apply(&o->backend, &run->backend, error))
    return FALSE;
  const char *bad = NULL;
  if (o->num_experts < 1)
    bad = "--num-experts must be at least 1";
  else if (o->top_k < 0)
    bad = "--top-k must be at least 1";
  else if (o->collect_tokens < 1 || o->max_tokens < 1)
    bad = "--moefy-tokens and --max-tokens must be positive";
  else if (o->kmeans_iters < 1)
    bad = "--kmeans-iters must be at least 1";
  else if (o->router_dim < 1 || o->router_epochs < 1 || o->router_batch < 1 || !(o->router_lr > 0))
    bad = "--router-dim, --router-epochs, --router-batch-size and --router-lr must be positive";
  if (bad) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG, "%s", bad);
    return FALSE;
  }
  opt->num_experts = o->num_experts;
  opt->top_k = o->top_k > 0 ? o->top_k : MAX(1, o->num_experts / 5);
  opt->seed = (uint64_t)o->seed;
  opt->kmeans_iters = o->kmeans_iters;
  opt->router = (MoelmRouterOptions){.hidden = o->router_dim, .epochs = o->router_epochs, .batch = o->router_batch,
                                     .lr = o->router_lr, .seed = (uint64_t)o->seed};
  run->data_dir = data;
  run->path = o->path;
  run->save = o->save;
  run->subset = o->subset;
  run->collect_tokens = o->collect_tokens;
  run->batch_tokens = o->max_tokens;
  return TRUE;
}

int moelm_cmd_moefy(int argc, char **argv)
{
  MoefyOptions o;
  options_init(&o);
  const MoelmArgSpec *tables[] = {moefy_table(&o), moelm_backend_options_table(&o.backend), moelm_ignored_options,
                                  NULL};
  GPtrArray *pos = g_ptr_array_new();
  gboolean help = FALSE;
  GError *error = NULL;
  int rc = 0;
  MoelmMoefyRun run;
  if (!moelm_args_parse("moelm moefy", tables, argc, argv, 1, pos, &help, &error)) {
    rc = moelm_cli_fail("moefy", error, 2);
    goto out;
  }
  if (help) {
    moelm_args_print_help(stdout, "moelm moefy",
                          "DATA --path DENSE_CHECKPOINT --num-experts E --save OUT [--split ...] [--select ...] "
                          "[--top-k K]",
                          tables);
    goto out;
  }
  const char *missing = pos->len != 1 ? "expected exactly one DATA directory"
                        : o.path == NULL ? "the following arguments are required: --path"
                        : o.save == NULL ? "the following arguments are required: --save"
                        : o.num_experts == 0 ? "the following arguments are required: --num-experts"
                                             : NULL;
  if (missing) {
    error = g_error_new(MOELM_ERROR, MOELM_ERROR_INVALID_ARG, "%s", missing);
    rc = moelm_cli_fail("moefy", error, 2);
    goto out;
  }
  if (!to_run(&o, g_ptr_array_index(pos, 0), &run, &error)) {
    rc = moelm_cli_fail("moefy", error, 2);
    goto out;
  }
  if (!moelm_moefy_run(&run, &error))
    rc = moelm_cli_fail("moefy", error, 1);
out:
  g_clear_error(&error);
  moelm_args_free_strings(tables);
  g_ptr_array_unref(pos);
  return rc;
}
