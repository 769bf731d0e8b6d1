/* moelm — the inference API of libmoelm.so: load a trained (or converted) language model,
 * encode and decode text with its BPE, score token sequences (per expert of a sequence-level
 * mixture, or as the mixture), the experts' posterior given a text, and generate. The Python
 * package `moelm` (python/moelm, ctypes) is written on it; docs/python.md describes both.
 *
 * This header is the stable interface: plain C types only (no GLib), opaque handles, status
 * codes. Everything else libmoelm exports is internal and may change.
 *
 * Conventions
 * - Every function that can fail returns an int status: MOELM_OK (0) or a MOELM_E_* code.
 *   On failure, moelm_last_error() gives the one-line message (naming the file or the
 *   option), the same text moelm's command line prints after "error: ".
 * - Tokens are dictionary ids (int32_t): <s> = 0, <pad> = 1, </s> = 2, <unk> = 3, then
 *   dict.txt's words; a mixture's <expert_0> ... <expert_{K-1}> come last.
 * - Scores are natural-log probabilities, as fairseq's hub returns them.
 * - Ownership: what a function returns through an out-pointer belongs to the caller and is
 *   freed with the function named for it (moelm_free, moelm_lm_scores_free,
 *   moelm_lm_hypotheses_free); strings returned as `const char *` belong to the handle (or to
 *   the library) and stay valid until the handle is closed. Inputs are only read and may be
 *   freed when the call returns.
 * - Options are NULL or a NULL-terminated array of "key=value" strings (listed with each
 *   function); an unknown key or a bad value is MOELM_E_INVALID_ARG naming it.
 * - A handle is used by one thread at a time; different handles may be used concurrently.
 */
#ifndef MOELM_MOELM_H
#define MOELM_MOELM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The version of this interface; it grows when functions are added. */
#define MOELM_API_VERSION 1
int moelm_api_version(void);

/* ---- status codes and errors ---------------------------------------------------------- */

enum {
  MOELM_OK = 0,
  MOELM_E_IO = 1,          /* a file could not be opened, read or written */
  MOELM_E_FORMAT = 2,      /* a file does not have the expected format */
  MOELM_E_CORRUPT = 3,     /* a file has the right format but inconsistent content */
  MOELM_E_INVALID_ARG = 4, /* a bad argument, option or token */
  MOELM_E_MISMATCH = 5,    /* two things that must agree do not (dict.txt and checkpoint, ...) */
  MOELM_E_EXISTS = 6,      /* refusing to overwrite */
  MOELM_E_UNSUPPORTED = 7, /* a feature this build, this model or this device does not have */
  MOELM_E_NOMEM = 8,       /* out of memory */
  MOELM_E_FAILED = 9       /* anything else */
};

/* The message of the last failed call on this thread ("" when none has failed). Owned by the
 * library; valid until the next failing call on the same thread. */
const char *moelm_last_error(void);
/* The code's name ("MOELM_E_IO", ...), a static string. */
const char *moelm_status_name(int status);

/* Logging to stderr (fairseq's layout): "debug", "info" (the default), "warning", "error" or
 * "quiet". Process-wide. */
int moelm_set_log_level(const char *level);

/* Free what the library returned as a plain buffer (tokens, text). NULL is fine. */
void moelm_free(void *p);

/* The CUDA devices moelm can use (0: none, or a build without the CUDA backend). */
int moelm_device_count(void);

/* ---- a model ---------------------------------------------------------------------------- */

typedef struct MoelmLM MoelmLM;

/* Open `checkpoint` (a moelm checkpoint; or a fairseq PyTorch checkpoint, model.pt or
 * NAME-shared.pt with its NAME-rank-R.pt shards, which is converted in memory first, as
 * `moelm convert --from fairseq` would) with the dictionary data_dir/dict.txt, which must be
 * the checkpoint's. Options:
 *   device=auto|cpu|cuda|cuda:N   where it runs (default auto: a GPU when the build has CUDA
 *                                 and one is present, else the CPU)
 *   threads=N                     CPU threads (default 0: all cores)
 *   precision=default|fp32|bf16|fp16   activations (default: fp32 on the CPU, bf16 on a GPU)
 *   bpe=auto|gpt2|sentencepiece|none   how text becomes tokens (default auto:
 *                                 SentencePiece when data_dir/spm.model exists, else
 *                                 whitespace-separated words; gpt2 needs the two files below)
 *   gpt2_encoder_json=PATH, gpt2_vocab_bpe=PATH   GPT-2's files (fairseq's --gpt2-*)
 *   sentencepiece_model=PATH      the SentencePiece model (default data_dir/spm.model)
 * On success *out is a new handle (moelm_lm_close); on failure *out is NULL. */
