/* moelm train — fairseq-train: `moelm train DATA --arch transformer_lm --optimizer adam ...`. */
#include "config.h"

#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "commands.h"
#include "common_options.h"
#include "moelm/errors.h"
#include "moelm/log.h"
#include "tasks/trainer.h"
#include "train_task.h"

typedef struct {
  char *task, *criterion, *optimizer, *lr_scheduler, *lr, *adam_betas, *log_format, *break_mode;
  char *train_subset, *valid_subset, *save_dir, *restore_file, *finetune, *tensorboard_logdir, *log_file;
  char *best_metric;
  double adam_eps, weight_decay, clip_norm, warmup_init_lr, min_lr, stop_min_lr, lr_period_updates, t_mult, lr_shrink;
  double end_lr, power, total_num_update, stop_time_hours;
  gint64 tokens_per_sample, max_tokens, max_tokens_valid, max_update, warmup_updates, save_interval_updates;
  gint64 validate_interval_updates, force_anneal, max_valid_steps;
  int batch_size, batch_size_valid, required_multiple, update_freq, max_epoch, validate_interval, save_interval;
  int keep_last_epochs, keep_interval_updates, keep_best, patience, log_interval;
  gint64 seed;
  int world_size;       /* --distributed-world-size (-1: not given) */
  double bucket_cap_mb; /* --bucket-cap-mb */
  gboolean expert_parallel, checkpoint_activations, no_progress_bar;
  char *normalize_expert_grad;
  gboolean maximize_best_metric;
  gboolean disable_validation, no_save, no_epoch_checkpoints, no_last_checkpoints, no_save_optimizer_state;
  gboolean reset_optimizer, reset_lr_scheduler, reset_dataloader, reset_meters, skip_invalid;
  MoelmBackendOptions backend;
  MoelmModelOptions model;
  MoelmTaskOptions task_opts;
  struct {
    gboolean warmup_updates, total_num_update, max_valid_steps;
  } seen; /* given: these two have per-scheduler defaults */
} TrainOptions;

static void options_init(TrainOptions *o)
{
  memset(o, 0, sizeof *o);
  o->task = g_strdup("language_modeling");
  o->criterion = g_strdup("cross_entropy");
  o->optimizer = g_strdup("adam");
  o->lr_scheduler = g_strdup("fixed");
  o->lr = g_strdup("0.25");
  o->adam_betas = g_strdup("(0.9, 0.999)");
  o->log_format = g_strdup("simple");
  o->break_mode = g_strdup("none");
  o->train_subset = g_strdup("train");
  o->valid_subset = g_strdup("valid");
  o->save_dir = g_strdup("checkpoints");
  o->best_metric = g_strdup("loss");
  o->restore_file = g_strdup("checkpoint_last.pt");
  o->adam_eps = 1e-8;
  o->warmup_init_lr = -1;
  o->stop_min_lr = -1;
  o->t_mult = 1.0;
  o->lr_shrink = 0.1;
  o->power = 1.0;
  o->tokens_per_sample = 1024;
  o->warmup_updates = -1;
  o->force_anneal = -1;
  o->required_multiple = 8;
  o->update_freq = 1;
  o->validate_interval = 1;
  o->save_interval = 1;
  o->keep_last_epochs = o->keep_interval_updates = o->keep_best = o->patience = -1;
  o->log_interval = 100;
  o->seed = 1;
  o->world_size = -1;
  o->bucket_cap_mb = 25;
  o->normalize_expert_grad = g_strdup("world_size");
  moelm_backend_options_init(&o->backend);
  moelm_model_options_init(&o->model);
  moelm_task_options_init(&o->task_opts);
}

