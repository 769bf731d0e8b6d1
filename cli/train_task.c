/* moelm — tasks as the CLI sets them up: language_modeling (and, later, language_model_moe). */
#include "config.h"

#include <string.h>

#include "moelm/errors.h"
#include "moelm/log.h"
#include "tasks/mixture.h"
#include "tasks/task_meta.h"
#include "train_task.h"

struct MoelmTrainTask {
  MoelmTaskMeta meta; /* what the checkpoints' "task" metadata will say */
  const MoelmTaskOptions *opts;
  MoelmDictionary *dict;
  MoelmObjective *objective;
};

void moelm_task_options_init(MoelmTaskOptions *o)
{
  memset(o, 0, sizeof *o);
  o->method = g_strdup("hMoEup");
  o->num_experts = 3;
  o->gating_context = 256;
}

const MoelmArgSpec *moelm_task_options_table(MoelmTaskOptions *o)
{
  static MoelmArgSpec t[8];
  const MoelmArgSpec spec[] = {
    {"--method", NULL, MOELM_ARG_CHOICE, &o->method, "hMoEup|hMoElp|sMoEup|sMoElp",
     "mixture: hard/soft selection, uniform/learned prior", NULL},
    {"--num-experts", NULL, MOELM_ARG_INT, &o->num_experts, NULL, "mixture components K (3)", NULL},
    {"--mean-pool-gating-network", NULL, MOELM_ARG_FLAG, &o->mean_pool_gating, NULL,
     "learned prior from the mean-pooled context embeddings", NULL},
    {"--mean-pool-gating-network-encoder-dim", NULL, MOELM_ARG_INT, &o->gating_encoder_dim, NULL,
     "must equal --decoder-embed-dim", &o->gating_encoder_dim_seen},
    {"--mean-pool-gating-network-dropout", NULL, MOELM_ARG_DOUBLE, &o->gating_dropout, NULL,
     "dropout in the gating network (default: --dropout)", &o->gating_dropout_seen},
    {"--gating-context", NULL, MOELM_ARG_INT, &o->gating_context, NULL,
     "tokens before a block that the gating network sees (256)", NULL},
    {NULL, NULL, 0, NULL, NULL, NULL, NULL},
  };
  memcpy(t, spec, sizeof spec);
  return t;
}

void moelm_task_options_clear(MoelmTaskOptions *o)
{
  g_free(o->method);
  o->method = NULL;
}

static gboolean mixture_setup(MoelmTrainTask *t, const MoelmTaskOptions *o, GError **error)
{
  MoelmMixtureConfig *c = &t->meta.mix;
  if (c->learned_prior && !o->mean_pool_gating) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG,
                "--method %s has a learned prior and requires --mean-pool-gating-network", o->method);
    return FALSE;
  }
  if (!c->learned_prior && o->mean_pool_gating)
    moelm_warn("moelm.task", "--mean-pool-gating-network has no effect with the uniform prior of --method %s",
               o->method);
  c->num_experts = o->num_experts;
  c->gating_context = o->gating_context;
  if (!moelm_task_meta_validate(&t->meta, error))
    return FALSE;
  c->expert_token0 = moelm_mixture_add_expert_tokens(t->dict, o->num_experts);
  t->objective = moelm_mixture_objective_new(c);
  return TRUE;
}

MoelmTrainTask *moelm_train_task_open(const char *name, const MoelmTaskOptions *o, const char *data_dir,
                                      GError **error)
{
  if (!g_file_test(data_dir, G_FILE_TEST_IS_DIR)) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_IO, "%s: data directory not found", data_dir);
    return NULL;
  }
  char *dict_path = g_build_filename(data_dir, "dict.txt", NULL);
  MoelmDictionary *dict = moelm_dictionary_load(dict_path, error);
  if (dict != NULL && moelm_dictionary_size(dict) <= MOELM_NSPECIAL) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_FORMAT,
                "%s: no symbols besides the %d special ones (an empty dictionary): nothing to train on", dict_path,
                MOELM_NSPECIAL);
    moelm_dictionary_free(dict);
    dict = NULL;
  }
  g_free(dict_path);
  if (dict == NULL)
    return NULL;
  MoelmTrainTask *t = g_new0(MoelmTrainTask, 1);
  moelm_task_meta_init(&t->meta);
  t->dict = dict;
  t->opts = o;
  if (!moelm_task_meta_set(&t->meta, name, o->method, error)) {
    moelm_train_task_free(t);
    return NULL;
  }
  if (!t->meta.mixture) {
    t->objective = moelm_lm_objective_new();
  } else if (!mixture_setup(t, o, error)) {
    moelm_train_task_free(t);
    return NULL;
  }
  return t;
}

gboolean moelm_train_task_configure(MoelmTrainTask *t, MoelmTrainConfig *cfg, GError **error)
{
  cfg->model.vocab_size = (int)moelm_dictionary_size(t->dict);
  t->meta.tokens_per_sample = cfg->tokens_per_sample;
  t->meta.break_mode = cfg->break_mode;
  if (t->meta.mixture && t->meta.mix.learned_prior) {
    const MoelmTaskOptions *to = t->opts;
    if (to->gating_encoder_dim_seen && to->gating_encoder_dim != cfg->model.embed_dim) {
      g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG,
                  "--mean-pool-gating-network-encoder-dim %d differs from --decoder-embed-dim %d: the gating "
                  "network pools the decoder's token embeddings",
                  to->gating_encoder_dim, cfg->model.embed_dim);
      return FALSE;
    }
    cfg->model.gate_experts = t->meta.mix.num_experts;
    cfg->model.gate_dropout = to->gating_dropout_seen ? to->gating_dropout : cfg->model.dropout;
  }
  if (!moelm_task_meta_validate(&t->meta, error))
    return FALSE;
  cfg->task_meta = moelm_task_meta_to_json(&t->meta);
  cfg->rows_per_sequence = t->meta.mixture ? t->meta.mix.num_experts : 1; /* the E-step runs K copies */
  return moelm_model_config_validate(&cfg->model, error);
}

const MoelmDictionary *moelm_train_task_dictionary(const MoelmTrainTask *t) { return t->dict; }
MoelmObjective *moelm_train_task_objective(MoelmTrainTask *t) { return t->objective; }

void moelm_train_task_free(MoelmTrainTask *t)
{
  if (t == NULL)
    return;
  moelm_objective_free(t->objective);
  moelm_dictionary_free(t->dict);
  moelm_task_meta_clear(&t->meta);
  g_free(t);
}
