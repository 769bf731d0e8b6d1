"""moelm: mixture-of-experts language models from Python, over libmoelm (ctypes).

    from moelm import LM
    lm = LM.from_pretrained('/path/to/en_dense_lm_125m', bpe='gpt2')
    lm.score('Hello world', replace_newlines_with_eos=True)['positional_scores']

fairseq's hub interface (from_pretrained, encode, decode, score, sample, generate) with a
mixture's experts added (score(..., expert=k), posterior); docs/python.md has the details.
"""

from . import _lib
from .errors import (CorruptError, Error, ExistsError, FileError, FormatError, InvalidArgumentError, MismatchError,
                     OutOfMemoryError, UnsupportedError)
from .hub import LM

# fairseq's name, so `from moelm import TransformerLanguageModel` works in fairseq's scripts too
TransformerLanguageModel = LM

__all__ = ["LM", "TransformerLanguageModel", "Error", "FileError", "FormatError", "CorruptError", "InvalidArgumentError", "MismatchError",
           "ExistsError", "UnsupportedError", "OutOfMemoryError", "set_log_level", "device_count", "library_path"]

# the library logs to stderr at "info" for the command line; a Python session hears warnings
_lib.check(_lib.set_log_level(b"warning"))


def set_log_level(level):
    """libmoelm's log lines on stderr: 'debug', 'info', 'warning' (the package's default),
    'error' or 'quiet'."""
    _lib.check(_lib.set_log_level(str(level).encode()))


def device_count():
    """The CUDA devices libmoelm can use (0 without one, or in a build without CUDA)."""
    return _lib.device_count()


def library_path():
    """The libmoelm the package loaded."""
    return _lib.lib._name