static const MoelmArgSpec *train_table(TrainOptions *o)
{
  static MoelmArgSpec t[96];
  const MoelmArgSpec spec[] = {
    {"--task", NULL, MOELM_ARG_CHOICE, &o->task, "language_modeling|language_model_moe", "task", NULL},
    {"--criterion", NULL, MOELM_ARG_CHOICE, &o->criterion, "cross_entropy|moe_cross_entropy", "criterion", NULL},
    {"--seed", NULL, MOELM_ARG_INT64, &o->seed, NULL, "random seed (1)", NULL},
    {"--log-interval", NULL, MOELM_ARG_INT, &o->log_interval, NULL, "log every N updates (100)", NULL},
    {"--log-format", NULL, MOELM_ARG_CHOICE, &o->log_format, "simple|json|none|tqdm",
     "statistics lines: simple, json, none (no statistics lines), tqdm (a progress bar; simple when not a terminal)", NULL},
    {"--log-file", NULL, MOELM_ARG_STRING, &o->log_file, NULL, "also append every log line to FILE", NULL},
    {"--no-progress-bar", NULL, MOELM_ARG_FLAG, &o->no_progress_bar, NULL, "no progress line on the terminal", NULL},
    {"--tensorboard-logdir", NULL, MOELM_ARG_STRING, &o->tensorboard_logdir, NULL,
     "write TensorBoard event files to DIR/train_inner, DIR/train, DIR/valid", NULL},
    {"--tokens-per-sample", NULL, MOELM_ARG_INT64, &o->tokens_per_sample, NULL, "tokens per block (1024)", NULL},
    {"--sample-break-mode", NULL, MOELM_ARG_CHOICE, &o->break_mode, "none|complete|complete_doc|eos", "block boundaries", NULL},
    {"--max-tokens", NULL, MOELM_ARG_INT64, &o->max_tokens, NULL, "max tokens per batch", NULL},
    {"--batch-size", "--max-sentences", MOELM_ARG_INT, &o->batch_size, NULL, "max sequences per batch", NULL},
    {"--max-tokens-valid", NULL, MOELM_ARG_INT64, &o->max_tokens_valid, NULL, "max tokens per validation batch", NULL},
    {"--batch-size-valid", "--max-sentences-valid", MOELM_ARG_INT, &o->batch_size_valid, NULL, "validation batch size", NULL},
    {"--required-batch-size-multiple", NULL, MOELM_ARG_INT, &o->required_multiple, NULL, "batch size multiple (8)", NULL},
    {"--skip-invalid-size-inputs-valid-test", NULL, MOELM_ARG_FLAG, &o->skip_invalid, NULL, "drop too-long blocks", NULL},
    {"--train-subset", NULL, MOELM_ARG_STRING, &o->train_subset, NULL, "training split (train)", NULL},
    {"--valid-subset", NULL, MOELM_ARG_STRING, &o->valid_subset, NULL, "validation splits, comma separated (valid)", NULL},
    {"--validate-interval", NULL, MOELM_ARG_INT, &o->validate_interval, NULL, "validate every N epochs", NULL},
    {"--validate-interval-updates", NULL, MOELM_ARG_INT64, &o->validate_interval_updates, NULL, "validate every N updates", NULL},
    {"--disable-validation", NULL, MOELM_ARG_FLAG, &o->disable_validation, NULL, "no validation", NULL},
    {"--max-valid-steps", "--nval", MOELM_ARG_INT64, &o->max_valid_steps, NULL,
     "validate on the first N batches of each valid split only (per rank)", &o->seen.max_valid_steps},
    {"--max-epoch", NULL, MOELM_ARG_INT, &o->max_epoch, NULL, "stop after N epochs", NULL},
    {"--max-update", NULL, MOELM_ARG_INT64, &o->max_update, NULL, "stop after N updates", NULL},
    {"--update-freq", NULL, MOELM_ARG_INT, &o->update_freq, NULL, "accumulate N batches per update", NULL},
    {"--clip-norm", NULL, MOELM_ARG_DOUBLE, &o->clip_norm, NULL, "clip gradient norm (0 = off)", NULL},
    {"--stop-min-lr", NULL, MOELM_ARG_DOUBLE, &o->stop_min_lr, NULL, "stop when lr falls to this", NULL},
    {"--stop-time-hours", NULL, MOELM_ARG_DOUBLE, &o->stop_time_hours, NULL,
     "stop (and save) once the training time, resumed runs included, exceeds X hours (0: off)", NULL},
    {"--optimizer", NULL, MOELM_ARG_STRING, &o->optimizer, NULL, "adam", NULL},
    {"--adam-betas", NULL, MOELM_ARG_STRING, &o->adam_betas, NULL, "'(0.9, 0.999)'", NULL},
    {"--adam-eps", NULL, MOELM_ARG_DOUBLE, &o->adam_eps, NULL, "1e-8", NULL},
    {"--weight-decay", "--wd", MOELM_ARG_DOUBLE, &o->weight_decay, NULL, "decoupled weight decay", NULL},
    {"--lr", NULL, MOELM_ARG_STRING, &o->lr, NULL, "learning rate (or per-epoch list)", NULL},
    {"--lr-scheduler", NULL, MOELM_ARG_CHOICE, &o->lr_scheduler, "fixed|inverse_sqrt|cosine|polynomial_decay", "schedule", NULL},
    {"--warmup-updates", NULL, MOELM_ARG_INT64, &o->warmup_updates, NULL, "linear warmup updates", &o->seen.warmup_updates},
    {"--warmup-init-lr", NULL, MOELM_ARG_DOUBLE, &o->warmup_init_lr, NULL, "lr at the start of warmup", NULL},
    {"--min-lr", NULL, MOELM_ARG_DOUBLE, &o->min_lr, NULL, "cosine floor", NULL},
    {"--lr-period-updates", NULL, MOELM_ARG_DOUBLE, &o->lr_period_updates, NULL, "cosine period", NULL},
    {"--t-mult", NULL, MOELM_ARG_DOUBLE, &o->t_mult, NULL, "cosine period multiplier", NULL},
    {"--lr-shrink", NULL, MOELM_ARG_DOUBLE, &o->lr_shrink, NULL, "shrink factor", NULL},
    {"--force-anneal", NULL, MOELM_ARG_INT64, &o->force_anneal, NULL, "force annealing at epoch N", NULL},
    {"--end-learning-rate", NULL, MOELM_ARG_DOUBLE, &o->end_lr, NULL, "polynomial_decay end lr", NULL},
    {"--power", NULL, MOELM_ARG_DOUBLE, &o->power, NULL, "polynomial_decay power", NULL},
    {"--total-num-update", NULL, MOELM_ARG_DOUBLE, &o->total_num_update, NULL, "polynomial_decay total", &o->seen.total_num_update},
    {"--save-dir", NULL, MOELM_ARG_STRING, &o->save_dir, NULL, "checkpoint directory (checkpoints)", NULL},
    {"--restore-file", NULL, MOELM_ARG_STRING, &o->restore_file, NULL, "checkpoint to resume (checkpoint_last.pt)", NULL},
    {"--finetune-from-model", NULL, MOELM_ARG_STRING, &o->finetune, NULL, "initialise from this checkpoint", NULL},
    {"--reset-optimizer", NULL, MOELM_ARG_FLAG, &o->reset_optimizer, NULL, "", NULL},
    {"--reset-lr-scheduler", NULL, MOELM_ARG_FLAG, &o->reset_lr_scheduler, NULL, "", NULL},
    {"--reset-dataloader", NULL, MOELM_ARG_FLAG, &o->reset_dataloader, NULL, "", NULL},
    {"--reset-meters", NULL, MOELM_ARG_FLAG, &o->reset_meters, NULL, "", NULL},
    {"--save-interval", NULL, MOELM_ARG_INT, &o->save_interval, NULL, "save every N epochs", NULL},
    {"--save-interval-updates", NULL, MOELM_ARG_INT64, &o->save_interval_updates, NULL, "save every N updates", NULL},
    {"--keep-last-epochs", NULL, MOELM_ARG_INT, &o->keep_last_epochs, NULL, "keep the last N epoch checkpoints", NULL},
    {"--keep-interval-updates", NULL, MOELM_ARG_INT, &o->keep_interval_updates, NULL, "keep the last N update checkpoints", NULL},
    {"--keep-best-checkpoints", NULL, MOELM_ARG_INT, &o->keep_best, NULL,
     "also keep the N best validations as checkpoint.best_{metric}_{value}{digit}.pt", NULL},
    {"--no-save", NULL, MOELM_ARG_FLAG, &o->no_save, NULL, "write no checkpoints", NULL},
    {"--no-epoch-checkpoints", NULL, MOELM_ARG_FLAG, &o->no_epoch_checkpoints, NULL, "only best and last", NULL},
    {"--no-last-checkpoints", NULL, MOELM_ARG_FLAG, &o->no_last_checkpoints, NULL, "no checkpoint_last.pt", NULL},
    {"--no-save-optimizer-state", NULL, MOELM_ARG_FLAG, &o->no_save_optimizer_state, NULL, "leave Adam moments out", NULL},
    {"--patience", NULL, MOELM_ARG_INT, &o->patience, NULL, "stop after N validations without improvement", NULL},
    {"--best-checkpoint-metric", NULL, MOELM_ARG_STRING, &o->best_metric, NULL,
     "valid-line field deciding checkpoint_best.pt and --patience: loss, nll_loss, ppl, wps, wpb, bsz, num_updates (loss)",
     NULL},
    {"--maximize-best-checkpoint-metric", NULL, MOELM_ARG_FLAG, &o->maximize_best_metric, NULL,
     "a higher --best-checkpoint-metric is better", NULL},
    {"--distributed-world-size", NULL, MOELM_ARG_INT, &o->world_size, NULL,
     "processes in the job; checked against mpirun's (default: mpirun's)", NULL},
    {"--bucket-cap-mb", NULL, MOELM_ARG_DOUBLE, &o->bucket_cap_mb, NULL, "all-reduce bucket size in MB (25)", NULL},
    {"--checkpoint-activations", NULL, MOELM_ARG_FLAG, &o->checkpoint_activations, NULL,
     "recompute each layer's activations in the backward (less memory, one more forward)", NULL},
    {"--moe-expert-parallel", NULL, MOELM_ARG_FLAG, &o->expert_parallel, NULL,
     "split the experts of each MoE layer over the ranks (all-to-all)", NULL},
    {"--moe-normalize-expert-grad", NULL, MOELM_ARG_CHOICE, &o->normalize_expert_grad, "world_size|sqrt_world_size",
     "expert gradients as fairseq scales them (world_size: exact)", NULL},
    {NULL, NULL, 0, NULL, NULL, NULL, NULL},
  };
  memcpy(t, spec, sizeof spec);
  return t;
}

