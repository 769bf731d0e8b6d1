/* moelm — shared option tables: fairseq options with no meaning here, and the model options. */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "common_options.h"
#include "tasks/moefy.h"
#include "moelm/errors.h"

const MoelmArgSpec moelm_ignored_options[] = {
  {"--user-dir", NULL, MOELM_ARG_IGNORED, NULL, NULL, NULL, NULL},
  {"--ddp-backend", NULL, MOELM_ARG_IGNORED, NULL, NULL, NULL, NULL},
  {"--num-workers", NULL, MOELM_ARG_IGNORED, NULL, NULL, NULL, NULL},
  {"--tensorboard-logdir", NULL, MOELM_ARG_IGNORED, NULL, NULL, NULL, NULL},
  {"--wandb-project", NULL, MOELM_ARG_IGNORED, NULL, NULL, NULL, NULL},
  {"--fp16-init-scale", NULL, MOELM_ARG_IGNORED, NULL, NULL, NULL, NULL},
  {"--fp16-scale-window", NULL, MOELM_ARG_IGNORED, NULL, NULL, NULL, NULL},
  {"--distributed-port", NULL, MOELM_ARG_IGNORED, NULL, NULL, NULL, NULL},
  {"--dataset-impl", NULL, MOELM_ARG_IGNORED, NULL, NULL, NULL, NULL},
  {"--best-checkpoint-metric", NULL, MOELM_ARG_IGNORED, NULL, NULL, NULL, NULL},
  {"--memory-efficient-fp16", NULL, MOELM_ARG_IGNORED_FLAG, NULL, NULL, NULL, NULL},
  {"--fp16-no-flatten-grads", NULL, MOELM_ARG_IGNORED_FLAG, NULL, NULL, NULL, NULL},
  {"--amp-batch-retries", NULL, MOELM_ARG_IGNORED, NULL, NULL, NULL, NULL},
  {"--amp-init-scale", NULL, MOELM_ARG_IGNORED, NULL, NULL, NULL, NULL},
  {"--amp-scale-window", NULL, MOELM_ARG_IGNORED, NULL, NULL, NULL, NULL},
  {"--no-progress-bar", NULL, MOELM_ARG_IGNORED_FLAG, NULL, NULL, NULL, NULL},
  {"--quiet", NULL, MOELM_ARG_IGNORED_FLAG, NULL, NULL, NULL, NULL},
  {NULL, NULL, 0, NULL, NULL, NULL, NULL},
};

void moelm_model_options_init(MoelmModelOptions *o)
{
  memset(o, 0, sizeof *o);
  o->arch = g_strdup("transformer_lm"); /* the numbers count only when given (o->seen) */
}

void moelm_model_options_clear(MoelmModelOptions *o)
{
  g_free(o->arch);
  g_free(o->activation);
  g_free(o->adaptive_softmax_cutoff);
  g_free(o->moe_second_expert_policy);
  g_free(o->moe_gate_loss_combine_method);
  memset(o, 0, sizeof *o);
}

