/* moelm generate — the pieces shared by its files (internal to the CLI).
 *
 *   generate.c       fairseq-interactive's command line, the prompt loop, the output lines
 *   generate_text.c  fairseq's text handling: prompt encoding, Dictionary.string and
 *                    post_process (--remove-bpe) */
#ifndef MOELM_CLI_GENERATE_H
#define MOELM_CLI_GENERATE_H

#include <stdint.h>
#include <glib.h>

#include "moelm/dictionary.h"
#include "moelm/gpt2_bpe.h"
#include "moelm/spm.h"

/* Python's str.strip() of valid UTF-8 text (Unicode whitespace): the kept part is
 * text[*start, *start + *len). */
void gen_text_strip(const char *text, gsize len, gsize *start, gsize *out_len);

/* A prompt line (without its line end) as fairseq-interactive encodes it: the text must be
 * valid UTF-8 without NUL, it is stripped, split into SentencePiece pieces (spm) or
 * whitespace-separated words (spm NULL), and each looked up in `dict` (absent → <unk>).
 * The ids (no </s>) are appended to `ids` (GArray of int32_t). */
gboolean gen_text_encode_prompt(const MoelmDictionary *dict, const MoelmSpm *spm, const char *line, gsize len,
                                GArray *ids, GError **error);

/* --bpe gpt2: the line stripped and GPT-2-encoded (fairseq-interactive's encode_fn), each id
 * looked up as a dict.txt word (absent → <unk>). */
gboolean gen_text_encode_gpt2_prompt(const MoelmDictionary *dict, const MoelmGpt2Bpe *gpt2, const char *line,
                                     gsize len, GArray *ids, GError **error);
/* The text of tokens (</s> and <s> left out, as Dictionary.string does), GPT-2-decoded. */
char *gen_text_gpt2_decode(const MoelmDictionary *dict, const MoelmGpt2Bpe *gpt2, const int32_t *ids, int n);

/* Whether fairseq's post_process knows `symbol` (sentencepiece, wordpiece, letter, silence,
 * _EOW, subword_nmt, "@@ ", "@@", none). */
gboolean gen_text_post_process_known(const char *symbol);

/* fairseq's data_utils.post_process(sentence, symbol); symbol NULL leaves it as it is. */
char *gen_text_post_process(const char *sentence, const char *symbol);

/* fairseq's Dictionary.string(ids, post_process): the symbols joined by ' ', leaving out
 * </s> and <s>, <unk> written "<unk>", then post_process. g_free. */
char *gen_text_tokens_string(const MoelmDictionary *dict, const int32_t *ids, int n, const char *post_process);

#endif
