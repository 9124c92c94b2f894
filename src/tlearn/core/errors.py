"""Errors a user can act on.

Every error tlearn raises for bad input is a `TlearnError`: a message that says what went wrong and
the value, plus an optional hint that says what to do. The CLI prints them as one line (two with the
hint) and exits with code 1 (`Interrupted`: 130); anything else is a bug in tlearn, exit code 2, and only
`TLEARN_DEBUG=1` shows its traceback.
"""

from __future__ import annotations

import errno as _errno
from typing import ClassVar


class TlearnError(Exception):
    """Base class: `message` says what is wrong, `hint` what to do about it."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} {self.hint}" if self.hint else self.message


class ConfigError(TlearnError):
    """Options that do not make sense, alone or together."""


class DataError(TlearnError):
    """The dataset cannot be used: wrong path, no images, fewer than two classes..."""


class ImageError(DataError):
    """One image cannot be read. Callers usually record it and go on with the others."""


class BackboneError(TlearnError):
    """Unknown model name, or weights that do not fit the architecture."""


class OfflineError(BackboneError):
    """Pretrained weights are needed from the hub, but the hub cannot be reached and they are not cached."""


class BundleError(TlearnError):
    """A saved model bundle is missing, incomplete or from an incompatible version."""


class ExtraMissingError(TlearnError):
    """An optional dependency (ONNX, serving) is not installed."""

    def __init__(self, module: str, extra: str) -> None:
        super().__init__(
            f"This needs the Python package '{module}', which is not installed.",
            hint=f"Install it with: pip install 'tlearn[{extra}]'",
        )


# Why an image cannot be read, as types: the server answers each with its own HTTP status, and callers
# can tell them apart without reading the message (whose wording may change).


class EmptyFile(ImageError):
    """The file or upload has no bytes."""


class NotAnImage(ImageError):
    """Pillow cannot identify the format: a text file, a document, random bytes."""


class TruncatedImage(ImageError):
    """An image whose data is cut off or corrupt."""


class ImageTooLarge(ImageError):
    """More pixels than the limit: refused before decoding, as a guard against decompression bombs."""


class UnreadableFile(ImageError):
    """The file system refuses: no such file, a folder, no permission."""


class OutputError(TlearnError):
    """The place given for results cannot take them: an existing bundle, a file, the dataset's own folder,
    a folder that cannot be written."""


class Interrupted(TlearnError):
    """The user stopped the run (Ctrl-C). The CLI exits with `exit_code`, as a shell does for SIGINT."""

    exit_code: ClassVar[int] = 130  # 128 + SIGINT


class FileSystemError(TlearnError):
    """The file system refused a path the user gave: no permission, read-only, not a folder, no space.

    These are never bugs in tlearn, whichever step met them: `from_os_error` says which OSErrors they
    are and words them with the path, so the CLI reports them as user errors (exit code 1).
    """

    HINTS: ClassVar[dict[int, str]] = {
        _errno.EACCES: "Check its permissions, or choose a place you can write to.",
        _errno.EPERM: "Check its permissions, or choose a place you can write to.",
        _errno.EROFS: "It is on a read-only file system: choose a place you can write to.",
        _errno.ENOTDIR: "A part of the path is a file, not a folder: check the path.",
        _errno.EISDIR: "It is a folder, where a file was expected: check the path.",
        _errno.ENOSPC: "The disk is full: free some space, or choose a place on another disk.",
        **({_errno.EDQUOT: "The disk quota is used up: free some space."} if hasattr(_errno, "EDQUOT") else {}),
    }

    @classmethod
    def from_os_error(cls, err: OSError) -> FileSystemError | None:
        """The user error `err` stands for, or None when it may be a bug (a file tlearn itself lost, say)."""
        if err.errno not in cls.HINTS:
            return None
        reason = err.strerror or type(err).__name__
        paths = " -> ".join(str(p) for p in (err.filename, err.filename2) if p is not None)
        return cls(f"{reason}: {paths}." if paths else f"{reason}.", hint=cls.HINTS[err.errno])