const MoelmArgSpec *moelm_model_options_table(MoelmModelOptions *o)
{
  static MoelmArgSpec t[48];
  const MoelmArgSpec spec[] = {
    {"--arch", "-a", MOELM_ARG_STRING, &o->arch, NULL, "model architecture (transformer_lm, transformer_lm_gpt, ...)", NULL},
    {"--decoder-embed-dim", NULL, MOELM_ARG_INT, &o->embed_dim, NULL, "decoder embedding dimension", &o->seen.embed_dim},
    {"--decoder-ffn-embed-dim", NULL, MOELM_ARG_INT, &o->ffn_dim, NULL, "decoder FFN dimension", &o->seen.ffn_dim},
    {"--decoder-layers", NULL, MOELM_ARG_INT, &o->layers, NULL, "number of decoder layers", &o->seen.layers},
    {"--decoder-attention-heads", NULL, MOELM_ARG_INT, &o->heads, NULL, "number of attention heads", &o->seen.heads},
    {"--decoder-input-dim", NULL, MOELM_ARG_INT, &o->input_dim, NULL, "must equal --decoder-embed-dim", &o->seen.input_dim},
    {"--decoder-output-dim", NULL, MOELM_ARG_INT, &o->output_dim, NULL, "must equal --decoder-embed-dim", &o->seen.output_dim},
    {"--max-target-positions", NULL, MOELM_ARG_INT, &o->max_positions, NULL, "positions (default: --tokens-per-sample)", &o->seen.max_positions},
    {"--decoder-learned-pos", NULL, MOELM_ARG_FLAG, &o->learned_pos, NULL, "learned positional embeddings", NULL},
    {"--decoder-normalize-before", NULL, MOELM_ARG_FLAG, &o->normalize_before, NULL, "pre-norm (the default for every LM arch)", NULL},
    {"--no-decoder-normalize-before", NULL, MOELM_ARG_FLAG, &o->no_normalize_before, NULL, "post-norm (moelm extension)", NULL},
    {"--no-decoder-final-norm", NULL, MOELM_ARG_FLAG, &o->no_final_norm, NULL, "no final layer norm", NULL},
    {"--no-scale-embedding", NULL, MOELM_ARG_FLAG, &o->no_scale_embedding, NULL, "do not scale embeddings by sqrt(d)", NULL},
    {"--share-decoder-input-output-embed", NULL, MOELM_ARG_FLAG, &o->share_embed, NULL, "tie input and output embeddings", NULL},
    {"--activation-fn", NULL, MOELM_ARG_CHOICE, &o->activation, "relu|gelu|gelu_accurate|tanh", "FFN activation", NULL},
    {"--dropout", NULL, MOELM_ARG_DOUBLE, &o->dropout, NULL, "dropout probability", &o->seen.dropout},
    {"--attention-dropout", NULL, MOELM_ARG_DOUBLE, &o->attention_dropout, NULL, "attention dropout", &o->seen.attention_dropout},
    {"--activation-dropout", "--relu-dropout", MOELM_ARG_DOUBLE, &o->activation_dropout, NULL, "dropout after the activation", &o->seen.activation_dropout},
    {"--adaptive-softmax-cutoff", NULL, MOELM_ARG_STRING, &o->adaptive_softmax_cutoff, NULL, "not supported", NULL},
    {"--no-token-positional-embeddings", NULL, MOELM_ARG_FLAG, &o->no_token_positional_embeddings, NULL, "not supported", NULL},
    {"--moe-freq", NULL, MOELM_ARG_INT, &o->moe_freq, NULL, "layer i is an MoE layer when (i+1) % F == 0 (0: none)", &o->seen.moe_freq},
    {"--moe-expert-count", "--moe-num-experts", MOELM_ARG_INT, &o->moe_expert_count, NULL, "experts per MoE layer", &o->seen.moe_expert_count},
    {"--moe-top1-expert", NULL, MOELM_ARG_FLAG, &o->moe_top1_expert, NULL, "top-1 gating (default: top-2)", NULL},
    {"--moe-top-k", NULL, MOELM_ARG_INT, &o->moe_top_k, NULL, "experts per token: 1 or 2 (2)", &o->seen.moe_top_k},
    {"--moe-gating-use-fp32", NULL, MOELM_ARG_FLAG, &o->moe_gating_use_fp32, NULL, "gate in fp32 (always on the CPU)", NULL},
    {"--moe-second-expert-policy", NULL, MOELM_ARG_CHOICE, &o->moe_second_expert_policy, "sampling|all|random", "top-2's second expert (sampling)", NULL},
    {"--moe-normalize-gate-prob-before-dropping", NULL, MOELM_ARG_FLAG, &o->moe_normalize_gate_prob_before_dropping, NULL, "normalise the top-2 gate values before capacity drops", NULL},
    {"--moe-capacity-factor", "--capacity-factor", MOELM_ARG_DOUBLE, &o->moe_capacity_factor, NULL, "training capacity factor (1.0)", &o->seen.moe_capacity_factor},
    {"--moe-dropless", NULL, MOELM_ARG_FLAG, &o->moe_dropless, NULL, "no capacity: never drop a token (MegaBlocks-style)", NULL},
    {"--moe-eval-capacity-token-fraction", NULL, MOELM_ARG_DOUBLE, &o->moe_eval_capacity_token_fraction, NULL, "eval capacity = fraction of the tokens (default: dropless)", &o->seen.moe_eval_capacity_token_fraction},
    {"--moe-batch-prioritized-routing", NULL, MOELM_ARG_FLAG, &o->moe_batch_prioritized_routing, NULL, "assign capacity by decreasing top-1 gate", NULL},
    {"--use-moe-pad-mask", NULL, MOELM_ARG_FLAG, &o->use_moe_pad_mask, NULL, "do not route padding tokens", NULL},
    {"--moe-gate-loss-wt", NULL, MOELM_ARG_DOUBLE, &o->moe_gate_loss_wt, NULL, "weight of the balance loss (0.01)", &o->seen.moe_gate_loss_wt},
    {"--moe-gate-loss-combine-method", NULL, MOELM_ARG_CHOICE, &o->moe_gate_loss_combine_method, "sum|average", "combine the layers' balance losses (average)", NULL},
    {"--moe-expert-ffn-dim", NULL, MOELM_ARG_INT, &o->moe_expert_ffn_dim, NULL, "experts' FFN dimension (default: --decoder-ffn-embed-dim)", &o->seen.moe_expert_ffn_dim},
    {NULL, NULL, 0, NULL, NULL, NULL, NULL},
  };
  memcpy(t, spec, sizeof spec);
  return t;
}

