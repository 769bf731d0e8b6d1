/* moelm — tasks as the CLI sets them up: language_modeling (and, later, language_model_moe). */
#include "config.h"

#include <string.h>

#include "moelm/errors.h"
#include "moelm/log.h"
#include "tasks/mixture.h"
#include "train_task.h"

struct MoelmTrainTask {
  char *name;
  gboolean mixture;
  MoelmMixtureConfig mix;
  const MoelmTaskOptions *opts;
  MoelmDictionary *dict;
  MoelmObjective *objective;
};

void moelm_task_options_init(MoelmTaskOptions *o)
{
  memset(o, 0, sizeof *o);
  o->method = g_strdup("hMoEup");
  o->num_experts = 3;
  o->gating_encoder_dim = -1;
  o->gating_dropout = -1;
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
     "must equal --decoder-embed-dim", NULL},
    {"--mean-pool-gating-network-dropout", NULL, MOELM_ARG_DOUBLE, &o->gating_dropout, NULL,
     "dropout in the gating network (default: --dropout)", NULL},
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
  MoelmMixtureConfig *c = &t->mix;
  if (!moelm_mixture_method_parse(o->method, &c->hard, &c->learned_prior, error))
    return FALSE;
  if (o->num_experts < 1) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG, "--num-experts must be at least 1 (got %d)",
                o->num_experts);
    return FALSE;
  }
  if (c->learned_prior && !o->mean_pool_gating) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG,
                "--method %s has a learned prior and requires --mean-pool-gating-network", o->method);
    return FALSE;
  }
  if (c->learned_prior && o->num_experts < 2) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG, "a learned prior needs --num-experts >= 2");
    return FALSE;
  }
  if (!c->learned_prior && o->mean_pool_gating)
    moelm_warn("moelm.task", "--mean-pool-gating-network has no effect with the uniform prior of --method %s",
               o->method);
  if (o->gating_context < 0) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG, "--gating-context must be >= 0");
    return FALSE;
  }
  c->num_experts = o->num_experts;
  c->gating_context = o->gating_context;
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
  g_free(dict_path);
  if (dict == NULL)
    return NULL;
  MoelmTrainTask *t = g_new0(MoelmTrainTask, 1);
  t->name = g_strdup(name);
  t->dict = dict;
  t->opts = o;
  t->mixture = strcmp(name, "language_model_moe") == 0;
  if (!t->mixture) {
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
  JsonObject *o = json_object_new();
  json_object_set_string_member(o, "task", t->name);
  json_object_set_int_member(o, "tokens_per_sample", cfg->tokens_per_sample);
  static const char *const modes[] = {"none", "complete", "complete_doc", "eos"};
  json_object_set_string_member(o, "sample_break_mode", modes[cfg->break_mode]);
  if (t->mixture) {
    const MoelmTaskOptions *to = t->opts;
    json_object_set_string_member(o, "method", to->method);
    json_object_set_int_member(o, "num_experts", t->mix.num_experts);
    json_object_set_int_member(o, "gating_context", t->mix.gating_context);
    json_object_set_int_member(o, "expert_token0", t->mix.expert_token0);
    if (t->mix.learned_prior) {
      if (to->gating_encoder_dim > 0 && to->gating_encoder_dim != cfg->model.embed_dim) {
        g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG,
                    "--mean-pool-gating-network-encoder-dim %d differs from --decoder-embed-dim %d: the gating "
                    "network pools the decoder's token embeddings",
                    to->gating_encoder_dim, cfg->model.embed_dim);
        json_object_unref(o);
        return FALSE;
      }
      cfg->model.gate_experts = t->mix.num_experts;
      cfg->model.gate_dropout = to->gating_dropout >= 0 ? to->gating_dropout : cfg->model.dropout;
    }
  }
  cfg->task_meta = json_node_new(JSON_NODE_OBJECT);
  json_node_take_object(cfg->task_meta, o);
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
  g_free(t->name);
  g_free(t);
}
