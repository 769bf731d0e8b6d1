/* moelm — `moelm convert --from fairseq`: a fairseq transformer_lm checkpoint (PyTorch's
 * torch.save format, read natively: moelm/torch_load.h) to a moelm checkpoint.
 *
 * Input: model.pt (dense, or an MoE saved whole), or NAME-shared.pt with its NAME-rank-R.pt
 * expert shards (R = 0, 1, ... while they exist), or a directory holding model.pt or
 * model-shared.pt. The model configuration comes from the checkpoint's cfg["model"] (a dict,
 * or an argparse.Namespace), else from the legacy args Namespace; the task's from cfg["task"]
 * (or args). Experts of rank file R, numbered 0..local-1 there, become experts R*local+j.
 *
 * Output: a moelm checkpoint (moelm/checkpoint.h) with the parameters under fairseq's names,
 * in the chosen dtype, metadata "model", "task" (language_modeling, tokens_per_sample,
 * sample_break_mode) and "dictionary" (the fingerprint of the dict.txt beside the checkpoint,
 * which eval-lm, generate and score check against DATA/dict.txt). Buffers
 * (decoder.version, embed_positions._float_tensor) and the tied output projection are
 * skipped; a tensor moelm's model does not have, or a fairseq option it does not implement,
 * is an error naming it. Written atomically: on any error nothing is written. */
#ifndef MOELM_TASKS_CONVERT_FAIRSEQ_H
#define MOELM_TASKS_CONVERT_FAIRSEQ_H

#include <glib.h>
#include <json-glib/json-glib.h>

#include "moelm/model_config.h"
#include "moelm/pickle.h"

G_BEGIN_DECLS

typedef enum {
  MOELM_CONVERT_DTYPE_KEEP, /* fp16 and bf16 stay, fp32/fp64 become fp32 */
  MOELM_CONVERT_DTYPE_FP32,
  MOELM_CONVERT_DTYPE_FP16,
  MOELM_CONVERT_DTYPE_BF16
} MoelmConvertDtype;

typedef struct {
  const char *path;      /* model.pt, NAME-shared.pt or a directory */
  const char *save;      /* the moelm checkpoint to write */
  const char *dict;      /* dict.txt; NULL: the one beside the checkpoint */
  MoelmConvertDtype dtype;
} MoelmConvertOptions;

/* What was converted, for the CLI's summary (free with moelm_convert_report_clear). */
typedef struct {
  char *fairseq_arch;    /* cfg.model._name / args.arch */
  MoelmModelConfig model;
  guint n_files;         /* checkpoint files read */
  guint n_tensors;       /* tensors written */
  guint64 n_params;
  guint n_skipped;       /* buffers and tied copies left out */
  GPtrArray *notes;      /* char*: decisions worth a line (defaults taken, values mapped) */
} MoelmConvertReport;

gboolean moelm_convert_fairseq(const MoelmConvertOptions *opt, MoelmConvertReport *report, GError **error);
void moelm_convert_report_clear(MoelmConvertReport *report);

gboolean moelm_convert_dtype_parse(const char *name, MoelmConvertDtype *out, GError **error);

/* The model configuration of a fairseq checkpoint's root object (cfg["model"] or args), for
 * `vocab_size` embedding rows; notes (char*) get the defaults and mappings applied. The task
 * metadata moelm writes is set in *task (a JSON object, json_object_unref). Errors are
 * prefixed with `name`. */
gboolean moelm_fairseq_model_config(const MoelmPyObj *root, int vocab_size, const char *name, MoelmModelConfig *cfg,
                                    char **fairseq_arch, JsonObject **task, GPtrArray *notes, GError **error);

G_END_DECLS

#endif
