"""moelm.LM: fairseq's hub interface (TransformerLanguageModel.from_pretrained, encode,
decode, score, sample, generate) over libmoelm, plus what a mixture of experts adds:
scores per expert and the experts' posterior. docs/python.md describes it."""

import ctypes
import os
import threading
import warnings

import numpy as np

from . import _lib, errors

_CHECKPOINT_NAMES = ("model.pt", "model-shared.pt", "checkpoint_best.pt", "checkpoint_last.pt")
_GEN_OPTIONS = ("sampling", "sampling_topk", "sampling_topp", "temperature", "max_len_a", "max_len_b", "min_len",
                "lenpen", "unnormalized", "unkpen", "no_repeat_ngram_size", "seed")
_INT32_MAX = 2 ** 31 - 1


def _gpt2_dirs(model_dir):
    """Where GPT-2's encoder.json and vocab.bpe may be: beside the model, where `make install`
    put them, or in the source tree this package comes from."""
    if model_dir:
        yield model_dir
    try:
        from . import _paths
        yield os.path.join(_paths.PKGDATADIR, "gpt2")
    except ImportError:
        pass
    yield os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "data-bin", "gpt2")


def _find_gpt2_files(model_dir, encoder_json, vocab_bpe):
    if encoder_json and vocab_bpe:
        return encoder_json, vocab_bpe
    for d in _gpt2_dirs(model_dir):
        e, v = os.path.join(d, "encoder.json"), os.path.join(d, "vocab.bpe")
        if os.path.isfile(e) and os.path.isfile(v):
            return encoder_json or e, vocab_bpe or v
    raise errors.FileError("bpe='gpt2': GPT-2's encoder.json and vocab.bpe were not found (beside the model, in "
                           "moelm's installed data or source tree); pass gpt2_encoder_json= and gpt2_vocab_bpe=")


def _resolve(path, checkpoint_file, data_name_or_path, data):
    """fairseq's hub layout: a directory with the checkpoint and dict.txt, or a checkpoint
    path (its data-bin: `data`, else its directory)."""
    path = os.path.expanduser(os.fspath(path))
    if not os.path.isdir(path):
        ckpt, model_dir = path, os.path.dirname(path) or "."
    else:
        model_dir = path
        names = [checkpoint_file] if checkpoint_file else list(_CHECKPOINT_NAMES)
        ckpt = None
        for name in names:
            cand = os.path.join(path, name)
            shared = cand[:-3] + "-shared.pt" if cand.endswith(".pt") else None
            if os.path.exists(cand):
                ckpt = cand
            elif shared and os.path.exists(shared):  # fairseq's MoE models: model-shared.pt + model-rank-R.pt
                ckpt = shared
            if ckpt:
                break
        if ckpt is None:
            if checkpoint_file:
                ckpt = os.path.join(path, checkpoint_file)  # the library names the missing file
            else:
                raise errors.FileError("%s: none of %s is there" % (path, ", ".join(_CHECKPOINT_NAMES)))
    if data is None:
        data = os.path.join(model_dir, data_name_or_path) if data_name_or_path else model_dir
    return ckpt, os.path.expanduser(os.fspath(data)), model_dir


def _expert_arg(expert, allow_mixture=True):
    if expert is None:
        return _lib.EXPERT_MIXTURE
    if isinstance(expert, str):
        if expert == "auto":
            return _lib.EXPERT_AUTO
        if expert == "mixture" and allow_mixture:
            return _lib.EXPERT_MIXTURE
    elif isinstance(expert, (int, np.integer)) and not isinstance(expert, bool) and 0 <= expert <= _INT32_MAX:
        return int(expert)
    raise ValueError("expert must be %san expert number (0, 1, ...) or 'auto', not %r"
                     % ("None, 'mixture', " if allow_mixture else "None, ", expert))