int moelm_lm_open(const char *checkpoint, const char *data_dir, const char *const *options, MoelmLM **out);
void moelm_lm_close(MoelmLM *lm); /* NULL is fine */

/* What was opened. Strings belong to the handle. */
int moelm_lm_vocab_size(const MoelmLM *lm);    /* dictionary size, specials and expert tokens included */
int moelm_lm_max_positions(const MoelmLM *lm); /* the longest sequence the model scores */
int moelm_lm_num_experts(const MoelmLM *lm);   /* K of a sequence-level mixture; 0 for a plain LM */
const char *moelm_lm_task(const MoelmLM *lm);   /* "language_modeling" or "language_model_moe" */
const char *moelm_lm_method(const MoelmLM *lm); /* a mixture's --method (hMoElp, ...); "" otherwise */
const char *moelm_lm_bpe(const MoelmLM *lm);    /* "gpt2", "sentencepiece" or "none" */
const char *moelm_lm_device(const MoelmLM *lm); /* the backend, e.g. "cpu (AVX2 kernels, 2 threads)" */
const char *moelm_lm_device_reason(const MoelmLM *lm); /* why that one ("this build has no CUDA backend") */
int moelm_lm_device_id(const MoelmLM *lm);     /* the GPU; -1 on the CPU */
const char *moelm_lm_checkpoint(const MoelmLM *lm); /* the checkpoint path given to open */
/* The dictionary: a symbol's id (<unk>'s when absent) and an id's symbol ("<unk>" when out
 * of range). */
int32_t moelm_lm_index(const MoelmLM *lm, const char *symbol);
const char *moelm_lm_symbol(const MoelmLM *lm, int32_t id);

/* ---- text ------------------------------------------------------------------------------- */

/* fairseq hub's encode: the UTF-8 text through the BPE, each piece looked up in the
 * dictionary (absent: <unk>), </s> appended. Flags:
 *   MOELM_ENCODE_NEWLINES_AS_EOS  the text is cut into lines as Python's str.splitlines() cuts
 *                                 it and each line is encoded with its own </s> (the hub's
 *                                 score(..., replace_newline_with_eos=True))
 *   MOELM_ENCODE_NO_FINAL_EOS     no </s> for the end of the text (a line break still gets its
 *                                 own with the flag above): how `moelm score` encodes a context
 *                                 that a continuation follows
 * *tokens (moelm_free) holds *n ids. */
#define MOELM_ENCODE_NEWLINES_AS_EOS 1
#define MOELM_ENCODE_NO_FINAL_EOS 2
int moelm_lm_encode(MoelmLM *lm, const char *text, int flags, int32_t **tokens, size_t *n);

/* fairseq hub's decode: </s> and <s> left out, the rest turned back into text (GPT-2 bytes;
 * SentencePiece pieces joined with U+2581 as spaces, stripped; words joined by spaces).
 * *text (moelm_free) is NUL-terminated UTF-8 (a GPT-2 sequence cut inside a character
 * decodes to U+FFFD there). */
int moelm_lm_decode(MoelmLM *lm, const int32_t *tokens, size_t n, char **text);

/* ---- scoring ------------------------------------------------------------------------------ */

#define MOELM_EXPERT_MIXTURE (-1) /* a mixture's exact marginal (and any plain LM) */
#define MOELM_EXPERT_AUTO (-2)    /* the expert with the highest posterior given the context */

