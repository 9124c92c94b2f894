"""How tlearn knows a file it wrote, so that a rerun replaces its own pictures and never a user's file.

A picture tlearn writes carries a mark: the PNG text "Software" (matplotlib's key for it too) or the JPEG
comment, "tlearn <version>". A path the user names for an output (`--out`, `--plot`, `--explain`) is
written only when nothing is there or what is there is tlearn's; anything else is refused before any work.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tlearn.core.errors import OutputError
from tlearn.core.version import __version__

MARK = f"tlearn {__version__}"
PNG_KEY = "Software"


def png_metadata() -> dict[str, str]:
    """The text chunk of a PNG tlearn writes (matplotlib's `metadata=`, Pillow's `pnginfo` from it)."""
    return {PNG_KEY: MARK}


def jpeg_comment() -> bytes:
    """The comment of a JPEG tlearn writes (Pillow's `comment=`)."""
    return MARK.encode()


def is_tlearn_picture(path: Path) -> bool:
    """Whether `path` is a PNG or JPEG that carries tlearn's mark."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            info = image.info
    except (OSError, UnidentifiedImageError, ValueError):  # a folder, not a picture, not readable
        return False
    mark = info.get(PNG_KEY) or info.get("comment") or ""
    if isinstance(mark, bytes):
        mark = mark.decode("utf-8", errors="replace")
    return isinstance(mark, str) and mark.startswith("tlearn")


def refuse_to_replace(path: Path, *, ours: Callable[[Path], bool], option: str, what: str) -> None:
    """Raise OutputError when `path` holds something that `ours` does not know as tlearn's: writing there
    would replace a user's file. `option` names the flag that chose the path, `what` the file tlearn
    writes there ("a picture", "a model")."""
    path = Path(path)
    if path.exists() and not ours(path):
        raise OutputError(
            f"{option} {path} exists and is not {what} that tlearn wrote: writing {what} there would replace it.",
            hint=f"Pass {option} another path, or move that file away.",
        )
