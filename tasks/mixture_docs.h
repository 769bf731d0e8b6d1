/* moelm — documents of a split, their domain labels, and how well a mixture's experts match
 * them.
 *
 * A document is a run of sequences between empty lines (1-token </s> sequences), as
 * preprocess writes fairseq's raw text; runs of several empty lines make no empty documents.
 * The label file DATA/{split}.domains holds one label per document, in order (the shipped
 * corpus and the benchmark corpora have one). Experts are matched to domains one to one so
 * that the most documents agree (the Hungarian method); accuracy is the matched share of all
 * documents, the per-domain average the mean over domains of each domain's matched share. */
#ifndef MOELM_TASKS_MIXTURE_DOCS_H
#define MOELM_TASKS_MIXTURE_DOCS_H

#include <stdint.h>
#include <glib.h>

#include "lm_data.h"
#include "moelm/dist.h"

G_BEGIN_DECLS

/* The document of every block of a split (the document holding the block's first token;
 * with --sample-break-mode complete_doc a block never leaves its document). */
typedef struct {
  guint n_docs;
  gsize n_blocks;
  guint32 *block_doc;  /* (n_blocks) */
  guint32 *doc_blocks; /* (n_docs + 1) the blocks of document d are doc_order[doc_blocks[d] .. doc_blocks[d+1]) */
  guint32 *doc_order;  /* (n_blocks) block indices grouped by document, each document's in stream order */
} MoelmDocMap;

MoelmDocMap *moelm_doc_map_new(const MoelmLmSplit *split);
void moelm_doc_map_free(MoelmDocMap *map);
/* The number of documents in a dataset's sequences (sizes (n)). */
guint moelm_count_documents(const int32_t *sizes, gsize n);

/* For each comma-separated split of `subsets` with a DATA/{split}.domains file, check that it
 * has one label per document of DATA/{split}.idx (a split that is not there is left to
 * whoever opens it). */
gboolean moelm_mixture_check_domain_labels(const char *data_dir, const char *subsets, GError **error);

/* Labels of a split's documents. */
typedef struct {
  guint n_docs;
  int n_domains;
  char **names;    /* (n_domains) in order of first appearance */
  int *doc_domain; /* (n_docs) */
} MoelmDomainLabels;

/* Read PATH (one label per line, no empty labels) for a split of n_docs documents; a count
 * that differs is an error naming the file and both counts. */
MoelmDomainLabels *moelm_domain_labels_load(const char *path, guint n_docs, GError **error);
void moelm_domain_labels_free(MoelmDomainLabels *labels);

/* Best one-to-one matching in a (rows, cols) table of counts (row-major): match[r] is the column
 * matched to row r (-1 when there are more rows than columns); returns the matched total. */
int64_t moelm_best_matching(const int64_t *counts, int rows, int cols, int *match);

/* counts (D, K): documents of domain d assigned to expert k. Fills accuracy (matched share of
 * all documents) and per_domain (mean over domains of the matched share) and, when match is
 * not NULL, the expert of each domain (D). */
void moelm_domain_accuracy(const int64_t *counts, int D, int K, double *accuracy, double *per_domain, int *match);

/* What a validation pass says about the experts: the mean posterior of each expert over the
 * blocks, and, when DATA/{split}.domains exists, how the documents' experts match the domains.
 * A document goes to the expert with the highest posterior given the whole document: the sum
 * of its blocks' log-likelihoods plus the log prior of its first block. */
typedef struct {
  int K;
  MoelmDocMap *map;
  MoelmDomainLabels *labels; /* NULL without a label file */
  double *doc_score;         /* (n_docs, K) */
  guint8 *doc_seen;          /* (n_docs) */
  double *mass;              /* (K) Σ over blocks of the posterior */
  double blocks;
} MoelmDomainTally;

/* A tally for `split` (labels from split->prefix + ".domains" when that file exists; a label
 * file that does not fit the split is an error naming it). */
MoelmDomainTally *moelm_domain_tally_new(const MoelmLmSplit *split, int K, GError **error);
void moelm_domain_tally_free(MoelmDomainTally *t);
void moelm_domain_tally_reset(MoelmDomainTally *t);
/* Block `block` of the split, its lprob (K) and log prior (K). */
void moelm_domain_tally_add(MoelmDomainTally *t, gsize block, const float *lprob, const float *log_prior);
/* Sum the tallies of the ranks of `comm` (each scored a share of the split's blocks). */
gboolean moelm_domain_tally_all_reduce(MoelmDomainTally *t, MoelmComm *comm, GError **error);
/* counts (D, K) of the documents seen (labels required): domain d's documents per expert. */
void moelm_domain_tally_counts(const MoelmDomainTally *t, int64_t *counts);

G_END_DECLS

#endif
