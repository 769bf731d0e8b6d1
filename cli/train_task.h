/* moelm — the CLI's view of a task: its options, dictionary and objective. */
#ifndef MOELM_CLI_TRAIN_TASK_H
#define MOELM_CLI_TRAIN_TASK_H

#include "args.h"
#include "moelm/dictionary.h"
#include "tasks/objective.h"
#include "tasks/trainer.h"

/* Task-specific options: those of --task language_model_moe. */
typedef struct {
  char *method;                /* --method hMoEup|hMoElp|sMoEup|sMoElp */
  int num_experts;             /* --num-experts (3) */
  gboolean mean_pool_gating;   /* --mean-pool-gating-network */
  int gating_encoder_dim;      /* --mean-pool-gating-network-encoder-dim (default: the embed dim) */
  double gating_dropout;       /* --mean-pool-gating-network-dropout (default: --dropout) */
  int gating_context;          /* --gating-context (256) */
  gboolean gating_encoder_dim_seen, gating_dropout_seen; /* given (then taken and validated) */
  /* domain discovery (docs/mixtures.md); "not given" is NULL or < 0 */
  gboolean domain_discovery;   /* --domain-discovery: the measured best of the options below */
  char *estep;                 /* --mixture-estep block|document */
  double balance;              /* --mixture-balance F */
  double temperature;          /* --mixture-temperature T0 */
  gint64 anneal_updates;       /* --mixture-anneal-updates N */
  char *init;                  /* --mixture-init none|tfidf|labels */
  gint64 init_after;           /* --mixture-init-after W */
  gint64 init_updates;         /* --mixture-init-updates N */
  int expert_ffn;              /* --mixture-expert-ffn F: every F-th layer's FFN per expert (0: shared) */
  gboolean expert_ffn_seen;
} MoelmTaskOptions;

void moelm_task_options_init(MoelmTaskOptions *o);
const MoelmArgSpec *moelm_task_options_table(MoelmTaskOptions *o);
void moelm_task_options_clear(MoelmTaskOptions *o);

typedef struct MoelmTrainTask MoelmTrainTask;

/* Load DATA/dict.txt and set the task up; errors name the file. */
MoelmTrainTask *moelm_train_task_open(const char *name, const MoelmTaskOptions *o, const char *data_dir,
                                      GError **error);
/* Fill what the task decides in the trainer config: vocab size, checkpoint "task" metadata. */
gboolean moelm_train_task_configure(MoelmTrainTask *task, MoelmTrainConfig *cfg, GError **error);
const MoelmDictionary *moelm_train_task_dictionary(const MoelmTrainTask *task);
MoelmObjective *moelm_train_task_objective(MoelmTrainTask *task);
void moelm_train_task_free(MoelmTrainTask *task);

#endif
