"""What the real-data tests (marker `real_data`) read from ../shared, and a skip per missing resource.

The datasets and the weights arrive separately (a machine may have either, both or neither), so each
test names every resource it reads and skips, saying which ones are missing, when any is absent:

    @pytest.mark.real_data
    @needs(MOBILENET, FLOWERS)
    def test_flowers_with_the_shared_weights() -> None: ...
"""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import FLOWERS, MOBILENET, SHARED

IMAGENET_LABELS = MOBILENET.parent / "imagenet_labels.txt"
__all__ = ["FLOWERS", "IMAGENET_LABELS", "MOBILENET", "SHARED", "missing", "needs"]


def missing(*resources: Path) -> list[Path]:
    """The resources that are not there (a folder counts only when it holds something)."""
    return [p for p in resources if not (p.is_file() or (p.is_dir() and any(p.iterdir())))]


def needs(*resources: Path) -> pytest.MarkDecorator:
    """Skip unless every resource is there; the reason names each missing one."""
    absent = missing(*resources)
    return pytest.mark.skipif(bool(absent), reason=skip_reason(absent))


def skip_reason(absent: list[Path]) -> str:
    if not absent:
        return ""
    return "needs " + " and ".join(_shown(p) for p in absent) + " (not found)"


def _shown(path: Path) -> str:
    """The path as ../shared/... when it is under the shared folder."""
    try:
        return str(Path("..") / path.relative_to(SHARED.parent))
    except ValueError:
        return str(path)
