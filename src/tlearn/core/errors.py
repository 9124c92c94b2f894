"""Errors a user can act on.

Every error tlearn raises for bad input is a `TlearnError`: a message that says what went wrong and
the value, plus an optional hint that says what to do. The CLI prints them as one line (two with the
hint) and exits with code 1; nothing else reaches the user as a traceback.
"""

from __future__ import annotations


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