def _token_array(tokens):
    """1-D int32 copy of a sequence of ids (numpy array, list, torch tensor)."""
    if hasattr(tokens, "numpy") and not isinstance(tokens, np.ndarray):  # a torch tensor
        tokens = tokens.detach().cpu().numpy()
    arr = np.asarray(tokens)
    if arr.size == 0:
        return np.zeros(0, dtype=np.int32)
    if arr.ndim != 1 or arr.dtype.kind not in "iu":
        raise TypeError("tokens must be a 1-D sequence of integer ids, not %s of %s" % (arr.shape, arr.dtype))
    if arr.min() < -_INT32_MAX - 1 or arr.max() > _INT32_MAX:
        raise errors.InvalidArgumentError("token id %d is outside the vocabulary" % (arr.max() if arr.max() > 0
                                                                                    else arr.min()))
    return np.ascontiguousarray(arr, dtype=np.int32)


def _strip_eos(arr):
    """fairseq's inference dataset strips </s> at both ends of a prompt."""
    lo, hi = 0, len(arr)
    while hi > lo and arr[hi - 1] == 2:
        hi -= 1
    while lo < hi and arr[lo] == 2:
        lo += 1
    return arr[lo:hi]


def _ptr(arr):
    return arr.ctypes.data_as(_lib.c_int32_p)


def _copy(ptr, n, dtype):
    if n == 0:
        return np.zeros(0, dtype=dtype)
    return np.ctypeslib.as_array(ptr, shape=(n,)).astype(dtype, copy=True)