/* The --moe-* options that were given, over the defaults moelm_model_config_set_arch put in
 * cfg. A value given is a value taken: the whole config's validation rejects bad ones. */
static gboolean apply_moe(const MoelmModelOptions *o, MoelmModelConfig *cfg, GError **error)
{
  if (o->seen.moe_freq)
    cfg->moe_freq = o->moe_freq;
  if (o->seen.moe_expert_count)
    cfg->moe_experts = o->moe_expert_count;
  if (o->seen.moe_top_k)
    cfg->moe_top_k = o->moe_top_k;
  if (o->moe_top1_expert) {
    if (o->seen.moe_top_k && o->moe_top_k != 1) {
      g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG, "--moe-top1-expert contradicts --moe-top-k %d",
                  o->moe_top_k);
      return FALSE;
    }
    cfg->moe_top_k = 1;
  }
  if (o->seen.moe_expert_ffn_dim) {
    if (o->moe_expert_ffn_dim <= 0) {
      g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG, "--moe-expert-ffn-dim must be positive, got %d",
                  o->moe_expert_ffn_dim);
      return FALSE;
    }
    cfg->moe_expert_ffn_dim = o->moe_expert_ffn_dim;
  }
  if (o->moe_second_expert_policy &&
      !moelm_second_expert_policy_parse(o->moe_second_expert_policy, &cfg->moe_second_expert_policy, error))
    return FALSE;
  cfg->moe_gating_use_fp32 = o->moe_gating_use_fp32;
  cfg->moe_normalize_gate_prob_before_dropping = o->moe_normalize_gate_prob_before_dropping;
  cfg->moe_dropless = o->moe_dropless;
  cfg->moe_batch_prioritized_routing = o->moe_batch_prioritized_routing;
  cfg->moe_pad_mask = o->use_moe_pad_mask;
  if (o->seen.moe_capacity_factor)
    cfg->moe_capacity_factor = o->moe_capacity_factor;
  if (o->seen.moe_eval_capacity_token_fraction)
    cfg->moe_eval_capacity_token_fraction = o->moe_eval_capacity_token_fraction;
  if (o->seen.moe_gate_loss_wt)
    cfg->moe_gate_loss_wt = o->moe_gate_loss_wt;
  if (o->moe_gate_loss_combine_method)
    cfg->moe_gate_loss_sum = strcmp(o->moe_gate_loss_combine_method, "sum") == 0;
  if (cfg->moe_freq > 0 && !o->seen.moe_expert_count) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG, "--moe-freq %d needs --moe-expert-count", cfg->moe_freq);
    return FALSE;
  }
  return TRUE; /* the rest is checked with the whole config by moelm_model_config_validate */
}

