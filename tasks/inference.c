/* moelm — a checkpoint and its data-bin, ready for scoring or generation. */
#include "config.h"

#include <string.h>

#include "inference.h"
#include "moelm/errors.h"

MoelmInference *moelm_inference_open(const char *ckpt_path, const char *data_dir, int threads, GError **error)
{
  if (strchr(ckpt_path, ':') != NULL && !g_file_test(ckpt_path, G_FILE_TEST_EXISTS)) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_UNSUPPORTED, "%s: model ensembles (--path a:b) are not supported",
                ckpt_path);
    return NULL;
  }
  MoelmInference *inf = g_new0(MoelmInference, 1);
  char *dict_path = g_build_filename(data_dir, "dict.txt", NULL);
  inf->ckpt = moelm_checkpoint_open(ckpt_path, error);
  if (inf->ckpt == NULL)
    goto fail;
  inf->dict = moelm_dictionary_load(dict_path, error);
  if (inf->dict == NULL || !moelm_checkpoint_check_dictionary(inf->ckpt, inf->dict, dict_path, error))
    goto fail;
  JsonNode *task = moelm_checkpoint_meta(inf->ckpt, "task");
  if (task && JSON_NODE_HOLDS_OBJECT(task))
    inf->task = json_node_get_object(task);
  inf->be = moelm_backend_cpu_new(FALSE, threads, error);
  if (inf->be == NULL)
    goto fail;
  inf->model = moelm_model_new(&inf->ckpt->model, inf->be, error);
  if (inf->model == NULL || !moelm_checkpoint_load_params(inf->ckpt, inf->model, error))
    goto fail;
  g_free(dict_path);
  return inf;
fail:
  g_free(dict_path);
  moelm_inference_free(inf);
  return NULL;
}

void moelm_inference_free(MoelmInference *inf)
{
  if (inf == NULL)
    return;
  moelm_model_free(inf->model);
  moelm_backend_free(inf->be);
  moelm_dictionary_free(inf->dict);
  moelm_checkpoint_close(inf->ckpt);
  g_free(inf);
}

gint64 moelm_inference_task_int(const MoelmInference *inf, const char *key, gint64 fallback)
{
  return inf->task ? json_object_get_int_member_with_default(inf->task, key, fallback) : fallback;
}

const char *moelm_inference_task_string(const MoelmInference *inf, const char *key, const char *fallback)
{
  return inf->task ? json_object_get_string_member_with_default(inf->task, key, fallback) : fallback;
}