class LM:
    """A language model loaded by libmoelm. Make one with LM.from_pretrained(...); close it
    with close() or a `with` block (the garbage collector closes it too)."""

    def __init__(self, checkpoint, data, options, model_dir=None):
        self._lock = threading.RLock()
        self._handle = None
        self._checkpoint, self._data, self._model_dir = checkpoint, data, model_dir
        self._options = dict(options)
        self._half = False
        self._handle = self._open(self._options)

    @staticmethod
    def _open_handle(checkpoint, data, options):
        ptr, keep = _lib.options(options)
        handle = ctypes.c_void_p()
        _lib.check(_lib.lm_open(os.fsencode(checkpoint), os.fsencode(data), ptr, ctypes.byref(handle)))
        del keep
        return handle

    def _open(self, options):
        return self._open_handle(self._checkpoint, self._data, options)

    @classmethod
    def from_pretrained(cls, model_name_or_path, checkpoint_file=None, data_name_or_path=None, data=None, bpe=None,
                        device="cpu", threads=None, gpt2_encoder_json=None, gpt2_vocab_bpe=None,
                        sentencepiece_model=None, **kwargs):
        """Load a model as fairseq's from_pretrained does.

        model_name_or_path: a directory holding the checkpoint (model.pt, model-shared.pt,
            checkpoint_best.pt or checkpoint_last.pt, the first found; or checkpoint_file) and
            dict.txt, or the checkpoint's path. A moelm checkpoint, or fairseq's PyTorch file,
            which is converted in memory first.
        data / data_name_or_path: the data-bin whose dict.txt is the model's (default: the
            model's directory; data_name_or_path is relative to it, as in fairseq).
        bpe: 'gpt2' (fairseq's published models: GPT-2's files are found beside the model or
            in moelm's data, or given as gpt2_encoder_json / gpt2_vocab_bpe), 'sentencepiece'
            (DATA/spm.model or sentencepiece_model), None (SentencePiece when DATA/spm.model
            exists, else whitespace-separated words).
        device: 'cpu' (default), 'cuda', 'cuda:N' or 'auto'. threads: CPU threads (all cores).
        Other keyword arguments (fairseq's model overrides) are ignored with a warning."""
        for k in kwargs:
            warnings.warn("moelm.LM.from_pretrained: %s=%r is ignored (fairseq's override; the checkpoint fixes "
                          "the model)" % (k, kwargs[k]), stacklevel=2)
        ckpt, data_dir, model_dir = _resolve(model_name_or_path, checkpoint_file, data_name_or_path, data)
        opts = {"device": device, "threads": threads, "sentencepiece_model": sentencepiece_model}
        if bpe is not None:
            opts["bpe"] = bpe
        if bpe == "gpt2":
            opts["gpt2_encoder_json"], opts["gpt2_vocab_bpe"] = _find_gpt2_files(model_dir, gpt2_encoder_json,
                                                                                 gpt2_vocab_bpe)
        elif gpt2_encoder_json or gpt2_vocab_bpe:
            opts["gpt2_encoder_json"], opts["gpt2_vocab_bpe"] = gpt2_encoder_json, gpt2_vocab_bpe
        return cls(ckpt, data_dir, opts, model_dir)

    # ---- lifetime -----------------------------------------------------------------------

    def close(self):
        """Free the model (the library's memory, its threads). Further calls raise ValueError."""
        with self._lock:
            if self._handle is not None and _lib is not None:
                _lib.lm_close(self._handle)
            self._handle = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def _h(self):
        if self._handle is None:
            raise ValueError("moelm.LM: the model is closed")
        return self._handle

    def _reopen(self, **changes):
        """Load the checkpoint again with other options, then drop the old copy."""
        with self._lock:
            self._h()
            options = dict(self._options, **changes)
            handle = self._open(options)
            _lib.lm_close(self._handle)
            self._handle, self._options = handle, options
        return self

    # ---- fairseq's model methods ----------------------------------------------------------

    def eval(self):
        """Accepted as fairseq's: inference never uses dropout here. Returns self."""
        return self

    def half(self):
        """fairseq's fp16: on a GPU the activations become fp16 (the model is loaded again);
        on the CPU nothing changes (moelm computes in fp32 there), but a later cuda() uses
        fp16. Returns self."""
        self._half = True
        if self.device_id >= 0:
            return self._reopen(precision="fp16")
        return self

    def float(self):
        """fp32 activations (on a GPU the model is loaded again). Returns self."""
        self._half = False
        if self.device_id >= 0:
            return self._reopen(precision="fp32")
        return self

    def cuda(self, device=None):
        """Move to a GPU (the model is loaded again there). Without a CUDA device, or in a
        build without the CUDA backend, the model stays on the CPU with a warning, so CPU-only
        machines run fairseq's scripts unchanged. Returns self."""
        n = _lib.device_count()
        idx = 0 if device is None else int(str(device).split(":")[-1])
        if n == 0:
            warnings.warn("moelm: cuda(): no CUDA device (or libmoelm was built without CUDA); the model stays on "
                          "the CPU", stacklevel=2)
            return self
        if self.device_id == idx:
            return self
        return self._reopen(device="cuda:%d" % idx, precision="fp16" if self._half else None)

    def cpu(self):
        """Move to the CPU (the model is loaded again when it was on a GPU). Returns self."""
        if self.device_id < 0:
            return self
        return self._reopen(device="cpu", precision=None)

    # ---- what it is -----------------------------------------------------------------------

    def _str(self, f):
        with self._lock:
            return f(self._h()).decode("utf-8", "replace")

    @property
    def checkpoint(self):
        return self._checkpoint

    @property
    def data(self):
        return self._data

    @property
    def vocab_size(self):
        with self._lock:
            return _lib.lm_vocab_size(self._h())

    @property
    def max_positions(self):
        with self._lock:
            return _lib.lm_max_positions(self._h())

    @property
    def num_experts(self):
        """K of a sequence-level mixture (--task language_model_moe); 0 for a plain LM."""
        with self._lock:
            return _lib.lm_num_experts(self._h())

    @property
    def task(self):
        return self._str(_lib.lm_task)

    @property
    def method(self):
        return self._str(_lib.lm_method) or None

    @property
    def bpe(self):
        return self._str(_lib.lm_bpe)

    @property
    def device(self):
        return self._str(_lib.lm_device)

    @property
    def device_reason(self):
        return self._str(_lib.lm_device_reason)

    @property
    def device_id(self):
        with self._lock:
            return _lib.lm_device_id(self._h())

    def index(self, symbol):
        """The dictionary id of a symbol (<unk>'s, 3, when absent)."""
        with self._lock:
            return _lib.lm_index(self._h(), symbol.encode("utf-8"))

    def symbol(self, index):
        """The dictionary symbol of an id ('<unk>' when out of range)."""
        return self._str(lambda h: _lib.lm_symbol(h, int(index)))

    def __repr__(self):
        if self._handle is None:
            return "<moelm.LM %s (closed)>" % self._checkpoint
        return "<moelm.LM %s: %s%s, %d symbols, on %s>" % (
            self._checkpoint, self.task, " of %d experts" % self.num_experts if self.num_experts else "",
            self.vocab_size, self.device)

    # ---- text ------------------------------------------------------------------------------

    def encode(self, sentence, replace_newlines_with_eos=False, append_eos=True):
        """fairseq hub's encode: the ids of the text (BPE, dictionary), </s> appended (int64).
        replace_newlines_with_eos: each line gets its own </s>. append_eos=False: no </s> for
        the end of the text (a context that a continuation follows)."""
        if not isinstance(sentence, str):
            raise TypeError("encode() takes a str, not %s" % type(sentence).__name__)
        flags = (1 if replace_newlines_with_eos else 0) | (0 if append_eos else 2)
        ptr, n = _lib.c_int32_p(), ctypes.c_size_t()
        with self._lock:
            _lib.check(_lib.lm_encode(self._h(), sentence.encode("utf-8", "surrogatepass"), flags, ctypes.byref(ptr),
                                      ctypes.byref(n)))
        try:
            return _copy(ptr, n.value, np.int64)
        finally:
            _lib.free(ptr)

    def decode(self, tokens):
        """fairseq hub's decode: the text of the ids (</s> and <s> left out)."""
        arr = _token_array(tokens)
        out = ctypes.c_void_p()
        with self._lock:
            _lib.check(_lib.lm_decode(self._h(), _ptr(arr), len(arr), ctypes.byref(out)))
        try:
            return ctypes.string_at(out).decode("utf-8", "replace")
        finally:
            _lib.free(out)

    # ---- scoring ---------------------------------------------------------------------------

    def score_tokens(self, tokens, n_context=0, expert=None):
        """Score ids as score() scores a text (</s> at either end not scored); the first
        n_context ids condition the rest without being scored. Returns score()'s dict."""
        arr = _token_array(tokens)
        if not isinstance(n_context, (int, np.integer)) or n_context < 0:
            raise ValueError("n_context must be an integer >= 0")
        out = ctypes.POINTER(_lib.Scores)()
        with self._lock:
            _lib.check(_lib.lm_score(self._h(), _ptr(arr), len(arr), int(n_context), _expert_arg(expert),
                                     ctypes.byref(out)))
        try:
            s = out.contents
            pos = _copy(s.lprobs, s.n, np.float32)
            return {
                "tokens": _copy(s.tokens, s.n, np.int64),
                "positional_scores": pos,
                "score": np.float32(s.sum / s.n) if s.n else np.float32("nan"),
                "expert": s.expert if s.expert >= 0 else None,
            }
        finally:
            _lib.lm_scores_free(out)

    def score(self, sentences, replace_newlines_with_eos=False, expert=None, replace_newline_with_eos=None,
              context=None, **kwargs):
        """fairseq hub's score: for a text (or each of a list of texts) a dict with 'tokens'
        (int64), 'positional_scores' (float32, the natural-log probability of each token) and
        'score' (their mean), as the hub returns. replace_newlines_with_eos (fairseq's
        replace_newline_with_eos): each line of the text is encoded with its own </s>.
        expert: None or 'mixture' (a mixture's exact marginal; the only choice for a plain
        LM), an expert number, or 'auto' (the most probable expert given the context); the
        dict's 'expert' says which scored it (None: the marginal). context (moelm's addition,
        `moelm score`'s): a text before each one, conditioned on but not scored."""
        kwargs.pop("verbose", None)
        if kwargs:
            raise TypeError("score() got unexpected keyword arguments: %s" % ", ".join(sorted(kwargs)))
        if replace_newline_with_eos is not None:
            replace_newlines_with_eos = replace_newline_with_eos
        if isinstance(sentences, str):
            return self.score([sentences], replace_newlines_with_eos, expert, context=context)[0]
        sentences = list(sentences)
        contexts = [context] * len(sentences) if context is None or isinstance(context, str) else list(context)
        if len(contexts) != len(sentences):
            raise ValueError("score(): %d contexts for %d texts" % (len(contexts), len(sentences)))
        out = []
        for s, c in zip(sentences, contexts):
            tokens = self.encode(s, replace_newlines_with_eos)
            ctx = self.encode(c, replace_newlines_with_eos, append_eos=False) if c else tokens[:0]
            out.append(self.score_tokens(np.concatenate([ctx, tokens]), len(ctx), expert))
        return out

    def posterior(self, text, replace_newlines_with_eos=False, return_log_joint=False):
        """A mixture's posterior over its experts given a text (or a list: one row each):
        P(k | text) = softmax_k(log π_k + log p(text | expert k)). With return_log_joint, also
        the log joints (float64 arrays of num_experts)."""
        if not isinstance(text, str):
            pairs = [self.posterior(t, replace_newlines_with_eos, True) for t in text]
            post = np.array([p for p, _ in pairs]).reshape(len(pairs), -1)
            joint = np.array([j for _, j in pairs]).reshape(len(pairs), -1)
            return (post, joint) if return_log_joint else post
        arr = _token_array(self.encode(text, replace_newlines_with_eos))
        with self._lock:
            K = _lib.lm_num_experts(self._h())
            post, joint = np.zeros(max(K, 1)), np.zeros(max(K, 1))
            _lib.check(_lib.lm_posterior(self._h(), _ptr(arr), len(arr), post.ctypes.data_as(_lib.c_double_p),
                                         joint.ctypes.data_as(_lib.c_double_p)))
        return (post[:K], joint[:K]) if return_log_joint else post[:K]

    # ---- generation ------------------------------------------------------------------------

    def generate(self, tokenized_sentences, beam=5, verbose=False, expert=None, **kwargs):
        """fairseq hub's generate: for each prompt (ids; </s> at either end is dropped) the
        hypotheses, best first, as dicts with 'tokens' (the prompt, the continuation, the final
        </s>), 'score' and 'positional_scores' (natural log), and 'expert'. A single 1-D
        prompt gives its list alone. Prompt i draws from random stream i, as line i of
        `moelm generate`. Options: fairseq's generation names (sampling, sampling_topk,
        sampling_topp, temperature, max_len_a, max_len_b, min_len, lenpen, unnormalized, unkpen,
        no_repeat_ngram_size) and seed (default 1, as `moelm generate --seed`). expert (a
        mixture's): a number, 'auto' (the most probable given the prompt), None (expert 0,
        fairseq's --gen-expert default)."""
        unknown = sorted(set(kwargs) - set(_GEN_OPTIONS))
        if unknown:
            raise TypeError("unexpected generation options: %s (known: beam, %s)" % (", ".join(unknown),
                                                                                 ", ".join(_GEN_OPTIONS)))
        single = isinstance(tokenized_sentences, np.ndarray) and tokenized_sentences.ndim == 1
        if hasattr(tokenized_sentences, "dim") and tokenized_sentences.dim() == 1:  # a torch tensor
            single = True
        if isinstance(tokenized_sentences, (list, tuple)) and tokenized_sentences and all(
                isinstance(t, (int, np.integer)) for t in tokenized_sentences):  # one prompt as a list of ids
            single = True
        prompts = [tokenized_sentences] if single else list(tokenized_sentences)
        opts = dict(kwargs, beam=beam)
        ptr, keep = _lib.options(opts)
        e = _expert_arg(expert, allow_mixture=False)
        results = []
        for i, p in enumerate(prompts):
            arr = _strip_eos(_token_array(p))
            out = ctypes.POINTER(_lib.Hypotheses)()
            with self._lock:
                _lib.check(_lib.lm_generate(self._h(), _ptr(arr), len(arr), e, i, ptr, ctypes.byref(out)))
            try:
                h = out.contents
                results.append([{
                    "tokens": _copy(h.hyps[j].tokens, h.hyps[j].n, np.int64),
                    "score": np.float32(h.hyps[j].score),
                    "positional_scores": _copy(h.hyps[j].positional_scores, h.hyps[j].n, np.float32),
                    "expert": h.expert if h.expert >= 0 else None,
                } for j in range(h.n)])
            finally:
                _lib.lm_hypotheses_free(out)
        del keep
        return results[0] if single else results

    def sample(self, sentences, beam=1, verbose=False, expert=None, **kwargs):
        """fairseq hub's sample: the text of the best hypothesis (the prompt and its
        continuation) for a prompt, or for each of a list. Greedy unless sampling=True, as in
        fairseq; the options are generate()'s."""
        if isinstance(sentences, str):
            return self.sample([sentences], beam, verbose, expert, **kwargs)[0]
        batched = self.generate([self.encode(s) for s in sentences], beam, verbose, expert, **kwargs)
        return [self.decode(hyps[0]["tokens"]) for hyps in batched]
