"""A folder of photos without labels, read and checked like the labelled ones (`tlearn train --unlabelled`).

The same scan decodes and hashes them (unreadable files are listed and skipped), and any photo that is
an exact or near copy of a labelled image (train, validation or test alike) is left out: a copy of a
test image trained on with its predicted label would leak the test into training. Copies within the
folder are kept once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from tlearn.core.errors import DataError
from tlearn.core.progress import Progress, no_progress
from tlearn.core.words import verb
from tlearn.data.checks import copies_in, find_duplicates
from tlearn.data.images import is_image_path
from tlearn.data.scan import Pixels, ScannedImages, Unreadable, scan_images
from tlearn.data.sources import FileWalk, Sample, display_path


@dataclass(frozen=True)
class Excluded:
    path: Path
    copy_of: Path  # the labelled image (or the earlier unlabelled one) it copies


@dataclass(frozen=True)
class UnlabelledImages:
    """The usable photos of the folder (parallel tuples) and what was left out, with why."""

    folder: Path
    paths: tuple[Path, ...]
    pixels: Pixels
    sha256: tuple[str, ...]
    unreadable: tuple[Unreadable, ...]
    excluded: tuple[Excluded, ...]  # copies of labelled images, and repeats within the folder

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def found(self) -> int:
        """Image files in the folder, usable or not."""
        return len(self.paths) + len(self.unreadable) + len(self.excluded)


def check_unlabelled_place(folder: Path, *, data: Path) -> None:
    """Raise DataError when the `--unlabelled` folder lies in a folder dataset (or is it): its photos would be
    read as a labelled class too. A CSV names its images, so a folder beside it is fine."""
    root = Path(data).expanduser().resolve()
    if root.is_dir() and Path(folder).expanduser().resolve().is_relative_to(root):
        raise DataError(
            f"--unlabelled {display_path(folder)} is inside the dataset folder {display_path(data)}: its photos "
            "would be read as a labelled class too.",
            hint="Move the photos without labels out of the dataset folder, and pass their new folder.",
        )


def load_unlabelled(
    folder: str | Path,
    labelled: ScannedImages,
    *,
    short_side: int,
    resample: Image.Resampling = Image.Resampling.BILINEAR,
    progress: Progress = no_progress,
    write_cache: bool = True,
) -> UnlabelledImages:
    """Scan the images below `folder` (recursively) at the working size; leave out copies of `labelled`."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise DataError(
            f"--unlabelled {display_path(folder)} is not a folder.", hint="Pass a folder of photos without labels."
        )
    files = [f for f in FileWalk(folder).files(folder) if isinstance(f, Path) and is_image_path(f)]
    if not files:
        raise DataError(f"--unlabelled {display_path(folder)} holds no image files.")
    scanned = scan_images(
        [Sample(f, "") for f in files], short_side=short_side, resample=resample, progress=progress,
        write_cache=write_cache,
    )  # fmt: skip
    copy_of = copies_in(labelled, scanned)
    excluded = [
        Excluded(scanned.samples[i].path, labelled.samples[j].path) for i, j in enumerate(copy_of) if j is not None
    ]
    drop = {i for i, j in enumerate(copy_of) if j is not None}
    for group in find_duplicates(scanned):  # the first of each group of copies within the folder stays
        kept = [i for i in group.members if i not in drop]
        for i in kept[1:]:
            excluded.append(Excluded(scanned.samples[i].path, scanned.samples[kept[0]].path))
            drop.add(i)
    keep = np.array([i for i in range(len(scanned)) if i not in drop], dtype=np.int64)
    if not len(keep):
        why = [f"{len(drop)} {verb(len(drop), 'copies a labelled image', 'copy labelled images')}"] if drop else []
        why += [f"{len(scanned.unreadable)} cannot be read"] if scanned.unreadable else []
        raise DataError(
            f"--unlabelled {display_path(folder)}: none of its {len(files)} image files can be used: {', '.join(why)}.",
            hint="Pass a folder of photos that are not in the dataset yet.",
        )
    return UnlabelledImages(
        folder=folder,
        paths=tuple(scanned.samples[i].path for i in keep),
        pixels=scanned.pixels.subset(keep),
        sha256=tuple(scanned.sha256[i] for i in keep),
        unreadable=scanned.unreadable,
        excluded=tuple(excluded),
    )