/* Options that belong to a task or a model kind the run does not have are an error, as in
 * fairseq (whose parser would not know them): --method etc. without --task
 * language_model_moe would silently train a plain language model. */
static gboolean check_option_scope(TrainOptions *o, GError **error)
{
  const gboolean mixture = strcmp(o->task, "language_model_moe") == 0;
  g_autofree char *task_flags = moelm_args_given_list(moelm_task_options_table(&o->task_opts));
  if (!mixture && task_flags) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG,
                "%s: only with --task language_model_moe (a sequence-level mixture); this run's task is %s", task_flags,
                o->task);
    return FALSE;
  }
  const gboolean moe = o->model.seen.moe_freq && o->model.moe_freq > 0;
  if (moe)
    return TRUE;
  g_autoptr(GString) moe_flags = g_string_new(NULL);
  for (const MoelmArgSpec *s = moelm_model_options_table(&o->model); s->name; s++)
    if ((g_str_has_prefix(s->name, "--moe-") || strcmp(s->name, "--use-moe-pad-mask") == 0) &&
        strcmp(s->name, "--moe-freq") != 0 && moelm_args_given(s->name))
      g_string_append_printf(moe_flags, "%s%s", moe_flags->len ? ", " : "", s->name);
  for (const char *const *name = (const char *const[]){"--moe-expert-parallel", "--moe-normalize-expert-grad", NULL};
       *name; name++)
    if (moelm_args_given(*name))
      g_string_append_printf(moe_flags, "%s%s", moe_flags->len ? ", " : "", *name);
  if (strcmp(o->criterion, "moe_cross_entropy") == 0)
    g_string_append_printf(moe_flags, "%s--criterion moe_cross_entropy", moe_flags->len ? ", " : "");
  if (moe_flags->len) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG,
                "%s: only for a model with token-level MoE layers (--moe-freq F --moe-expert-count E)", moe_flags->str);
    return FALSE;
  }
  return TRUE;
}

