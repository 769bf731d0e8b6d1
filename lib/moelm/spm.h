/* moelm — SentencePiece behind a C header (the one C++ file is lib/tokenizer/spm.cc).
 * Pieces are what moelm puts in dict.txt; SentencePiece's own ids are never used as
 * token ids. Errors come back as GError naming the model file or the problem. */
#ifndef MOELM_SPM_H
#define MOELM_SPM_H

#include <glib.h>

G_BEGIN_DECLS

typedef struct MoelmSpm MoelmSpm;

MoelmSpm *moelm_spm_load(const char *model_path, GError **error);
void moelm_spm_free(MoelmSpm *spm);

/* Encode UTF-8 text into pieces: a GPtrArray of newly allocated strings (thread-safe for
 * concurrent callers on one MoelmSpm). */
GPtrArray *moelm_spm_encode_pieces(const MoelmSpm *spm, const char *text, gsize len, GError **error);
/* Encode into SentencePiece's own ids (for tests against spm_encode --output_format=id). */
GArray *moelm_spm_encode_ids(const MoelmSpm *spm, const char *text, gsize len, GError **error);
/* Decode pieces back to text (g_free). */
char *moelm_spm_decode_pieces(const MoelmSpm *spm, const char *const *pieces, gsize n, GError **error);
/* Number of pieces in the model's vocabulary (including its own control symbols). */
int moelm_spm_vocab_size(const MoelmSpm *spm);

/* Train a BPE model on a text file, writing MODEL_PREFIX.model (and .vocab). vocab_size is
 * an upper bound: a corpus that cannot support that many pieces gets fewer, not an error.
 * threads: training threads (>= 1). keep_whitespace: the model keeps leading, trailing and
 * repeated spaces, a run of them becoming pieces of its own (SentencePiece's
 * remove_extra_whitespaces=false, allow_whitespace_only_pieces=true): indentation survives,
 * for code and formatted text. Else runs of spaces collapse to one (SentencePiece's default). */
gboolean moelm_spm_train_bpe(const char *input_path, const char *model_prefix, int vocab_size, int threads,
                             gboolean keep_whitespace, GError **error);

G_END_DECLS

#endif
