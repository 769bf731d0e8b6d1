/* libFuzzer harness: checkpoint metadata. The input is up to three JSON texts separated by
 * NUL bytes — the "model" config, the "task" metadata, the "train_state" — put into a valid
 * safetensors checkpoint whose tensors are those of a fixed small MoE model (an absent or
 * empty part is the fixed model's own, valid, text: "\0{task}" changes only the task). The harness then does what eval-lm, generate and
 * a resumed training do with a checkpoint: open it (config against the tensors), read the task
 * and the train state, build a model of the config and load the weights. Accepted input must
 * leave a model no larger than the tensors in the file and a config that round-trips. */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include <glib.h>

#include "fuzz.h"
#include "moelm/checkpoint.h"
#include "moelm/json.h"
#include "moelm/model.h"
#include "tasks/task_meta.h"
#include "tasks/train_checkpoints.h"

#define FIXED_DICT 8   /* symbols of the data-bin's dict.txt */
#define FIXED_EXPERTS 2 /* the mixture's K: vocab = FIXED_DICT + K */

typedef struct {
  MoelmBackend *be;
  MoelmModel *model;  /* the fixed model: its tensors make the file */
  GString *tensors;   /* the header's tensor entries, from the first one to the closing brace */
  gsize data_len;     /* of the data section: zeros, one float per parameter */
  char *model_text;   /* its config, as a checkpoint holds it */
} Fixed;

static const char fixed_task[] = "{\"task\":\"language_model_moe\",\"tokens_per_sample\":8,\"sample_break_mode\":"
                                 "\"none\",\"method\":\"hMoEup\",\"num_experts\":2,\"gating_context\":4,"
                                 "\"expert_token0\":8}";
static const char fixed_train_state[] = "{\"epoch\":2,\"iterations_in_epoch\":3,\"num_updates\":10,\"end_of_epoch\":"
                                        "false,\"best_loss\":3.5,\"num_bad_validations\":0,\"seed\":1,"
                                        "\"last_valid_loss\":3.5}";

static const Fixed *fixed(void)
{
  static Fixed f;
  if (f.model)
    return &f;
  MoelmModelConfig c;
  memset(&c, 0, sizeof c);
  c.max_positions = 8;
  if (!moelm_model_config_set_arch(&c, "transformer_lm", NULL))
    abort();
  c.vocab_size = FIXED_DICT + FIXED_EXPERTS;
  c.embed_dim = c.ffn_dim = 4;
  c.layers = c.heads = 2;
  c.dropout = 0;
  c.moe_freq = 2; /* layer 0 dense, layer 1 MoE with 2 experts */
  c.moe_experts = 2;
  f.be = moelm_backend_cpu_new(TRUE, 1, NULL);
  f.model = f.be ? moelm_model_new(&c, f.be, NULL) : NULL;
  if (f.model == NULL)
    abort();
  /* The tensor entries are the same for every input: written once, by hand (the writer's
   * JSON builder per input would take most of the time). */
  f.tensors = g_string_new(NULL);
  for (guint i = 0; i < moelm_model_n_tensors(f.model); i++) {
    const MoelmParam *p = moelm_model_tensor(f.model, i);
    g_string_append_printf(f.tensors, ",\"%s\":{\"dtype\":\"F32\",\"shape\":[%" G_GINT64_FORMAT, p->name, p->shape[0]);
    if (p->ndim == 2)
      g_string_append_printf(f.tensors, ",%" G_GINT64_FORMAT, p->shape[1]);
    g_string_append_printf(f.tensors, "],\"data_offsets\":[%zu,%zu]}", p->offset * sizeof(float),
                           (p->offset + p->numel) * sizeof(float));
  }
  g_string_append_c(f.tensors, '}');
  f.data_len = moelm_model_num_params(f.model) * sizeof(float);
  JsonNode *node = moelm_model_config_to_json(&c);
  f.model_text = moelm_json_to_string(node);
  json_node_unref(node);
  moelm_model_config_clear(&c);
  return &f;
}

/* A metadata value as a JSON string. */
static void append_string(GString *out, const char *s)
{
  g_string_append_c(out, '"');
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    if (*p == '"' || *p == '\\')
      g_string_append_c(out, '\\');
    if (*p < 0x20)
      g_string_append_printf(out, "\\u%04x", *p);
    else
      g_string_append_c(out, (char)*p);
  }
  g_string_append_c(out, '"');
}

