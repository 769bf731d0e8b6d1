/* moelm benchmark helper: does a sequence-level mixture specialise by domain?
 *
 * Loads a checkpoint (dense or language_model_moe), scores the held-out split, and for a
 * mixture assigns every document to the expert with the highest posterior given the
 * document's opening tokens (log π_k + log p(opening | expert k); the gate, if any, sees an
 * empty context). Prints, per domain, the share of its documents sent to each expert, the
 * domain accuracy under the best one-to-one matching of experts to domains, and the exact
 * valid loss (mixture NLL for a mixture).
 * usage: bench-mixture DATA CHECKPOINT DOMAINS [--split valid] [--opening 64] [--threads N] [--dump 1|2]
 * (--dump 1: one line per document, "DOC index label expert", for looking at the mistakes;
 * --dump 2 adds the experts' log joints) */
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "moelm/indexed_dataset.h"
#include "tasks/lm_data.h"
#include "tasks/inference.h"
#include "tasks/mixture_docs.h"
#include "tasks/mixture_scorer.h"
#include "tasks/objective.h"

#define MAX_DOMAINS 8

static int die(const char *what, GError *error)
{
  fprintf(stderr, "bench-mixture: %s: %s\n", what, error ? error->message : "failed");
  return 1;
}

/* Documents of a split: runs of sequences between 1-token (</s>) separators. */
typedef struct {
  gsize first, count; /* sequence range */
} Doc;

static GArray *documents(const MoelmIndexedDataset *ds)
{
  GArray *docs = g_array_new(FALSE, FALSE, sizeof(Doc));
  const int32_t *sizes = moelm_indexed_dataset_sizes(ds);
  gsize n = moelm_indexed_dataset_len(ds), i = 0;
  while (i < n) {
    while (i < n && sizes[i] == 1)
      i++;
    if (i >= n)
      break;
    Doc d = {i, 0};
    while (i < n && sizes[i] != 1) {
      d.count++;
      i++;
    }
    g_array_append_val(docs, d);
  }
  return docs;
}

