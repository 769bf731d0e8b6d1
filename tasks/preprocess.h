/* moelm — fairseq-preprocess for language modelling (--only-source): build or load the
 * dictionary, binarize the train, valid and test splits into fairseq's mmap format, write
 * preprocess.log as fairseq does. The command line is cli/preprocess*.c; the engine's
 * internals are tasks/preprocess_engine.h. docs/preprocess.md has the details. */
#ifndef MOELM_TASKS_PREPROCESS_H
#define MOELM_TASKS_PREPROCESS_H

#include <glib.h>

G_BEGIN_DECLS

typedef struct {
  gboolean only_source, joined_dictionary, dict_only;
  char *source_lang, *target_lang; /* NULL when not given */
  char *trainpref, *validpref, *testpref; /* validpref/testpref: comma-separated lists */
  char *destdir;
  char *srcdict, *tgtdict;
  int nwordssrc, nwordstgt, thresholdsrc, thresholdtgt, padding_factor, workers;
  char *dataset_impl;
  char *bpe;                  /* "sentencepiece" encodes; fairseq's other names are no-ops */
  char *sentencepiece_model;  /* moelm's extension */
  gboolean sentencepiece_keep_whitespace; /* moelm's: train a model that keeps runs of spaces */
  char *task;
  char *align_suffix, *alignfile; /* accepted, no effect */
  gboolean spm;                   /* --bpe sentencepiece */
  gboolean gpt2;                  /* --bpe gpt2: encode with GPT-2's BPE (fairseq's encoder script) */
  char *gpt2_encoder_json, *gpt2_vocab_bpe; /* its files */
  char *namespace_line;           /* "Namespace(...)": the first line logged, as fairseq's */
} MoelmPreprocessConfig;

void moelm_preprocess_config_clear(MoelmPreprocessConfig *cfg);

/* Run the whole job. Nothing is half-written: every check that can fail on the inputs runs
 * before anything is created; the outputs are written into a temporary directory inside
 * DESTDIR and renamed into place only when all of them are complete (dict.txt last); any
 * error removes the temporaries (and DESTDIR itself when this run created it). */
gboolean moelm_preprocess_run(const MoelmPreprocessConfig *cfg, GError **error);

G_END_DECLS

#endif