static gboolean build_config(TrainOptions *o, const char *data_dir, MoelmTrainConfig *c, GError **error)
{
  c->data_dir = g_strdup(data_dir);
  g_free(c->train_subset);
  c->train_subset = g_strdup(o->train_subset);
  g_free(c->valid_subset);
  c->valid_subset = g_strdup(o->valid_subset);
  g_free(c->save_dir);
  c->save_dir = g_strdup(o->save_dir);
  g_free(c->restore_file);
  c->restore_file = g_strdup(o->restore_file);
  c->finetune_from_model = g_strdup(o->finetune);
  if (o->tokens_per_sample < 1 || o->tokens_per_sample > MOELM_MODEL_MAX_POSITIONS) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG, "--tokens-per-sample must be in 1..%d, got %" G_GINT64_FORMAT,
                MOELM_MODEL_MAX_POSITIONS, o->tokens_per_sample);
    return FALSE;
  }
  c->tokens_per_sample = o->tokens_per_sample;
  if (!moelm_break_mode_parse(o->break_mode, &c->break_mode, error))
    return FALSE;
  c->max_tokens = o->max_tokens;
  c->batch_size = o->batch_size;
  c->max_tokens_valid = o->max_tokens_valid;
  c->batch_size_valid = o->batch_size_valid;
  c->required_multiple = o->required_multiple;
  c->skip_invalid = o->skip_invalid;
  if (o->seen.max_valid_steps && o->max_valid_steps < 1) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG, "--max-valid-steps must be at least 1, got %" G_GINT64_FORMAT,
                o->max_valid_steps);
    return FALSE;
  }
  c->max_valid_steps = o->max_valid_steps;
  c->update_freq = o->update_freq;
  c->max_update = o->max_update;
  c->max_epoch = o->max_epoch;
  c->seed = (uint64_t)o->seed;
  c->clip_norm = o->clip_norm;
  c->stop_min_lr = o->stop_min_lr;
  c->stop_time_hours = o->stop_time_hours;
  if (!moelm_optimizer_check_name(o->optimizer, error))
    return FALSE;
  c->adam.eps = o->adam_eps;
  c->adam.weight_decay = o->weight_decay;
  if (!moelm_parse_adam_betas(o->adam_betas, &c->adam.beta1, &c->adam.beta2, error) ||
      !moelm_adam_config_validate(&c->adam, error))
    return FALSE;
  c->lr.name = o->lr_scheduler;
  if (!moelm_parse_lr_list(o->lr, c->lr.lr, MOELM_LR_MAX, &c->lr.n_lr, error))
    return FALSE;
  /* the schedulers' own defaults apply where these two are not given */
  if (o->seen.warmup_updates && o->warmup_updates < 0) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG, "--warmup-updates must be >= 0, got %" G_GINT64_FORMAT,
                o->warmup_updates);
    return FALSE;
  }
  if (o->seen.total_num_update && !(o->total_num_update > 0)) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG,
                "--total-num-update must be > 0 (polynomial_decay decays over it), got %g", o->total_num_update);
    return FALSE;
  }
  c->lr.warmup_updates = o->warmup_updates;
  c->lr.warmup_init_lr = o->warmup_init_lr;
  c->lr.min_lr = o->min_lr;
  c->lr.lr_period_updates = o->lr_period_updates;
  c->lr.t_mult = o->t_mult;
  c->lr.lr_shrink = o->lr_shrink;
  c->lr.force_anneal = o->force_anneal;
  c->lr.end_learning_rate = o->end_lr;
  c->lr.power = o->power;
  c->lr.total_num_update = o->total_num_update;
  c->validate_interval = o->validate_interval;
  c->validate_interval_updates = o->validate_interval_updates;
  c->disable_validation = o->disable_validation;
  c->patience = o->patience;
  g_free(c->best_checkpoint_metric);
  c->best_checkpoint_metric = g_strdup(o->best_metric);
  c->maximize_best_metric = o->maximize_best_metric;
  c->save_interval = o->save_interval;
  c->save_interval_updates = o->save_interval_updates;
  c->keep_last_epochs = o->keep_last_epochs;
  c->keep_interval_updates = o->keep_interval_updates;
  c->keep_best_checkpoints = o->keep_best;
  c->no_save = o->no_save;
  c->no_epoch_checkpoints = o->no_epoch_checkpoints;
  c->no_last_checkpoints = o->no_last_checkpoints;
  c->no_save_optimizer_state = o->no_save_optimizer_state;
  c->reset_optimizer = o->reset_optimizer;
  c->reset_lr_scheduler = o->reset_lr_scheduler;
  c->reset_dataloader = o->reset_dataloader;
  c->reset_meters = o->reset_meters;
  c->log_interval = o->log_interval;
  c->log_json = strcmp(o->log_format, "json") == 0;
  g_free(c->tensorboard_logdir);
  c->tensorboard_logdir = g_strdup(o->tensorboard_logdir);
  /* fairseq's progress bars: tqdm shows the statistics on its bar (no train_inner lines) and
   * falls back to simple when stderr is not a terminal; none prints no statistics at all.
   * moelm also shows its progress line (rate, ETA) under simple and json: rewritten in place
   * on a terminal, a plain line every 30 s otherwise. */
  const gboolean tty = isatty(STDERR_FILENO);
  const gboolean tqdm = strcmp(o->log_format, "tqdm") == 0 && tty && !o->no_progress_bar;
  c->progress_bar = !o->no_progress_bar && strcmp(o->log_format, "none") != 0; /* plain lines off a terminal */
  if (strcmp(o->log_format, "none") == 0)
    moelm_log_mute((const char *const[]){"train_inner", "train", "valid", NULL});
  else if (tqdm)
    moelm_log_mute((const char *const[]){"train_inner", NULL});
  if (!moelm_backend_options_apply(&o->backend, &c->backend, error))
    return FALSE;
  if (o->world_size >= 0 && o->world_size != moelm_comm_size(c->comm)) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG,
                "--distributed-world-size %d, but %d process%s started (launch with mpirun -np %d or srun)",
                o->world_size, moelm_comm_size(c->comm), moelm_comm_size(c->comm) == 1 ? " was" : "es were",
                o->world_size);
    return FALSE;
  }
  if (!(o->bucket_cap_mb > 0)) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG, "--bucket-cap-mb %g: must be > 0", o->bucket_cap_mb);
    return FALSE;
  }
  c->bucket_cap_mb = o->bucket_cap_mb;
  c->expert_parallel = o->expert_parallel;
  c->checkpoint_activations = o->checkpoint_activations;
  c->expert_grad_sqrt = strcmp(o->normalize_expert_grad, "sqrt_world_size") == 0;
  if (c->expert_parallel && moelm_comm_size(c->comm) > 1 && o->model.moe_freq <= 0) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG,
                "--moe-expert-parallel needs token-level MoE layers (--moe-freq and --moe-expert-count)");
    return FALSE;
  }
  if (moelm_comm_rank(c->comm) > 0)
    c->progress_bar = FALSE; /* only rank 0 shows progress */
  if (c->backend.precision == MOELM_PRECISION_FP16) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_UNSUPPORTED,
                "--fp16: training with fp16 activations needs the dynamic loss scaler, which comes with the CUDA "
                "backend; use --bf16 or --fp32 (eval-lm and generate take --fp16)");
    return FALSE;
  }
  if (!moelm_model_options_apply(&o->model, (int)o->tokens_per_sample, &c->model, error))
    return FALSE;
  if (c->tokens_per_sample > c->model.max_positions) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG,
                "--tokens-per-sample %" G_GINT64_FORMAT " exceeds --max-target-positions %d", c->tokens_per_sample,
                c->model.max_positions);
    return FALSE;
  }
  return TRUE;
}

