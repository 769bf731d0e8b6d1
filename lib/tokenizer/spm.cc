// moelm — the SentencePiece shim: the project's one C++ file. Every entry point catches
// everything, turns SentencePiece's Status into a one-line GError and returns NULL/FALSE,
// so no exception ever crosses into C.
#include "config.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <exception>
#include <memory>
#include <new>
#include <sstream>
#include <string>
#include <unordered_map>
#include <vector>

#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include "moelm/errors.h"
#include "moelm/fileio.h"
#include "moelm/log.h"
#include "moelm/spm.h"

struct MoelmSpm {
  sentencepiece::SentencePieceProcessor processor;
  std::string path;
};

namespace {

const char *const kComponent = "moelm.spm";
// BPE training reads the whole corpus (no sampling); the seed pins down anything random.
const unsigned int kTrainSeed = 1234;

// SentencePiece messages may span lines; ours must not.
std::string one_line(const std::string &s)
{
  std::string out;
  out.reserve(s.size());
  for (char c : s)
    out.push_back(c == '\n' || c == '\r' ? ' ' : c);
  while (!out.empty() && out.back() == ' ')
    out.pop_back();
  return out;
}

void set_error(GError **error, MoelmError code, const std::string &subject, const std::string &what)
{
  g_set_error(error, MOELM_ERROR, code, "%s: %s", subject.c_str(), one_line(what).c_str());
}

// Runs body(); any escaping exception becomes a GError about `subject`.
template <typename Body, typename Result>
Result guarded(GError **error, const char *subject, Result failure, Body body)
{
  try {
    return body();
  } catch (const std::bad_alloc &) {
    set_error(error, MOELM_ERROR_NOMEM, subject ? subject : "sentencepiece", "out of memory");
  } catch (const std::exception &e) {
    set_error(error, MOELM_ERROR_FAILED, subject ? subject : "sentencepiece", std::string("SentencePiece: ") + e.what());
  } catch (...) {
    set_error(error, MOELM_ERROR_FAILED, subject ? subject : "sentencepiece", "SentencePiece: unknown exception");
  }
  return failure;
}

// The whole file, with errno-based messages naming it.
bool read_file(const char *path, const char *what, std::string *out, GError **error)
{
  struct stat sb;
  int fd = moelm_open_regular(path, what, &sb, error);
  if (fd < 0)
    return false;
  out->clear();
  out->reserve(static_cast<size_t>(sb.st_size));
  char buf[1 << 16];
  for (;;) {
    ssize_t n = read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      moelm_set_error_errno(error, errno, path, what);
      close(fd);
      return false;
    }
    if (n == 0)
      break;
    out->append(buf, static_cast<size_t>(n));
  }
  close(fd);
  return true;
}

// SentencePiece's own .vocab layout: "piece<TAB>score" per line, scores as an ostream
// prints a float (so BPE writes 0, -0, -1, ...).
std::string vocab_text(const sentencepiece::SentencePieceProcessor &sp)
{
  std::ostringstream os;
  for (int i = 0; i < sp.GetPieceSize(); i++)
    os << sp.IdToPiece(i) << "\t" << sp.GetScore(i) << "\n";
  return os.str();
}

}  // namespace

MoelmSpm *moelm_spm_load(const char *model_path, GError **error)
{
  return guarded(error, model_path, static_cast<MoelmSpm *>(nullptr), [&]() -> MoelmSpm * {
    std::string bytes;
    if (!read_file(model_path, "cannot read SentencePiece model", &bytes, error))
      return nullptr;
    auto spm = std::make_unique<MoelmSpm>();
    spm->path = model_path;
    sentencepiece::util::Status st = spm->processor.LoadFromSerializedProto(bytes);
    if (!st.ok() || spm->processor.GetPieceSize() == 0) {
      set_error(error, MOELM_ERROR_FORMAT, model_path,
                "not a SentencePiece model" + (st.ok() ? std::string(" (no pieces)") : " (" + st.ToString() + ")"));
      return nullptr;
    }
    return spm.release();
  });
}

void moelm_spm_free(MoelmSpm *spm) { delete spm; }

int moelm_spm_vocab_size(const MoelmSpm *spm) { return spm->processor.GetPieceSize(); }

GPtrArray *moelm_spm_encode_pieces(const MoelmSpm *spm, const char *text, gsize len, GError **error)
{
  return guarded(error, spm->path.c_str(), static_cast<GPtrArray *>(nullptr), [&]() -> GPtrArray * {
    std::vector<std::string> pieces;
    sentencepiece::util::Status st = spm->processor.Encode(absl::string_view(text, len), &pieces);
    if (!st.ok()) {
      set_error(error, MOELM_ERROR_FAILED, spm->path, "encoding failed: " + st.ToString());
      return nullptr;
    }
    GPtrArray *out = g_ptr_array_new_full(static_cast<guint>(pieces.size()), g_free);
    for (const std::string &p : pieces)
      g_ptr_array_add(out, g_strndup(p.data(), p.size()));
    return out;
  });
}

