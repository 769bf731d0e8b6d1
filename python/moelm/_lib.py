"""ctypes bindings of libmoelm's inference API (lib/moelm/moelm.h): finding the library,
the function prototypes, and turning status codes into exceptions."""

import ctypes
import ctypes.util
import os

from . import errors

SONAME = "libmoelm.so.0"
API_VERSION = 1  # MOELM_API_VERSION this package is written for

EXPERT_MIXTURE = -1  # MOELM_EXPERT_MIXTURE
EXPERT_AUTO = -2  # MOELM_EXPERT_AUTO

_here = os.path.dirname(os.path.abspath(__file__))


def _candidates():
    """Where to look for libmoelm, in order (see docs/python.md)."""
    env = os.environ.get("MOELM_LIBRARY")
    if env:
        yield env
        return
    yield os.path.join(_here, SONAME)  # a copy beside the package
    try:
        from . import _paths  # written by the build for the installed package
        yield os.path.join(_paths.LIBDIR, SONAME)
    except ImportError:
        pass
    # a source checkout built into build/ (./quickstart), the package used from python/
    yield os.path.join(_here, "..", "..", "build", "lib", ".libs", SONAME)
    found = ctypes.util.find_library("moelm")
    if found:
        yield found


def _load():
    tried = []
    for path in _candidates():
        if os.sep in path and not os.path.exists(path):
            tried.append(path + " (absent)")
            continue
        try:
            return ctypes.CDLL(path)
        except OSError as e:
            tried.append("%s (%s)" % (path, e))
    raise ImportError("moelm: cannot find libmoelm (%s); build moelm (make), install it (make install), "
                      "or set MOELM_LIBRARY to the path of %s" % ("; ".join(tried) or "nowhere to look", SONAME))


lib = _load()

c_int32_p = ctypes.POINTER(ctypes.c_int32)
c_float_p = ctypes.POINTER(ctypes.c_float)
c_double_p = ctypes.POINTER(ctypes.c_double)


class Scores(ctypes.Structure):
    _fields_ = [("n", ctypes.c_size_t), ("tokens", c_int32_p), ("lprobs", c_float_p), ("sum", ctypes.c_double),
                ("expert", ctypes.c_int)]


class Hypothesis(ctypes.Structure):
    _fields_ = [("n", ctypes.c_size_t), ("tokens", c_int32_p), ("positional_scores", c_float_p),
                ("score", ctypes.c_float)]


class Hypotheses(ctypes.Structure):
    _fields_ = [("n", ctypes.c_size_t), ("hyps", ctypes.POINTER(Hypothesis)), ("expert", ctypes.c_int)]


def _proto(name, restype, *argtypes):
    f = getattr(lib, name)
    f.restype = restype
    f.argtypes = list(argtypes)
    return f


_lm_p = ctypes.c_void_p
_opts = ctypes.POINTER(ctypes.c_char_p)

api_version = _proto("moelm_api_version", ctypes.c_int)
last_error = _proto("moelm_last_error", ctypes.c_char_p)
status_name = _proto("moelm_status_name", ctypes.c_char_p, ctypes.c_int)
set_log_level = _proto("moelm_set_log_level", ctypes.c_int, ctypes.c_char_p)
free = _proto("moelm_free", None, ctypes.c_void_p)
device_count = _proto("moelm_device_count", ctypes.c_int)
lm_open = _proto("moelm_lm_open", ctypes.c_int, ctypes.c_char_p, ctypes.c_char_p, _opts, ctypes.POINTER(_lm_p))
lm_close = _proto("moelm_lm_close", None, _lm_p)
lm_vocab_size = _proto("moelm_lm_vocab_size", ctypes.c_int, _lm_p)
lm_max_positions = _proto("moelm_lm_max_positions", ctypes.c_int, _lm_p)
lm_num_experts = _proto("moelm_lm_num_experts", ctypes.c_int, _lm_p)
lm_task = _proto("moelm_lm_task", ctypes.c_char_p, _lm_p)
lm_method = _proto("moelm_lm_method", ctypes.c_char_p, _lm_p)
lm_bpe = _proto("moelm_lm_bpe", ctypes.c_char_p, _lm_p)
lm_device = _proto("moelm_lm_device", ctypes.c_char_p, _lm_p)
lm_device_reason = _proto("moelm_lm_device_reason", ctypes.c_char_p, _lm_p)
lm_device_id = _proto("moelm_lm_device_id", ctypes.c_int, _lm_p)
lm_index = _proto("moelm_lm_index", ctypes.c_int32, _lm_p, ctypes.c_char_p)
lm_symbol = _proto("moelm_lm_symbol", ctypes.c_char_p, _lm_p, ctypes.c_int32)
lm_encode = _proto("moelm_lm_encode", ctypes.c_int, _lm_p, ctypes.c_char_p, ctypes.c_int,
                   ctypes.POINTER(c_int32_p), ctypes.POINTER(ctypes.c_size_t))
lm_decode = _proto("moelm_lm_decode", ctypes.c_int, _lm_p, c_int32_p, ctypes.c_size_t,
                   ctypes.POINTER(ctypes.c_void_p))
lm_score = _proto("moelm_lm_score", ctypes.c_int, _lm_p, c_int32_p, ctypes.c_size_t, ctypes.c_size_t, ctypes.c_int,
                  ctypes.POINTER(ctypes.POINTER(Scores)))
lm_scores_free = _proto("moelm_lm_scores_free", None, ctypes.POINTER(Scores))
lm_posterior = _proto("moelm_lm_posterior", ctypes.c_int, _lm_p, c_int32_p, ctypes.c_size_t, c_double_p, c_double_p)
lm_generate = _proto("moelm_lm_generate", ctypes.c_int, _lm_p, c_int32_p, ctypes.c_size_t, ctypes.c_int,
                     ctypes.c_uint64, _opts, ctypes.POINTER(ctypes.POINTER(Hypotheses)))
lm_hypotheses_free = _proto("moelm_lm_hypotheses_free", None, ctypes.POINTER(Hypotheses))

if api_version() < API_VERSION:
    raise ImportError("moelm: %s has API version %d; this package needs %d or later"
                      % (getattr(lib, "_name", SONAME), api_version(), API_VERSION))


def check(status):
    """Raise the exception of a failed call (its message is the library's)."""
    if status != 0:
        msg = last_error().decode("utf-8", "replace")
        raise errors.from_status(status, status_name(status).decode(), msg)


def options(pairs):
    """A NULL-terminated char*[] of "key=value" from a dict (None values left out); the
    array keeps its strings alive."""
    items = [("%s=%s" % (k, _opt_value(v))).encode("utf-8") for k, v in pairs.items() if v is not None]
    arr = (ctypes.c_char_p * (len(items) + 1))(*items, None)
    return ctypes.cast(arr, _opts), arr


def _opt_value(v):
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, float):
        return repr(v)
    return str(v)