/* The checkpoint file for the three texts (NULL: the fixed one). */
static GBytes *build(const char *model, const char *task, const char *train_state)
{
  const Fixed *f = fixed();
  GString *head = g_string_new("{\"__metadata__\":{\"format\":\"" MOELM_CHECKPOINT_FORMAT "\",\"model\":");
  append_string(head, model ? model : f->model_text);
  g_string_append(head, ",\"task\":");
  append_string(head, task ? task : fixed_task);
  g_string_append(head, ",\"train_state\":");
  append_string(head, train_state ? train_state : fixed_train_state);
  g_string_append_c(head, '}');
  g_string_append_len(head, f->tensors->str, (gssize)f->tensors->len);
  while (head->len % 8 != 0)
    g_string_append_c(head, ' ');
  const guint64 hlen = head->len;
  GByteArray *file = g_byte_array_sized_new((guint)(8 + hlen + f->data_len));
  for (int i = 0; i < 8; i++) {
    const guint8 b = (guint8)(hlen >> (8 * i));
    g_byte_array_append(file, &b, 1);
  }
  g_byte_array_append(file, (const guint8 *)head->str, (guint)hlen);
  g_byte_array_set_size(file, (guint)(8 + hlen + f->data_len));
  memset(file->data + 8 + hlen, 0, f->data_len);
  g_string_free(head, TRUE);
  return g_byte_array_free_to_bytes(file);
}

/* Part i of the input (valid UTF-8, as a safetensors header must be); NULL when it is
 * absent or empty: the fixed text. */
static char *part(const uint8_t *data, size_t size, int i)
{
  size_t start = 0;
  for (int k = 0; k < i; k++) {
    const uint8_t *nul = memchr(data + start, 0, size - start);
    if (nul == NULL)
      return NULL;
    start = (size_t)(nul - data) + 1;
  }
  const uint8_t *nul = memchr(data + start, 0, size - start);
  const size_t end = nul ? (size_t)(nul - data) : size;
  return end > start ? g_utf8_make_valid((const char *)data + start, (gssize)(end - start)) : NULL;
}

gboolean moelm_fuzz_checkpoint_read(const uint8_t *data, size_t size, GError **error)
{
  char *texts[3];
  for (int i = 0; i < 3; i++)
    texts[i] = part(data, size, i);
  GBytes *file = build(texts[0], texts[1], texts[2]);
  gsize len = 0;
  const void *bytes = g_bytes_get_data(file, &len);
  MoelmCheckpoint *ckpt = moelm_checkpoint_open_bytes(bytes, len, "fuzz.pt", error);
  MoelmTaskMeta task;
  moelm_task_meta_init(&task);
  MoelmTrainState st;
  MoelmModel *model = NULL;
  gboolean ok = ckpt != NULL;
  if (ok) {
    moelm_task_meta_clear(&task);
    ok = moelm_task_meta_from_json(&task, moelm_checkpoint_meta(ckpt, "task"), error) &&
         moelm_task_meta_check_model(&task, &ckpt->model, FIXED_DICT, error) &&
         moelm_trainer_read_train_state(ckpt, &st, error);
  }
  if (ok) {
    model = moelm_model_new(&ckpt->model, fixed()->be, error);
    ok = model != NULL && moelm_checkpoint_load_params(ckpt, model, error);
  }
  if (ok) {
    /* the model is no larger than the file; the config reads back as it was written */
    if (moelm_model_num_params(model) > moelm_model_num_params(fixed()->model))
      abort();
    if (task.mixture && task.mix.expert_token0 + task.mix.num_experts != ckpt->model.vocab_size)
      abort();
    if (st.epoch < 1 || st.num_updates < 0 || st.iterations_in_epoch < 0)
      abort();
    JsonNode *a = moelm_model_config_to_json(&ckpt->model);
    MoelmModelConfig again;
    if (!moelm_model_config_from_json(&again, a, NULL))
      abort();
    JsonNode *b = moelm_model_config_to_json(&again);
    char *ta = moelm_json_to_string(a), *tb = moelm_json_to_string(b);
    if (strcmp(ta, tb) != 0)
      abort();
    g_free(ta);
    g_free(tb);
    json_node_unref(a);
    json_node_unref(b);
    moelm_model_config_clear(&again);
  }
  moelm_model_free(model);
  moelm_task_meta_clear(&task);
  moelm_checkpoint_close(ckpt);
  g_bytes_unref(file);
  for (int i = 0; i < 3; i++)
    g_free(texts[i]);
  return ok;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  GError *error = NULL;
  if (!moelm_fuzz_checkpoint_read(data, size, &error)) {
    MOELM_FUZZ_CHECK_ERROR(error);
    g_error_free(error);
  }
  return 0;
}