int main(int argc, char **argv)
{
  if (argc < 4) {
    fprintf(stderr, "usage: bench-mixture DATA CHECKPOINT DOMAINS [--split valid] [--opening 64] [--threads N]\n");
    return 2;
  }
  const char *data = argv[1], *ckpt_path = argv[2], *domains_path = argv[3], *split_name = "valid";
  int opening = 64, threads = 0, dump = 0;
  for (int i = 4; i + 1 < argc; i += 2) {
    if (strcmp(argv[i], "--split") == 0)
      split_name = argv[i + 1];
    else if (strcmp(argv[i], "--opening") == 0)
      opening = atoi(argv[i + 1]);
    else if (strcmp(argv[i], "--threads") == 0)
      threads = atoi(argv[i + 1]);
    else if (strcmp(argv[i], "--dump") == 0)
      dump = atoi(argv[i + 1]);
  }
  GError *error = NULL;
  MoelmBackendSpec spec;
  moelm_backend_spec_init(&spec);
  spec.kind = MOELM_BACKEND_CPU;
  spec.threads = threads;
  MoelmInference *inf = moelm_inference_open(ckpt_path, data, &spec, &error);
  if (inf == NULL)
    return die(ckpt_path, error);
  MoelmModel *model = inf->model;
  const gboolean mixture = inf->task.mixture;
  const MoelmMixtureConfig mix = inf->task.mix;

  /* exact valid loss over the split's blocks, as training validates */
  const int64_t tps = inf->task.tokens_per_sample;
  const MoelmBreakMode mode = inf->task.break_mode;
  MoelmLmSplit *split = moelm_lm_split_open(data, split_name, tps, mode, moelm_dictionary_size(inf->dict), &error);
  if (split == NULL)
    return die(split_name, error);
  MoelmObjective *obj = mixture ? moelm_mixture_objective_new(&mix) : moelm_lm_objective_new();
  GPtrArray *batches = moelm_lm_batches_sequential(split, 8);
  double nll = 0, ntok = 0, nrows = 0;
  if (!moelm_objective_score_batches(obj, model, split, batches, &nll, &ntok, &nrows, &error))
    return die("valid", error);
  const double valid_bits = nll / ntok / M_LN2;
  printf("checkpoint: %s (%s)\n", ckpt_path, mixture ? inf->task.method : "dense language_modeling");
  printf("valid loss (base 2): %.4f, perplexity: %.2f\n", valid_bits, pow(2.0, valid_bits));
  if (!mixture) {
    printf("RESULT ppl=%.2f\n", pow(2.0, valid_bits));
    return 0;
  }

  /* domain labels, one per document */
  char *labels_text = NULL;
  if (!g_file_get_contents(domains_path, &labels_text, NULL, &error))
    return die(domains_path, error);
  gchar **labels = g_strsplit(g_strstrip(labels_text), "\n", -1);
  GArray *docs = documents(split->ds);
  if (docs->len != g_strv_length(labels)) {
    fprintf(stderr, "bench-mixture: %s has %u labels but the split has %u documents\n", domains_path,
            g_strv_length(labels), docs->len);
    return 1;
  }
  char *names[MAX_DOMAINS];
  int D = 0, totals[MAX_DOMAINS] = {0};
  int64_t counts[MAX_DOMAINS * MAX_DOMAINS] = {0}; /* (domain, expert) */
  const int K = mix.num_experts;
  if (K > MAX_DOMAINS) {
    fprintf(stderr, "bench-mixture: at most %d experts\n", MAX_DOMAINS);
    return 1;
  }
  int32_t *buf = g_new(int32_t, opening);
  double *log_joint = g_new(double, K);
  for (guint d = 0; d < docs->len; d++) {
    Doc doc = g_array_index(docs, Doc, d);
    int n = 0; /* the document's opening tokens */
    for (gsize s = doc.first; s < doc.first + doc.count && n < opening; s++) {
      int32_t *seq = g_new(int32_t, moelm_indexed_dataset_sizes(split->ds)[s]);
      moelm_indexed_dataset_get(split->ds, s, seq);
      for (int t = 0; t < moelm_indexed_dataset_sizes(split->ds)[s] && n < opening; t++)
        buf[n++] = seq[t];
      g_free(seq);
    }
    /* log π_k + log p(opening | expert k); the gate (if any) sees an empty context */
    if (!moelm_mixture_prompt_log_joint(model, inf->gate, &mix, buf, n, log_joint, &error))
      return die("score", error);
    int best = 0;
    for (int k = 1; k < K; k++)
      if (log_joint[k] > log_joint[best])
        best = k;
    int di = 0;
    while (di < D && strcmp(names[di], labels[d]) != 0)
      di++;
    if (di == D) {
      if (D == MAX_DOMAINS)
        continue;
      names[D++] = labels[d];
    }
    counts[di * K + best]++;
    if (dump) {
      printf("DOC %u %s %d", d, labels[d], best);
      for (int k = 0; dump > 1 && k < K; k++)
        printf(" %.3f", log_joint[k]);
      printf("\n");
    }
    totals[di]++;
  }
  int perm[MAX_DOMAINS];
  double accuracy, per_domain;
  moelm_domain_accuracy(counts, D, K, &accuracy, &per_domain, perm);
  printf("| domain | documents |");
  for (int k = 0; k < K; k++)
    printf(" expert %d |", k);
  printf("\n|---|---|");
  for (int k = 0; k < K; k++)
    printf("---|");
  printf("\n");
  for (int di = 0; di < D; di++) {
    printf("| %s | %d |", names[di], totals[di]);
    for (int k = 0; k < K; k++)
      printf(" %.2f |", totals[di] ? (double)counts[di * K + k] / totals[di] : 0.0);
    printf("\n");
  }
  printf("domain accuracy (best one-to-one matching of experts to domains): %.3f (%u documents); "
         "per-domain average %.3f\n",
         accuracy, docs->len, per_domain);
  /* one line for the benchmark's tables: each domain's matched share, in label order */
  printf("RESULT ppl=%.2f acc=%.3f per_domain=%.3f", pow(2.0, valid_bits), accuracy, per_domain);
  for (int di = 0; di < D; di++)
    printf(" %s=%.3f", names[di], perm[di] >= 0 && totals[di] ? (double)counts[di * K + perm[di]] / totals[di] : 0.0);
  printf("\n");
  return 0;
}