/* SIGINT / SIGTERM (a cluster's preemption): the first asks the trainer to stop after the
 * update in progress and save checkpoint_last.pt; a second ends the process at once. The
 * exit status is 128 + the signal (130, 143), as a shell reports a process the signal
 * killed. Only async-signal-safe calls here. */
static volatile sig_atomic_t stop_signal;

static void on_stop_signal(int sig)
{
  /* One atomic exchange: the two signals may be handled at the same moment by two threads
   * (the handler's mask only holds in the thread that runs it), and then exactly one of them
   * must see the other's. */
  if (__atomic_exchange_n(&stop_signal, (sig_atomic_t)sig, __ATOMIC_SEQ_CST) != 0) {
    static const char msg[] = "moelm train: second signal: exiting at once, without saving\n";
    if (write(STDERR_FILENO, msg, sizeof msg - 1) < 0) {
      /* nothing more can be done in a handler */
    }
    _exit(128 + sig);
  }
}

static void install_stop_handlers(void)
{
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask); /* one handler at a time: a second signal waits for the first */
  sigaddset(&sa.sa_mask, SIGINT);
  sigaddset(&sa.sa_mask, SIGTERM);
  sa.sa_flags = SA_RESTART; /* the trainer polls the flag; system calls just go on */
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
}

