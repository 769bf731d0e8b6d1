/* moelm — tasks as the CLI sets them up: language_modeling (and, later, language_model_moe). */
#include "config.h"

#include <string.h>

#include "moelm/errors.h"
#include "moelm/log.h"
#include "tasks/mixture.h"
#include "tasks/task_meta.h"
#include "tasks/mixture_docs.h"
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
  o->balance = o->temperature = -1;
  o->anneal_updates = o->init_after = o->init_updates = -1;
}

const MoelmArgSpec *moelm_task_options_table(MoelmTaskOptions *o)
{
  static MoelmArgSpec t[21];
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
    {"--domain-discovery", NULL, MOELM_ARG_FLAG, &o->domain_discovery, NULL,
     "mixture: make the experts find the domains (the best measured --mixture-* settings)", NULL},
    {"--mixture-estep", NULL, MOELM_ARG_CHOICE, &o->estep, "block|document",
     "mixture: responsibilities per block (fairseq) or per document", NULL},
    {"--mixture-balance", NULL, MOELM_ARG_DOUBLE, &o->balance, NULL,
     "mixture: balanced hard assignment in a batch, at most F times the even share (0: off)", NULL},
    {"--mixture-temperature", NULL, MOELM_ARG_DOUBLE, &o->temperature, NULL,
     "mixture: E-step temperature at the start, annealed to fairseq's rule (0: off)", NULL},
    {"--mixture-anneal-updates", NULL, MOELM_ARG_INT64, &o->anneal_updates, NULL,
     "mixture: updates over which the temperature anneals", NULL},
    {"--mixture-init", NULL, MOELM_ARG_CHOICE, &o->init, "none|tfidf|unigram|auto|labels",
     "mixture: responsibilities from a clustering of the training documents (or their labels)", NULL},
    {"--mixture-init-after", NULL, MOELM_ARG_INT64, &o->init_after, NULL,
     "mixture: updates before the clustering takes over (0)", NULL},
    {"--mixture-init-updates", NULL, MOELM_ARG_INT64, &o->init_updates, NULL,
     "mixture: updates that follow the clustering", NULL},
    {"--mixture-expert-ffn", NULL, MOELM_ARG_INT, &o->expert_ffn, NULL,
     "mixture: every F-th layer has one FFN per expert, chosen by the sequence's expert (0: shared)",
     &o->expert_ffn_seen},
    {NULL, NULL, 0, NULL, NULL, NULL, NULL},
  };
  memcpy(t, spec, sizeof spec);
  return t;
}

void moelm_task_options_clear(MoelmTaskOptions *o)
{
  g_free(o->method);
  g_free(o->estep);
  g_free(o->init);
  o->method = o->estep = o->init = NULL;
}

/* The domain-discovery settings: each option as given, else --domain-discovery's choice, else
 * off. */
static gboolean discovery_setup(MoelmDiscoveryConfig *d, const MoelmTaskOptions *o, gboolean hard, GError **error)
{
  const gboolean dd = o->domain_discovery;
  memset(d, 0, sizeof *d);
  d->doc_estep = o->estep ? strcmp(o->estep, "document") == 0 : dd;
  d->balance = o->balance >= 0 ? o->balance : (dd && hard ? 4.0 : 0.0);
  d->temperature = o->temperature >= 0 ? o->temperature : 0.0;
  d->anneal_updates = o->anneal_updates >= 0 ? o->anneal_updates : 0;
  /* --domain-discovery: the document E-step, balanced hard assignment, and the first 200
   * updates on the documents' `auto` clusters (against `unigram`: better on code, level on
   * the shipped corpus, level or better on docs over six seeds; tests/bench/NOTES.md) */
  d->init = !o->init                         ? (dd ? MOELM_MIXTURE_INIT_AUTO : MOELM_MIXTURE_INIT_NONE)
            : strcmp(o->init, "tfidf") == 0  ? MOELM_MIXTURE_INIT_TFIDF
            : strcmp(o->init, "labels") == 0 ? MOELM_MIXTURE_INIT_LABELS
            : strcmp(o->init, "unigram") == 0 ? MOELM_MIXTURE_INIT_UNIGRAM
            : strcmp(o->init, "auto") == 0    ? MOELM_MIXTURE_INIT_AUTO
                                             : MOELM_MIXTURE_INIT_NONE;
  d->init_after = o->init_after >= 0 ? o->init_after : 0;
  d->init_updates = o->init_updates >= 0              ? o->init_updates
                    : d->init == MOELM_MIXTURE_INIT_NONE ? 0
                    : dd && !o->init                     ? 200
                                                         : 100;
  if (d->balance > 0 && d->balance < 1) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG,
                "--mixture-balance must be 0 (off) or at least 1 (got %g)", d->balance);
    return FALSE;
  }
  if (d->balance >= 1 && !hard) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG,
                "--mixture-balance needs a hard --method (hMoEup or hMoElp): soft methods assign no winners");
    return FALSE;
  }
  if (d->temperature > 0 && d->anneal_updates <= 0) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG,
                "--mixture-temperature needs --mixture-anneal-updates N > 0 (the updates it anneals over)");
    return FALSE;
  }
  return TRUE;
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
  if (!moelm_task_meta_validate(&t->meta, error) || !discovery_setup(&c->discovery, o, c->hard, error))
    return FALSE;
  c->expert_token0 = moelm_mixture_add_expert_tokens(t->dict, o->num_experts);
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