gboolean moelm_model_options_apply(const MoelmModelOptions *o, int max_positions_default, MoelmModelConfig *cfg,
                                   GError **error)
{
  if (!moelm_model_config_set_arch(cfg, o->arch, error))
    return FALSE;
  cfg->max_positions = o->seen.max_positions ? o->max_positions : max_positions_default;
  if (o->adaptive_softmax_cutoff || o->no_token_positional_embeddings) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_UNSUPPORTED, "%s is not supported by moelm",
                o->adaptive_softmax_cutoff ? "--adaptive-softmax-cutoff" : "--no-token-positional-embeddings");
    return FALSE;
  }
  if (o->seen.embed_dim)
    cfg->embed_dim = o->embed_dim;
  if (o->seen.ffn_dim)
    cfg->ffn_dim = o->ffn_dim;
  if (o->seen.layers)
    cfg->layers = o->layers;
  if (o->seen.heads)
    cfg->heads = o->heads;
  if ((o->seen.input_dim && o->input_dim != cfg->embed_dim) || (o->seen.output_dim && o->output_dim != cfg->embed_dim)) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_UNSUPPORTED,
                "--decoder-input-dim/--decoder-output-dim must equal --decoder-embed-dim (%d)", cfg->embed_dim);
    return FALSE;
  }
  cfg->learned_pos = o->learned_pos;
  cfg->normalize_before = !o->no_normalize_before;
  cfg->final_norm = !o->no_final_norm;
  cfg->scale_embedding = !o->no_scale_embedding;
  cfg->share_embed = o->share_embed;
  if (o->activation && !moelm_activation_parse(o->activation, &cfg->activation, error))
    return FALSE;
  if (o->seen.dropout)
    cfg->dropout = o->dropout;
  if (o->seen.attention_dropout)
    cfg->attention_dropout = o->attention_dropout;
  if (o->seen.activation_dropout)
    cfg->activation_dropout = o->activation_dropout;
  return apply_moe(o, cfg, error);
}

void moelm_task_flag_options_init(MoelmTaskFlagOptions *o)
{
  memset(o, 0, sizeof *o);
  o->gating_context = -1;
}

const MoelmArgSpec *moelm_task_flag_options_table(MoelmTaskFlagOptions *o)
{
  static MoelmArgSpec t[8];
  const MoelmArgSpec spec[] = {
    {"--task", NULL, MOELM_ARG_CHOICE, &o->task, "language_modeling|language_model_moe",
     "task (default: the checkpoint's; another is an error)", NULL},
    {"--method", NULL, MOELM_ARG_CHOICE, &o->method, "hMoEup|hMoElp|sMoEup|sMoElp",
     "mixture: checked against the checkpoint", NULL},
    {"--num-experts", NULL, MOELM_ARG_INT, &o->num_experts, NULL, "mixture: checked against the checkpoint", NULL},
    {"--mean-pool-gating-network", NULL, MOELM_ARG_FLAG, &o->mean_pool_gating, NULL,
     "mixture: accepted (the checkpoint's --method decides)", NULL},
    {"--mean-pool-gating-network-encoder-dim", NULL, MOELM_ARG_INT, &o->gating_encoder_dim, NULL,
     "mixture: checked against a learned prior's embedding dim", NULL},
    {"--gating-context", NULL, MOELM_ARG_INT, &o->gating_context, NULL, "mixture: checked against the checkpoint",
     NULL},
    {"--mean-pool-gating-network-dropout", NULL, MOELM_ARG_DOUBLE, &o->gating_dropout, NULL,
     "mixture: accepted (no dropout at inference)", NULL},
    {NULL, NULL, 0, NULL, NULL, NULL, NULL},
  };
  memcpy(t, spec, sizeof spec);
  return t;
}

