"""The exceptions moelm raises: one class per status code of lib/moelm/moelm.h, all
subclasses of moelm.Error. The message is the library's one line, as the command line
prints it after "error: "."""


class Error(RuntimeError):
    """A failure reported by libmoelm. `status` is the code's name (MOELM_E_IO, ...)."""

    code = None
    status = None

    def __init__(self, message, code=None, status=None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status


class FileError(Error):
    """A file could not be opened, read or written (MOELM_E_IO)."""
    code, status = 1, "MOELM_E_IO"


class FormatError(Error):
    """A file does not have the expected format (MOELM_E_FORMAT)."""
    code, status = 2, "MOELM_E_FORMAT"


class CorruptError(Error):
    """A file has the right format but inconsistent content (MOELM_E_CORRUPT)."""
    code, status = 3, "MOELM_E_CORRUPT"


class InvalidArgumentError(Error, ValueError):
    """A bad argument, option or token (MOELM_E_INVALID_ARG)."""
    code, status = 4, "MOELM_E_INVALID_ARG"


class MismatchError(Error):
    """Two things that must agree do not, e.g. dict.txt and the checkpoint (MOELM_E_MISMATCH)."""
    code, status = 5, "MOELM_E_MISMATCH"


class ExistsError(Error):
    """Refusing to overwrite (MOELM_E_EXISTS)."""
    code, status = 6, "MOELM_E_EXISTS"


class UnsupportedError(Error):
    """A feature this build, model or device does not have (MOELM_E_UNSUPPORTED)."""
    code, status = 7, "MOELM_E_UNSUPPORTED"


class OutOfMemoryError(Error, MemoryError):
    """Out of memory (MOELM_E_NOMEM)."""
    code, status = 8, "MOELM_E_NOMEM"


_BY_CODE = {c.code: c for c in (FileError, FormatError, CorruptError, InvalidArgumentError, MismatchError,
                                ExistsError, UnsupportedError, OutOfMemoryError)}


def from_status(code, status, message):
    cls = _BY_CODE.get(code, Error)
    return cls(message, code, status)