/* --mixture-expert-ffn F: every F-th decoder layer's FFN becomes K experts, each row routed to
 * the FFN of the expert whose token starts it (sequence routing: top-1, weight 1, no capacity,
 * no gate loss). The rest of the model stays shared. --domain-discovery chooses F = 1 unless
 * the model has token-level MoE layers of its own. */
static gboolean expert_ffn_setup(MoelmTrainTask *t, MoelmTrainConfig *cfg, GError **error)
{
  const MoelmTaskOptions *o = t->opts;
  MoelmModelConfig *mc = &cfg->model;
  const int F = o->expert_ffn_seen ? o->expert_ffn : o->domain_discovery && mc->moe_freq == 0 && mc->layers > 0 ? 1 : 0;
  if (F == 0)
    return TRUE;
  if (F < 0 || F > MOELM_MODEL_MAX_LAYERS) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG, "--mixture-expert-ffn must be in [0, %d], got %d",
                MOELM_MODEL_MAX_LAYERS, F);
    return FALSE;
  }
  if (mc->moe_freq > 0) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG,
                "--mixture-expert-ffn makes its own MoE layers, routed by the sequence's expert: it does not combine "
                "with token-level MoE (--moe-freq %d)",
                mc->moe_freq);
    return FALSE;
  }
  if (F > mc->layers) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG,
                "--mixture-expert-ffn %d: the model has only %d decoder layers, so no layer would have expert FFNs", F,
                mc->layers);
    return FALSE;
  }
  mc->moe_freq = F;
  mc->moe_experts = t->meta.mix.num_experts;
  mc->moe_top_k = 1;
  mc->moe_gate_loss_wt = 0;
  mc->moe_route_token0 = t->meta.mix.expert_token0;
  moelm_info("moelm.task", "mixture: one FFN per expert (%d) in %d of the %d decoder layers (--mixture-expert-ffn %d%s)",
             mc->moe_experts, moelm_model_config_moe_layers(mc), mc->layers, F,
             o->expert_ffn_seen ? "" : ", chosen by --domain-discovery");
  return TRUE;
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
  if (t->meta.mixture && !expert_ffn_setup(t, cfg, error))
    return FALSE;
  if (!moelm_task_meta_validate(&t->meta, error))
    return FALSE;
  if (t->meta.mixture) { /* the objective counts updates over every rank's sub-batches */
    t->meta.mix.discovery.update_freq = cfg->update_freq * moelm_comm_size(cfg->comm);
    moelm_objective_free(t->objective);
    t->objective = moelm_mixture_objective_new(&t->meta.mix);
    if (!cfg->disable_validation && !moelm_mixture_check_domain_labels(cfg->data_dir, cfg->valid_subset, error))
      return FALSE;
  }
  cfg->task_meta = moelm_task_meta_to_json(&t->meta);
  /* the soft M-step (and an annealed hard one) trains K copies of each row; the E-step scores
   * K copies, in chunks */
  const MoelmMixtureConfig *mix = &t->meta.mix;
  const gboolean k_rows = t->meta.mixture && (!mix->hard || mix->discovery.temperature > 0);
  cfg->rows_per_sequence = k_rows ? mix->num_experts : 1;
  cfg->estep_copies = t->meta.mixture ? mix->num_experts : 0;
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