MoelmTaskFlags moelm_task_flag_options_get(const MoelmTaskFlagOptions *o)
{
  MoelmTaskFlags f = {o->task, o->method, o->num_experts, o->mean_pool_gating, o->gating_encoder_dim,
                      o->gating_context};
  return f;
}

int moelm_cli_threads_default(void)
{
  const char *env = g_getenv("MOELM_THREADS");
  return env ? atoi(env) : 0;
}

void moelm_backend_options_init(MoelmBackendOptions *o)
{
  memset(o, 0, sizeof *o);
  o->device_id = -1;
  o->threads = moelm_cli_threads_default();
}

const MoelmArgSpec *moelm_moefy_top_k_table(MoelmMoefyTopKOption *o)
{
  static MoelmArgSpec t[2];
  const MoelmArgSpec spec[] = {
    {"--moefy-top-k", NULL, MOELM_ARG_INT, &o->top_k, NULL,
     "moefied checkpoint: experts computed per token (default: the checkpoint's --top-k)", &o->seen},
    {NULL, NULL, 0, NULL, NULL, NULL, NULL},
  };
  memcpy(t, spec, sizeof spec);
  return t;
}

const MoelmArgSpec *moelm_checkpoint_options_table(MoelmCheckpointOptions *o)
{
  static MoelmArgSpec t[3];
  const MoelmArgSpec spec[] = {
    {"--model-overrides", NULL, MOELM_ARG_STRING, &o->model_overrides, NULL,
     "model options to change at load, a Python dict: \"{'moe_eval_capacity_token_fraction': 0.05}\"", NULL},
    {"--is-moe", NULL, MOELM_ARG_FLAG, &o->is_moe, NULL,
     "accepted: the checkpoint says whether the model has MoE layers", NULL},
    {NULL, NULL, 0, NULL, NULL, NULL, NULL},
  };
  memcpy(t, spec, sizeof spec);
  return t;
}

gboolean moelm_moefy_top_k_apply(const MoelmMoefyTopKOption *o, MoelmModel *model, char **line, GError **error)
{
  return moelm_moefy_inference_setup(model, o->seen ? o->top_k : -1, line, error);
}

const MoelmArgSpec *moelm_backend_options_table(MoelmBackendOptions *o)
{
  static MoelmArgSpec t[10];
  const MoelmArgSpec spec[] = {
    {"--cpu", NULL, MOELM_ARG_FLAG, &o->cpu, NULL, "run on the CPU (default: a GPU when built with CUDA and present)",
     NULL},
    {"--device-id", NULL, MOELM_ARG_INT, &o->device_id, NULL, "the GPU to run on (CUDA builds)", NULL},
    {"--threads", NULL, MOELM_ARG_INT, &o->threads, NULL, "CPU threads (default: all cores, or $MOELM_THREADS)",
     NULL},
    {"--fp32", NULL, MOELM_ARG_FLAG, &o->fp32, NULL, "fp32 activations (the CPU default)", NULL},
    {"--bf16", NULL, MOELM_ARG_FLAG, &o->bf16, NULL,
     "store activations in bfloat16 (the GPU default; on the CPU a slower variant that computes in fp32)", NULL},
    {"--fp16", NULL, MOELM_ARG_FLAG, &o->fp16, NULL, "store activations in float16", NULL},
    {"--amp", NULL, MOELM_ARG_FLAG, &o->amp, NULL,
     "mixed precision on the GPU: bf16 activations, fp32 weights (the CPU stays in fp32)", NULL},
    {"--cpu-reference", "--reference-backend", MOELM_ARG_FLAG, &o->reference, NULL,
     "the CPU reference loops (slow; for checking)", NULL},
    {"--inject-device-failure", NULL, MOELM_ARG_INT, &o->fail_after_ops, NULL,
     "testing: the N-th op fails as a device would", NULL},
    {NULL, NULL, 0, NULL, NULL, NULL, NULL},
  };
  memcpy(t, spec, sizeof spec);
  return t;
}