typedef struct {
  size_t n;         /* scored tokens */
  int32_t *tokens;  /* (n) the scored tokens */
  float *lprobs;    /* (n) natural-log probability of each given the ones before it */
  double sum;       /* Σ lprobs */
  int expert;       /* the expert that scored them; -1: the marginal, or a plain LM */
} MoelmLMScores;

/* Score tokens[0..n) as fairseq's hub: </s> at the very start or end is not scored (and
 * not part of the sequence); every other token is scored given all the ones before it, the
 * first given </s>. The first n_context tokens (after the leading </s>) are context:
 * conditioned on, not scored (0: score everything). `expert`: MOELM_EXPERT_MIXTURE, a fixed
 * expert 0..K-1, or MOELM_EXPERT_AUTO (the last two only for a mixture). For a mixture the
 * marginal's per-token scores are
 *     s_t = LSE_k(log π_k + c_k(t)) - LSE_k(log π_k + c_k(t-1))
 * (c_k: the cumulative log-likelihood with <expert_k> in place of the first </s>, π the
 * uniform or learned prior on an empty context), so they add up to the sequence's mixture
 * log-likelihood, and the context moves the posterior. Sequences longer than
 * moelm_lm_max_positions() and ids outside the vocabulary are MOELM_E_INVALID_ARG.
 * *out: moelm_lm_scores_free. */
int moelm_lm_score(MoelmLM *lm, const int32_t *tokens, size_t n, size_t n_context, int expert, MoelmLMScores **out);
void moelm_lm_scores_free(MoelmLMScores *s); /* NULL is fine */

/* The experts' posterior given tokens[0..n) (taken as moelm_lm_score takes them: leading and
 * trailing </s> left out): log_joint[k] = log π_k + log p(tokens | expert k) and
 * posterior[k] = softmax(log_joint)[k], for k < K = moelm_lm_num_experts(); either array
 * may be NULL. Only for a mixture (MOELM_E_INVALID_ARG otherwise). */
int moelm_lm_posterior(MoelmLM *lm, const int32_t *tokens, size_t n, double *posterior, double *log_joint);

/* ---- generation ----------------------------------------------------------------------------- */

typedef struct {
  size_t n;                 /* tokens */
  int32_t *tokens;          /* (n) the prompt, the continuation and the final </s> (no BOS) */
  float *positional_scores; /* (n) natural-log probability of each, the prompt's included */
  float score;              /* Σ positional_scores / n^lenpen (unless unnormalized=1) */
} MoelmLMHypothesis;

typedef struct {
  size_t n;               /* hypotheses, best first */
  MoelmLMHypothesis *hyps; /* (n) */
  int expert;             /* the expert generated from; -1 for a plain LM */
} MoelmLMHypotheses;

/* Generate a continuation of prompt[0..n) (ids, without BOS or a final </s>; may be empty),
 * as `moelm generate` (fairseq-interactive's SequenceGenerator) does: the prompt is forced,
 * then beam search or sampling until </s> or the maximum length. `expert`: for a mixture,
 * 0..K-1 (decoding starts from <expert_k>) or MOELM_EXPERT_AUTO (the expert with the
 * highest posterior given the prompt); MOELM_EXPERT_MIXTURE means expert 0 there (fairseq's
 * --gen-expert default) and is the only choice for a plain LM. `stream` selects the random
 * stream of sampling: `moelm generate` uses the prompt's line number (0, 1, ...), so the same
 * seed, stream and options give the same output. Options (fairseq's names, its defaults):
 *   beam=N (5), sampling=0|1 (0), sampling_topk=K (-1), sampling_topp=P (-1), temperature=T
 *   (1), max_len_a=A (0), max_len_b=B (200), min_len=N (1), lenpen=X (1), unnormalized=0|1
 *   (0), unkpen=X (0), no_repeat_ngram_size=N (0), seed=S (1)
 * *out: moelm_lm_hypotheses_free. */
int moelm_lm_generate(MoelmLM *lm, const int32_t *prompt, size_t n, int expert, uint64_t stream,
                      const char *const *options, MoelmLMHypotheses **out);
void moelm_lm_hypotheses_free(MoelmLMHypotheses *h); /* NULL is fine */

#ifdef __cplusplus
}
#endif

#endif
