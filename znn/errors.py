"""The exception hierarchy of znn: every error a user can cause is a ZnnError."""


class ZnnError(Exception):
    """Base class: the CLI prints these as one line and exits with status 1."""


class SpecError(ZnnError, ValueError):
    """A bad .znn, .spec or .cfg file; the message starts with 'file:line: '."""

    def __init__(self, message, path=None, line=None, key=None):
        self.path, self.line, self.key = path, line, key
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        super().__init__(where + message)


class DataError(ZnnError, OSError):
    """Missing or unreadable data, or data that does not fit the network."""


class NetworkError(ZnnError, ValueError):
    """Network weights or sizes that do not fit (bad .h5, wrong shapes, bad output size)."""


class KernelError(ZnnError, RuntimeError):
    """A C kernel reported a failure (status code and MKL's message)."""

    def __init__(self, message, status=None):
        self.status = status
        super().__init__(message)