gboolean moelm_backend_options_apply(const MoelmBackendOptions *o, MoelmBackendSpec *spec, GError **error)
{
  moelm_backend_spec_init(spec);
  if ((o->fp32 ? 1 : 0) + (o->bf16 ? 1 : 0) + (o->fp16 ? 1 : 0) + (o->amp ? 1 : 0) > 1) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG, "--fp32, --bf16, --fp16 and --amp exclude each other");
    return FALSE;
  }
  if ((o->cpu || o->reference) && o->device_id >= 0) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG, "--device-id %d and --cpu exclude each other",
                o->device_id);
    return FALSE;
  }
  if (o->device_id < -1) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG, "--device-id %d: must be 0 or more", o->device_id);
    return FALSE;
  }
  if (o->threads < 0) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG, "--threads %d: must be 1 or more (0: all cores)",
                o->threads);
    return FALSE;
  }
  spec->kind = o->reference ? MOELM_BACKEND_CPU_REFERENCE
               : o->cpu     ? MOELM_BACKEND_CPU
               : o->device_id >= 0 ? MOELM_BACKEND_CUDA
                                   : MOELM_BACKEND_AUTO;
  spec->device_id = o->device_id;
  spec->threads = o->threads;
  spec->precision = o->fp32   ? MOELM_PRECISION_FP32
                    : o->bf16 ? MOELM_PRECISION_BF16
                    : o->fp16 ? MOELM_PRECISION_FP16
                              : MOELM_PRECISION_DEFAULT;
  spec->amp = o->amp; /* the device's default precision, named in the log */
  spec->fail_after_ops = o->fail_after_ops;
  return TRUE;
}

const MoelmArgSpec *moelm_bpe_options_table(MoelmBpeOptions *o, gboolean with_bpe)
{
  static MoelmArgSpec t[4];
  const MoelmArgSpec spec[] = {
    {"--bpe", NULL, MOELM_ARG_STRING, &o->bpe, NULL, "gpt2: the dictionary holds GPT-2 ids (text in and out)", NULL},
    {"--gpt2-encoder-json", NULL, MOELM_ARG_STRING, &o->encoder_json, NULL, "GPT-2's encoder.json (--bpe gpt2)", NULL},
    {"--gpt2-vocab-bpe", NULL, MOELM_ARG_STRING, &o->vocab_bpe, NULL, "GPT-2's vocab.bpe (--bpe gpt2)", NULL},
    {NULL, NULL, 0, NULL, NULL, NULL, NULL},
  };
  memcpy(t, with_bpe ? spec : spec + 1, sizeof spec - (with_bpe ? 0 : sizeof spec[0]));
  return t;
}

gboolean moelm_bpe_options_load(const MoelmBpeOptions *o, MoelmGpt2Bpe **gpt2, GError **error)
{
  *gpt2 = NULL;
  const gboolean want = g_strcmp0(o->bpe, "gpt2") == 0;
  if (!want && (o->encoder_json || o->vocab_bpe)) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG, "--gpt2-encoder-json/--gpt2-vocab-bpe need --bpe gpt2");
    return FALSE;
  }
  if (!want)
    return TRUE;
  if (!o->encoder_json || !o->vocab_bpe) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG,
                "--bpe gpt2 needs --gpt2-encoder-json and --gpt2-vocab-bpe (GPT-2's encoder.json and vocab.bpe; "
                "moelm ships them in data-bin/gpt2/)");
    return FALSE;
  }
  *gpt2 = moelm_gpt2_bpe_load(o->encoder_json, o->vocab_bpe, error);
  return *gpt2 != NULL;
}