int moelm_cmd_train(int argc, char **argv)
{
  TrainOptions o;
  options_init(&o);
  const MoelmArgSpec *tables[] = {train_table(&o), moelm_backend_options_table(&o.backend),
                                  moelm_model_options_table(&o.model),
                                  moelm_task_options_table(&o.task_opts), moelm_ignored_options, NULL};
  GPtrArray *pos = g_ptr_array_new();
  gboolean help = FALSE;
  GError *error = NULL;
  int rc = 0;
  MoelmTrainConfig cfg;
  moelm_train_config_init(&cfg);
  MoelmTrainTask *task = NULL;
  gboolean interrupted = FALSE;
  /* join the process group first (MPI wants to start before any thread) */
  MoelmComm *comm = moelm_comm_open(&error);
  if (comm == NULL) {
    rc = moelm_cli_fail("train", error, 1);
    goto out;
  }
  cfg.comm = comm;
  if (moelm_comm_rank(comm) > 0)
    moelm_log_set_level(MOELM_LOG_ERROR); /* rank 0 writes the log */
  if (!moelm_args_parse("moelm train", tables, argc, argv, 1, pos, &help, &error)) {
    rc = moelm_cli_fail("train", error, 2);
    goto out;
  }
  if (help) {
    moelm_args_print_help(stdout, "moelm train", "DATA [options]", tables);
    goto out;
  }
  if (pos->len != 1) {
    error = g_error_new(MOELM_ERROR, MOELM_ERROR_INVALID_ARG, "expected exactly one DATA directory, got %u", pos->len);
    rc = moelm_cli_fail("train", error, 2);
    goto out;
  }
  if (!check_option_scope(&o, &error)) {
    rc = moelm_cli_fail("train", error, 2);
    goto out;
  }
  if (o.log_file && moelm_comm_rank(comm) == 0 && !moelm_log_open_file(o.log_file, &error)) {
    rc = moelm_cli_fail("train", error, 1);
    goto out;
  }
  const char *data = g_ptr_array_index(pos, 0);
  task = moelm_train_task_open(o.task, &o.task_opts, data, &error);
  if (task == NULL || !build_config(&o, data, &cfg, &error) || !moelm_train_task_configure(task, &cfg, &error)) {
    rc = moelm_cli_fail("train", error, 1);
    goto out;
  }
  MoelmTrainResult result;
  cfg.stop_signal = &stop_signal;
  install_stop_handlers();
  if (!moelm_train(&cfg, moelm_train_task_dictionary(task), moelm_train_task_objective(task), &result, &error)) {
    rc = moelm_cli_fail("train", error, stop_signal ? 128 + stop_signal : 1);
    goto out;
  }
  if (result.interrupted) {
    if (moelm_comm_rank(comm) == 0)
      fprintf(stderr, "moelm train: interrupted by %s after update %" G_GINT64_FORMAT "%s\n",
              result.interrupted == SIGINT ? "SIGINT" : "SIGTERM", result.num_updates,
              result.saved_on_interrupt ? ": resume with the same command" : "");
    rc = 128 + result.interrupted;
    interrupted = TRUE; /* every rank stopped at the same update: nobody waits for another */
  }
out:
  if (rc != 0 && !interrupted && moelm_comm_size(comm) > 1) /* the other ranks must not wait for this one */
    moelm_comm_abort(comm, rc);
  moelm_comm_free(comm);
  moelm_log_close_file();
  moelm_log_mute(NULL);
  g_clear_error(&error);
  moelm_train_task_free(task);
  if (cfg.task_meta)
    json_node_unref(cfg.task_meta);
  moelm_train_config_clear(&cfg);
  moelm_args_free_strings(tables);
  moelm_model_options_clear(&o.model);
  moelm_task_options_clear(&o.task_opts);
  g_ptr_array_unref(pos);
  return rc;
}