GArray *moelm_spm_encode_ids(const MoelmSpm *spm, const char *text, gsize len, GError **error)
{
  return guarded(error, spm->path.c_str(), static_cast<GArray *>(nullptr), [&]() -> GArray * {
    std::vector<int> ids;
    sentencepiece::util::Status st = spm->processor.Encode(absl::string_view(text, len), &ids);
    if (!st.ok()) {
      set_error(error, MOELM_ERROR_FAILED, spm->path, "encoding failed: " + st.ToString());
      return nullptr;
    }
    GArray *out = g_array_sized_new(FALSE, FALSE, sizeof(int), static_cast<guint>(ids.size()));
    g_array_append_vals(out, ids.data(), static_cast<guint>(ids.size()));
    return out;
  });
}

char *moelm_spm_decode_pieces(const MoelmSpm *spm, const char *const *pieces, gsize n, GError **error)
{
  return guarded(error, spm->path.c_str(), static_cast<char *>(nullptr), [&]() -> char * {
    std::vector<std::string> in(pieces, pieces + n);
    std::string text;
    sentencepiece::util::Status st = spm->processor.Decode(in, &text);
    if (!st.ok()) {
      set_error(error, MOELM_ERROR_FAILED, spm->path, "decoding failed: " + st.ToString());
      return nullptr;
    }
    return g_strndup(text.data(), text.size());
  });
}

gboolean moelm_spm_train_bpe(const char *input_path, const char *model_prefix, int vocab_size, int threads,
                             gboolean keep_whitespace,
                             GError **error)
{
  return guarded(error, input_path, FALSE, [&]() -> gboolean {
    if (vocab_size < 1 || threads < 1) {
      g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG,
                  "%s: SentencePiece training needs vocab_size >= 1 and threads >= 1 (got %d, %d)", input_path,
                  vocab_size, threads);
      return FALSE;
    }
    if (strchr(input_path, ',') != nullptr) {
      // SentencePiece reads `input` as a comma-separated list of files.
      set_error(error, MOELM_ERROR_INVALID_ARG, input_path, "SentencePiece cannot train on a path containing ','");
      return FALSE;
    }
    int fd = open(input_path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      moelm_set_error_errno(error, errno, input_path, "cannot read training text");
      return FALSE;
    }
    close(fd);

    // hard_vocab_limit=false turns vocab_size into an upper bound: a corpus with fewer
    // mergeable pairs gets fewer pieces instead of "Vocabulary size too high".
    const bool verbose = moelm_log_get_level() <= MOELM_LOG_DEBUG;
    std::unordered_map<std::string, std::string> args = {
      {"input", input_path},
      {"model_type", "bpe"},
      {"vocab_size", std::to_string(vocab_size)},
      {"hard_vocab_limit", "false"},
      {"character_coverage", "1.0"},
      {"byte_fallback", "false"},
      {"num_threads", std::to_string(threads)},
      {"minloglevel", verbose ? "0" : "3"},
    };
    if (keep_whitespace) {
      args["remove_extra_whitespaces"] = "false";
      args["allow_whitespace_only_pieces"] = "true";
    }
    sentencepiece::SetRandomGeneratorSeed(kTrainSeed);
    moelm_info(kComponent, "training a SentencePiece BPE model of at most %d pieces on %s", vocab_size, input_path);
    std::string proto;
    sentencepiece::util::Status st = sentencepiece::SentencePieceTrainer::Train(args, nullptr, &proto);
    if (!st.ok()) {
      std::string why = st.ToString();
      if (why.find("sentences_.empty()") != std::string::npos)
        why = "the file has no text to train on";
      set_error(error, MOELM_ERROR_FAILED, input_path, "cannot train a SentencePiece BPE model: " + why);
      return FALSE;
    }
    sentencepiece::SentencePieceProcessor trained;
    st = trained.LoadFromSerializedProto(proto);
    if (!st.ok()) {
      set_error(error, MOELM_ERROR_FAILED, input_path, "the trained model does not load: " + st.ToString());
      return FALSE;
    }
    if (trained.GetPieceSize() < vocab_size)
      moelm_info(kComponent, "the corpus supports %d pieces, fewer than the %d asked for", trained.GetPieceSize(),
                 vocab_size);

    std::string model_path = std::string(model_prefix) + ".model";
    std::string vocab_path = std::string(model_prefix) + ".vocab";
    std::string vocab = vocab_text(trained);
    if (!moelm_write_file_atomic(model_path.c_str(), proto.data(), proto.size(), error) ||
        !moelm_write_file_atomic(vocab_path.c_str(), vocab.data(), vocab.size(), error))
      return FALSE;
    moelm_info(kComponent, "wrote %s (%d pieces)", model_path.c_str(), trained.GetPieceSize());
    return TRUE;
  });
}
