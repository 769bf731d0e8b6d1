/* moelm — option tables shared by several subcommands. */
#ifndef MOELM_CLI_COMMON_OPTIONS_H
#define MOELM_CLI_COMMON_OPTIONS_H

#include "args.h"
#include "moelm/gpt2_bpe.h"
#include "moelm/model_config.h"
#include "tasks/inference.h"

/* fairseq options that mean nothing to moelm (accepted with a warning). */
extern const MoelmArgSpec moelm_ignored_options[];

/* The model options (--arch, --decoder-*, dropout, ...), parsed into strings/values that
 * moelm_model_options_apply turns into a MoelmModelConfig. */
typedef struct {
  char *arch;
  int embed_dim, ffn_dim, layers, heads, max_positions, input_dim, output_dim;
  gboolean learned_pos, normalize_before, no_normalize_before, no_final_norm, no_scale_embedding, share_embed;
  char *activation;
  double dropout, attention_dropout, activation_dropout;
  char *adaptive_softmax_cutoff;
  gboolean no_token_positional_embeddings;
  /* token-level MoE (fairseq's MoE branch) */
  int moe_freq, moe_expert_count, moe_top_k, moe_expert_ffn_dim;
  gboolean moe_top1_expert, moe_gating_use_fp32, moe_normalize_gate_prob_before_dropping, moe_dropless;
  gboolean moe_batch_prioritized_routing, use_moe_pad_mask;
  char *moe_second_expert_policy, *moe_gate_loss_combine_method;
  double moe_capacity_factor, moe_eval_capacity_token_fraction, moe_gate_loss_wt;
  /* which of the numeric options were given (a value given is taken, and validated) */
  struct {
    gboolean embed_dim, ffn_dim, layers, heads, max_positions, input_dim, output_dim;
    gboolean dropout, attention_dropout, activation_dropout;
    gboolean moe_freq, moe_expert_count, moe_top_k, moe_expert_ffn_dim;
    gboolean moe_capacity_factor, moe_eval_capacity_token_fraction, moe_gate_loss_wt;
  } seen;
} MoelmModelOptions;

void moelm_model_options_init(MoelmModelOptions *o);
/* A table bound to `o` (static storage: one at a time). */
const MoelmArgSpec *moelm_model_options_table(MoelmModelOptions *o);
/* arch defaults, then every option that was given. vocab_size is the caller's. */
gboolean moelm_model_options_apply(const MoelmModelOptions *o, int max_positions_default, MoelmModelConfig *cfg,
                                   GError **error);
void moelm_model_options_clear(MoelmModelOptions *o);

/* fairseq's task flags as eval-lm and generate accept them (--task and the flags of
 * language_model_moe): the checkpoint already fixes them, so they are only checked against it
 * (moelm_inference_check_task). */
typedef struct {
  char *task, *method;
  int num_experts, gating_encoder_dim, gating_context;
  gboolean mean_pool_gating;
  double gating_dropout; /* accepted, unused: no dropout at inference */
} MoelmTaskFlagOptions;

void moelm_task_flag_options_init(MoelmTaskFlagOptions *o);
/* A table bound to `o` (static storage: one at a time). */
const MoelmArgSpec *moelm_task_flag_options_table(MoelmTaskFlagOptions *o);
MoelmTaskFlags moelm_task_flag_options_get(const MoelmTaskFlagOptions *o);

/* fairseq's --bpe with GPT2BPEConfig's --gpt2-encoder-json/--gpt2-vocab-bpe (eval-lm, score). */
typedef struct {
  char *bpe, *encoder_json, *vocab_bpe;
} MoelmBpeOptions;

/* A table bound to `o` (static storage: one at a time); with_bpe: include --bpe itself. */
const MoelmArgSpec *moelm_bpe_options_table(MoelmBpeOptions *o, gboolean with_bpe);
/* --bpe gpt2: load the two files into *gpt2 (NULL without --bpe gpt2). The files without
 * --bpe gpt2, or --bpe gpt2 without them, are errors; other --bpe names are left to the caller. */
gboolean moelm_bpe_options_load(const MoelmBpeOptions *o, MoelmGpt2Bpe **gpt2, GError **error);

/* --moefy-top-k K (eval-lm, generate, score): the experts a moefied checkpoint computes per
 * token (docs/moefy.md). */
typedef struct {
  int top_k;
  gboolean seen;
} MoelmMoefyTopKOption;

/* A table bound to `o` (static storage: one at a time). */
const MoelmArgSpec *moelm_moefy_top_k_table(MoelmMoefyTopKOption *o);

/* How eval-lm, generate and score load a checkpoint: fairseq's --model-overrides (a Python
 * dict of model options, tasks/model_overrides.h) and --is-moe (accepted: moelm reads from
 * the checkpoint whether it has MoE layers). The string is freed with the tables. */
typedef struct {
  char *model_overrides;
  gboolean is_moe;
} MoelmCheckpointOptions;

const MoelmArgSpec *moelm_checkpoint_options_table(MoelmCheckpointOptions *o);
/* Apply it to `model`; *line (g_free) says what a moefied model computes, for the log (NULL
 * for a model that is not moefied). The flag on a model that is not moefied, or K outside
 * 1..E, is an error. */
gboolean moelm_moefy_top_k_apply(const MoelmMoefyTopKOption *o, MoelmModel *model, char **line, GError **error);

/* --threads N (moelm): CPU threads; 0 = all cores. */
int moelm_cli_threads_default(void);

/* Where the work runs, fairseq's flags: --cpu, --device-id N, --fp32/--bf16/--fp16, and
 * moelm's --threads N, --cpu-reference. */
typedef struct {
  gboolean cpu, fp32, bf16, fp16, reference, amp;
  int device_id, threads, fail_after_ops;
} MoelmBackendOptions;

void moelm_backend_options_init(MoelmBackendOptions *o);
/* A table bound to `o` (static storage: one at a time). */
const MoelmArgSpec *moelm_backend_options_table(MoelmBackendOptions *o);
/* The backend spec the flags ask for; contradictory flags are an error naming them. */
gboolean moelm_backend_options_apply(const MoelmBackendOptions *o, MoelmBackendSpec *spec, GError **error);

#endif
