"""Find the labelled images of a dataset: a folder per class, split folders, or a CSV.

`load_dataset(path)` only lists files; it reads no pixels. Files it cannot use (a text file in a
class folder, a CSV row without a label) are recorded in `Dataset.ignored` with the reason.

Paths are kept as the file system gives them, so every file is read by its real name; `display_path`
is the one way a path becomes text for a user (messages, tables, JSON, CSV).
"""

from __future__ import annotations

import csv
import logging
import os
import stat
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from tlearn.core.errors import DataError
from tlearn.data.images import is_image_path

log = logging.getLogger(__name__)

SplitName = Literal["train", "val", "test"]
SPLIT_FOLDERS: dict[str, SplitName] = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}
_PATH_COLUMNS = ("path", "file", "filename", "image", "filepath")
_LABEL_COLUMNS = ("label", "class", "category", "target")
_JUNK = {"__MACOSX", "Thumbs.db", "desktop.ini"}


# Characters shown escaped even though they are valid text: they would end a line of a table or a
# message, or make a name read differently from what it is (bidirectional overrides).
_UNSAFE_FORMAT = frozenset("\u2028\u2029\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def display_path(path: str | os.PathLike[str]) -> str:
    """A path (or a file name) as text a user can read and any UTF-8 output can hold.

    On Linux a name is bytes: one that is not UTF-8 (a Latin-1 name from an old USB disk) reaches
    Python with each bad byte as a surrogate escape, which no UTF-8 writer accepts. Such a byte is
    shown as \\xNN (`caf\\xe9.jpg`), as are control characters; valid names come back unchanged.
    Backslashes are not doubled (Windows paths stay readable), so the text is for reading: open the
    file by its path, never by this text.
    """
    text = os.fspath(path)
    if text.isprintable():  # the common case, one C loop
        return text
    return "".join(_shown(c) for c in text)


def _shown(c: str) -> str:
    code = ord(c)
    if 0xDC80 <= code <= 0xDCFF:  # os.fsdecode's escape for the byte code - 0xDC00
        return f"\\x{code - 0xDC00:02x}"
    if unicodedata.category(c) in ("Cc", "Cs") or c in _UNSAFE_FORMAT:
        return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
    return c


@dataclass(frozen=True)
class Sample:
    path: Path
    label: str
    split: SplitName | None = None  # set when the source itself says which split a file is in


@dataclass(frozen=True)
class Ignored:
    path: Path
    reason: str


@dataclass(frozen=True)
class Dataset:
    """The files of a dataset and their labels. `classes` holds only classes with at least one file."""

    root: Path
    kind: Literal["folders", "splits", "csv"]
    classes: tuple[str, ...]
    samples: tuple[Sample, ...]
    empty_classes: tuple[str, ...] = ()
    ignored: tuple[Ignored, ...] = ()

    @property
    def has_splits(self) -> bool:
        return any(s.split is not None for s in self.samples)


def load_dataset(path: str | Path) -> Dataset:
    """List the images and labels found at `path` (a folder or a CSV file). Raises DataError."""
    root = Path(path).expanduser()
    shown = display_path(root)
    if not root.exists():
        raise DataError(
            f"No such file or folder: {shown}.",
            hint="Check the path: pass a folder with one subfolder per class, or a CSV of path,label.",
        )
    if root.is_file():
        if root.suffix.lower() != ".csv":
            raise DataError(
                f"{shown} is a file, not a dataset.",
                hint="Pass a folder with one subfolder per class, or a CSV file with path,label columns.",
            )
        return _from_csv(root)
    subdirs = [d for d in _visible_children(root) if d.is_dir()]
    split_dirs = {d: SPLIT_FOLDERS[d.name.lower()] for d in subdirs if d.name.lower() in SPLIT_FOLDERS}
    if all(_holds_images(d) for d in split_dirs):  # 'train' beside 'bus' and 'car': classes, not splits
        split_dirs = {}
    if split_dirs and len(split_dirs) == len(subdirs):
        return _from_split_folders(root, split_dirs)
    if not subdirs:
        n_images = sum(1 for f in _visible_children(root) if f.is_file() and is_image_path(f))
        if n_images:
            raise DataError(
                f"No class folders in {shown}: it holds {n_images} images directly.",
                hint=f"Put each class's images in its own subfolder ({shown}/cat/, {shown}/dog/ ...), "
                "or pass a CSV file with path,label columns.",
            )
        raise DataError(
            f"No images found in {shown}: it is empty.",
            hint="Pass a folder with one subfolder of images per class.",
        )
    if split_dirs:
        names = ", ".join(sorted(d.name + "/" for d in split_dirs))
        raise DataError(
            f"{shown} mixes split folders ({names}) with class folders.",
            hint="Use either train/ val/ test/ folders that each hold class folders, or class folders only.",
        )
    samples, empty, ignored = _from_class_folders(subdirs, split=None, walk=FileWalk(root))
    return _build(root, "folders", samples, empty, ignored)


def _from_class_folders(
    class_dirs: list[Path], split: SplitName | None, walk: FileWalk
) -> tuple[list[Sample], list[str], list[Ignored]]:
    samples: list[Sample] = []
    empty: list[str] = []
    ignored: list[Ignored] = []
    walk.own(class_dirs)
    for class_dir in sorted(class_dirs, key=lambda d: d.name):
        label = display_path(class_dir.name)  # a class name is text: it goes into tlearn.json, tables, JSON
        found = 0
        for f in walk.files(class_dir):
            if isinstance(f, Ignored):
                ignored.append(f)
            elif is_image_path(f):
                samples.append(Sample(f, label, split))
                found += 1
            else:
                ignored.append(Ignored(f, "not an image file extension"))
        if not found:
            empty.append(label)
    return samples, empty, ignored


def _from_split_folders(root: Path, split_dirs: dict[Path, SplitName]) -> Dataset:
    if "train" not in split_dirs.values():
        names = ", ".join(sorted(d.name + "/" for d in split_dirs))
        raise DataError(
            f"{display_path(root)} holds {names} but no train/ folder.",
            hint="Add a train/ folder with one subfolder per class, or pass a folder of class folders.",
        )
    samples: list[Sample] = []
    empty: set[str] = set()
    ignored: list[Ignored] = []
    walk = FileWalk(root)  # one for all splits: a file linked into train/ and test/ is listed once
    layout = {split_dir: [d for d in _visible_children(split_dir) if d.is_dir()] for split_dir in split_dirs}
    walk.own(list(layout), what="a split folder")
    walk.own([d for dirs in layout.values() for d in dirs])  # before any walk: no split takes another's photos
    for split_dir, split in sorted(split_dirs.items(), key=lambda kv: kv[0].name):
        class_dirs = layout[split_dir]
        loose = [f for f in _visible_children(split_dir) if f.is_file()]
        ignored += [Ignored(f, f"not in a class folder of {split_dir.name}/") for f in loose]
        s, e, i = _from_class_folders(class_dirs, split, walk)
        samples += s
        empty |= set(e)
        ignored += i
    with_images = {s.label for s in samples}
    return _build(root, "splits", samples, sorted(empty - with_images), ignored)


def _from_csv(csv_path: Path) -> Dataset:
    base = csv_path.parent
    try:
        with csv_path.open(newline="", encoding="utf-8-sig") as fh:
            first_line = fh.readline()
            fh.seek(0)
            reader = csv.reader(fh, delimiter=_delimiter(first_line.lstrip("\ufeff")))
            rows = list(reader)
    except csv.Error as err:  # a field over the csv module's 128 KB limit: not a CSV of paths and labels
        raise DataError(
            f"Cannot read the CSV file {display_path(csv_path)}: {err} (line {reader.line_num}).",
            hint="Each row holds a path and a label: check the quoting (an unclosed quote runs to the end).",
        ) from None
    except OSError as err:
        raise DataError(f"Cannot read the CSV file {display_path(csv_path)}: {err.strerror}.") from None
    except UnicodeDecodeError as err:
        raise DataError(
            f"Cannot read the CSV file {display_path(csv_path)}: it is not UTF-8 text "
            f"({err.reason} at byte {err.start}).",
            hint="Save it as UTF-8 (CSV UTF-8 in a spreadsheet's Save As).",
        ) from None
    if not rows:
        raise DataError(f"The CSV file {display_path(csv_path)} is empty.", hint="It needs a header row: path,label.")
    header = [h.strip().lower() for h in rows[0]]
    path_col = next((header.index(c) for c in _PATH_COLUMNS if c in header), None)
    label_col = next((header.index(c) for c in _LABEL_COLUMNS if c in header), None)
    if path_col is None or label_col is None:
        raise DataError(
            f"The CSV file {display_path(csv_path)} needs 'path' and 'label' columns. Got header: {','.join(rows[0])}.",
            hint="Make the first row: path,label (paths relative to the CSV file).",
        )
    split_col = header.index("split") if "split" in header else None
    samples: list[Sample] = []
    ignored: list[Ignored] = []
    outside: list[tuple[int, str]] = []
    row_of: dict[tuple[str, str], int] = {}  # (file, label) -> the line that gave it first
    for line_no, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        cells = [c.strip() for c in row] + [""] * len(header)
        rel, label = cells[path_col], cells[label_col]
        where = csv_path.with_name(f"{csv_path.name}:{line_no}")
        if not rel or not label:
            ignored.append(Ignored(where, "row without a path or a label"))
            continue
        split = _csv_split(cells[split_col], where) if split_col is not None else None
        rel = _portable(rel, base)
        key = (os.path.normpath(base / rel), label)
        if key in row_of:  # the same row twice: one image (under two labels, a conflict the check names)
            ignored.append(Ignored(where, f"the same file and label as line {row_of[key]}"))
            continue
        row_of[key] = line_no
        samples.append(Sample(base / rel, label, split))
        if not _inside(base / rel, base):
            outside.append((line_no, rel))
    if outside:
        _warn_outside(csv_path, outside)
    if samples and any(s.split for s in samples) and not all(s.split for s in samples):
        raise DataError(
            f"The CSV file {display_path(csv_path)} gives a split for some rows but not for others.",
            hint="Fill the split column (train, val or test) on every row, or drop the column.",
        )
    if samples and any(s.split for s in samples) and not any(s.split == "train" for s in samples):
        raise DataError(f"The CSV file {display_path(csv_path)} has a split column but no 'train' rows.")
    return _build(csv_path, "csv", samples, [], ignored)


def _delimiter(header: str) -> str:
    """The comma, or the semicolon or tab that a spreadsheet saved the CSV with (Excel does in many European
    locales): the first that splits the header row into a path and a label column."""
    for sep in (",", ";", "\t"):
        try:
            names = {cell.strip().lower() for cell in next(csv.reader([header], delimiter=sep), [])}
        except csv.Error:  # not a header at all: the reader of the whole file says what is wrong
            return ","
        if names & set(_PATH_COLUMNS) and names & set(_LABEL_COLUMNS):
            return sep
    return ","


def _holds_images(folder: Path) -> bool:
    """A folder of images and no subfolders. Folders under split names that all are such are classes (a 'train'
    class beside 'bus' and 'car'): a split folder holds class folders. Beside a split of class folders, such a
    folder stays a split (a test/ of unlabelled photos beside train/cat/ and train/dog/)."""
    children = list(_visible_children(folder))
    return not any(c.is_dir() for c in children) and any(c.is_file() and is_image_path(c) for c in children)


def _portable(rel: str, base: Path) -> str:
    """A path that a CSV written on Windows gives with backslashes (img\\cats\\a.jpg), with slashes, unless a file of
    that very name exists (a backslash is a legal character in a name here)."""
    if "\\" not in rel or (base / rel).exists():
        return rel
    return rel.replace("\\", "/")


def _inside(path: Path, folder: Path) -> bool:
    """Does `path` lie in `folder`, by its name ('..' counted, links not followed)?"""
    return Path(os.path.normpath(path.absolute())).is_relative_to(os.path.normpath(folder.absolute()))


def _warn_outside(csv_path: Path, outside: list[tuple[int, str]]) -> None:
    """One line for the rows that name files outside the CSV's folder: a warning, not an error.

    Absolute paths and '../images/' beside a labels/ folder are common on purpose (a CSV written by a
    script, labels kept apart from photos), so refusing them would break datasets that work. But a
    row that leaves the folder by mistake reads images the user did not mean to train on, and a
    dataset that reaches outside its folder breaks when the folder is copied alone: say so once,
    with the count and the first row, and go on.
    """
    line_no, rel = outside[0]
    rows = "1 row" if len(outside) == 1 else f"{len(outside)} rows"
    log.warning(
        "%s of %s name%s files outside its folder (first: %s:%d, %s); they are used as given. A copy of the "
        "folder alone would lack them, and split.json keeps their full paths.",
        rows,
        display_path(csv_path.name),
        "s" if len(outside) == 1 else "",
        display_path(csv_path.name),
        line_no,
        display_path(rel),
    )


def _csv_split(value: str, where: Path) -> SplitName | None:
    """The split a CSV row names ("valid" and the other folder names count too); None when blank.

    An unknown value is an error rather than a skipped row: a typo there would move images between
    the parts without a word, and test scores would then be measured on training images.
    """
    if not value:
        return None
    if value.lower() not in SPLIT_FOLDERS:
        raise DataError(
            f"Unknown split '{value}' in {display_path(where)}.",
            hint="The split column takes train, val or test (or leave it empty on every row).",
        )
    return SPLIT_FOLDERS[value.lower()]


def _build(
    root: Path,
    kind: Literal["folders", "splits", "csv"],
    samples: list[Sample],
    empty: list[str],
    ignored: list[Ignored],
) -> Dataset:
    if not samples:
        raise DataError(
            f"No images found in {display_path(root)}.",
            hint="Supported formats: JPEG, PNG, BMP, GIF, WebP, TIFF, one subfolder per class.",
        )
    classes = tuple(sorted({s.label for s in samples}))
    return Dataset(root, kind, classes, tuple(samples), tuple(sorted(empty)), tuple(ignored))


def _visible_children(folder: Path) -> list[Path]:
    try:
        children = sorted(folder.iterdir())
    except PermissionError:
        raise DataError(f"Permission denied reading {display_path(folder)}.") from None
    return [c for c in children if not c.name.startswith(".") and c.name not in _JUNK]


class FileWalk:
    """The files below folders, each listed once: what training and `tlearn predict` read.

    Links are followed, as a user who links a folder of photos into a class folder expects, but each
    folder is entered once (by device and inode), so a loop such as `ln -s . loop` is seen at once,
    not followed 40 times until the kernel refuses. A file reached a second time (a link, a hard
    link) is not listed again: training on two copies of one file would put one in train and the
    other in test. Hidden files and the junk of other systems (__MACOSX, Thumbs.db) are skipped.
    A link to `root` or to a folder listed on its own (`own`: another class's) is not followed either:
    through it, one class would take another's photos.
    """

    def __init__(self, root: Path | None = None) -> None:
        self.root = root  # names in reasons are relative to it
        self._folders: dict[tuple[int, int] | str, Path] = {}
        self._files: dict[tuple[int, int] | str, Path] = {}
        self._own: dict[tuple[int, int] | str, str] = {}  # folder -> why a link to it is not followed
        if root is not None:
            self._reserve(root, "a link to the dataset's folder: not followed")

    def own(self, folders: Sequence[Path], what: str = "a class folder") -> None:
        """Folders that are listed on their own (class or split folders): a link to one is not followed."""
        for folder in folders:
            self._reserve(folder, f"a link to {self._name(folder)}, {what} of its own: not followed")

    def _reserve(self, folder: Path, why: str) -> None:
        try:
            self._own.setdefault(_identity(folder, folder.stat()), why)
        except OSError:
            pass

    def files(self, folder: Path) -> Iterator[Path | Ignored]:
        """Regular files below `folder`, sorted, and an Ignored (with why) for each link not followed."""
        try:
            key = _identity(folder, folder.stat())
        except OSError:
            return
        if key in self._folders:
            return
        self._folders[key] = folder
        yield from self._below(folder)

    def listed(self, path: Path) -> bool:
        """Has the folder or file at `path` been listed already?"""
        try:
            key = _identity(path, path.stat())
        except OSError:
            return False
        return key in self._folders or key in self._files

    def add_file(self, path: Path) -> bool:
        """Record a file named directly; False when it was listed already."""
        try:
            key = _identity(path, path.stat())
        except OSError:
            return True  # not there: the caller reports it when it reads it
        return self._files.setdefault(key, path) is path

    def _below(self, folder: Path) -> Iterator[Path | Ignored]:
        for child in _visible_children(folder):
            try:
                st = child.stat()  # follows a link
            except FileNotFoundError:
                yield Ignored(child, "a link to nothing (no such file)")
                continue
            except OSError as err:
                yield Ignored(child, f"cannot be read ({err.strerror})")
                continue
            key = _identity(child, st)
            if stat.S_ISDIR(st.st_mode):
                if key in self._folders:
                    yield Ignored(child, f"a link to {self._name(self._folders[key])}, listed already")
                elif key in self._own:
                    yield Ignored(child, self._own[key])
                else:
                    self._folders[key] = child
                    yield from self._below(child)
            elif stat.S_ISREG(st.st_mode):
                first = self._files.setdefault(key, child)
                if first is child:
                    yield child
                else:
                    how = "a link" if child.is_symlink() or first.is_symlink() else "a hard link"
                    yield Ignored(child, f"same file as {self._name(first)} ({how})")
            else:
                yield Ignored(child, "not a regular file (a pipe, socket or device)")

    def _name(self, path: Path) -> str:
        if self.root is not None and path.is_relative_to(self.root):
            return display_path(path.relative_to(self.root).as_posix())
        return display_path(path)


def _identity(path: Path, st: os.stat_result) -> tuple[int, int] | str:
    """What makes two paths one file: device and inode; the resolved path where a file system has no
    inode numbers (st_ino 0, as FAT drives on Windows may give)."""
    return (st.st_dev, st.st_ino) if st.st_ino else str(path.resolve())
