"""The run folder: where a run writes, and how its bundle takes the place of what was there.

A new run writes into a temporary folder beside its target (`.NAME.tmp-PID`) and renames it into place
at the end, so a crash or Ctrl-C never leaves a folder that mixes a new split with an old model: the
target holds the old bundle, whole, or the new one. Replacing a bundle takes `overwrite` (--overwrite):
the old one is moved aside, the new one renamed in, then the old one deleted. A resumed run works in
its folder in place, where its checkpoint is.

A run that fails after training some epochs keeps its checkpoint for --resume: renamed into place when
nothing was there, else left in its temporary folder, where `--resume TARGET` finds it (as it finds the
folder of a run that was killed before it could clean up).

Every check here is about paths only and runs before any work: an existing bundle, a file, a folder
inside a dataset folder (the next run would read it as a class), a folder that holds the dataset (or its CSV).
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from tlearn.artifacts.bundle import CHECK_FILE, CONFIG_FILE, SPLIT_FILE
from tlearn.artifacts.history import HISTORY_FILE
from tlearn.core.errors import ConfigError, FileSystemError, OutputError
from tlearn.training.loop import CHECKPOINT_FILE

log = logging.getLogger(__name__)

RUN_FILES = (CONFIG_FILE, SPLIT_FILE, CHECK_FILE, CHECKPOINT_FILE, HISTORY_FILE)  # what marks a run folder
RUNS = Path("runs")  # default runs/<data name>, runs/<data name>-2 ...


@dataclass(frozen=True)
class RunFolder:
    """`work` is where the run writes; `final` where its bundle ends up (the same folder when resuming)."""

    final: Path
    work: Path
    reserved: bool = False  # `final` was created empty to hold a default name (runs/NAME-2) for this run
    overwrite: bool = False  # replace the run in `final`, and the interrupted runs left beside it

    @property
    def in_place(self) -> bool:
        return self.work == self.final


def default_out(data: Path) -> Path:
    """runs/<data name>, or the first of runs/<data name>-2, -3 ... that does not exist."""
    base = RUNS / (Path(data).stem or "run")
    out, n = base, 2
    while out.exists():
        out, n = base.with_name(f"{base.name}-{n}"), n + 1
    return out


def check_out(out: Path | None, *, data: Path, overwrite: bool = False, resume: bool = False) -> None:
    """Raise OutputError if `out` (None: the default under runs/) cannot take this run's bundle, and
    ConfigError if `resume` and there is no interrupted run to continue in `out`."""
    if out is not None:
        check_place(out, data=data)
    elif not resume:
        check_place(RUNS, data=data, name="The default run folder runs/")
    if resume:
        _resume_folder(out)  # raises ConfigError when there is nothing to resume
    elif out is not None:
        check_free(out, overwrite=overwrite)


def check_place(out: Path, *, data: Path, name: str | None = None) -> None:
    """Raise OutputError if a folder cannot be created at `out`, or would mix with the dataset."""
    said = name or f"--out {out}"
    full = _absolute(out)
    for p in (full, *full.parents):
        if p.exists() or p.is_symlink():
            if not p.is_dir():
                where = "is a file" if p == full else f"is inside {p}, which is a file"
                raise OutputError(
                    f"{said} {where}: a run folder must be a folder.",
                    hint="Pass --out the path of a new folder (a bundle is a folder of files).",
                )
            break
    dataset = _data_folder(data)
    if dataset.exists():  # a missing dataset is for loading it to report
        # A folder inside a folder dataset becomes a class of the next run. A CSV names its images and
        # classes, so a run folder beside it (`cd project; tlearn train labels.csv` -> runs/) is harmless.
        if full.is_relative_to(dataset) and not Path(data).expanduser().is_file():
            raise OutputError(
                f"{said} is inside the dataset folder {dataset}: the next run would read it as a class.",
                hint=f"Pass --out a folder outside {dataset}.",
            )
        if dataset.is_relative_to(full):
            raise OutputError(f"{said} holds the dataset {dataset}.", hint=f"Pass --out a folder outside {dataset}.")
    if Path.cwd().resolve().is_relative_to(full):
        raise OutputError(f"{said} holds the current folder.", hint="Pass --out a new folder, such as runs/NAME.")


def check_free(out: Path, *, overwrite: bool = False, name: str | None = None, can_resume: bool = True) -> None:
    """Raise OutputError if `out` holds a run (unless `overwrite`) or files of its own.

    `can_resume` False leaves --resume out of the hints (tlearn compare has none)."""
    said = name or f"--out {out}"
    folder = Path(out).expanduser()
    left = leftover(folder)
    if folder.is_dir() and any(folder.iterdir()):
        if not is_run_folder(folder):
            raise OutputError(
                f"{said} is a folder of other files, not a tlearn run folder.",
                hint="Pass --out a new or empty folder: a bundle is a folder of its own.",
            )
        if overwrite:
            return
        resumable = can_resume and ((folder / CHECKPOINT_FILE).is_file() or left is not None)
        what = "a bundle" if (folder / CONFIG_FILE).is_file() else f"an unfinished run (no {CONFIG_FILE})"
        raise OutputError(f"{said} already holds {what}.", hint=_replace_hint(out, resumable))
    if left is not None and not overwrite:
        raise OutputError(f"{said} has an interrupted run beside it, in {left}.", hint=_replace_hint(out, can_resume))


def _replace_hint(out: Path, resumable: bool) -> str:
    resume = f"--resume {out} to continue its interrupted run, " if resumable else ""
    return f"Pass {resume}--overwrite to replace it, or another --out."


def is_run_folder(folder: Path) -> bool:
    """Does `folder` hold files a tlearn run writes (a bundle, or what an unfinished run left)?"""
    return any((Path(folder) / f).exists() for f in RUN_FILES)


def leftover(final: Path) -> Path | None:
    """The temporary folder a failed or killed run left beside `final` with a checkpoint; the newest."""
    final = _absolute(final)
    if not final.parent.is_dir():
        return None
    found = [p for p in final.parent.glob(f".{final.name}.tmp-*") if (p / CHECKPOINT_FILE).is_file()]
    return max(found, key=lambda p: (p / CHECKPOINT_FILE).stat().st_mtime, default=None)


def open_folder(out: Path | None, *, data: Path, overwrite: bool = False, resume: bool = False) -> RunFolder:
    """Check `out` and create the folder the run writes into. Raises OutputError, ConfigError (resume)."""
    check_out(out, data=data, overwrite=overwrite, resume=resume)
    if resume:
        return _resume_folder(out)
    final, reserved = (Path(out).expanduser(), False) if out is not None else (_reserve(data), True)
    work = _absolute(final).with_name(f".{_absolute(final).name}.tmp-{os.getpid()}")
    try:
        if work.exists():  # left by an earlier process with this id
            shutil.rmtree(work)
        work.mkdir(parents=True)
    except OSError as err:
        if reserved:
            final.rmdir()
        raise _cannot_create(final, err) from None
    return RunFolder(final, work, reserved, overwrite)


def publish(folder: RunFolder) -> Path:
    """Rename the finished run into place (what was there moved aside, then deleted); returns `final`."""
    if folder.in_place:
        return folder.final
    final = _absolute(folder.final)
    aside = None
    if final.is_dir() and not final.is_symlink() and not any(final.iterdir()):
        final.rmdir()  # empty: the default name this run reserved, or a folder made for it
    elif final.exists() or final.is_symlink():
        aside = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, aside)
    try:
        os.replace(folder.work, final)
    except OSError:
        if aside is not None:
            os.replace(aside, final)
        raise
    replaced = list(final.parent.glob(f".{final.name}.tmp-*")) if folder.overwrite else []
    for old in [aside, *replaced]:
        if old is not None:
            _remove(old)
    return folder.final


def abandon(folder: RunFolder) -> None:
    """Clean up after a run that failed: the old bundle stays as it was.

    The work folder goes, unless it holds a checkpoint: then it is renamed into place when nothing was
    there (`--resume` continues it), else left where it is (`--resume` finds it: see `leftover`).
    """
    if folder.in_place:
        return
    final = _absolute(folder.final)
    try:
        if (folder.work / CHECKPOINT_FILE).is_file():
            if not final.exists() or (final.is_dir() and not any(final.iterdir())):
                publish(folder)
            return
        _remove(folder.work)
        if folder.reserved and final.is_dir() and not any(final.iterdir()):
            final.rmdir()
    except OSError as err:  # cleaning up must not hide why the run failed
        log.warning("Could not clean up %s: %s", folder.work, err)


def _resume_folder(out: Path | None) -> RunFolder:
    """The folder of the run to continue: `out` itself, or the temporary folder it left beside `out`."""
    folder = Path(out).expanduser() if out is not None else None
    if folder is not None and (folder / CHECKPOINT_FILE).is_file():
        return RunFolder(folder, folder)
    left = leftover(folder) if folder is not None else None  # a run killed before it could clean up
    if folder is None:
        raise ConfigError("resume=True needs out: the folder of the run to continue (--resume DIR).")
    if left is None:
        raise ConfigError(
            f"Nothing to resume in {folder}: it has no {CHECKPOINT_FILE} (the run finished, or never started).",
            hint="Start a new run without --resume.",
        )
    log.info("Resuming the interrupted run left in %s.", left)
    return RunFolder(folder, left)


def _reserve(data: Path) -> Path:
    """Create the default run folder empty, so that two runs started together do not pick the same."""
    while True:
        out = default_out(data)
        try:
            out.mkdir(parents=True)
            return out
        except FileExistsError:
            continue
        except OSError as err:
            raise _cannot_create(out, err) from None


def _cannot_create(folder: Path, err: OSError) -> OutputError:
    known = FileSystemError.from_os_error(err)
    reason = err.strerror or str(err)
    return OutputError(
        f"Cannot create the run folder {folder}: {reason}.",
        hint=known.hint if known is not None and known.hint else "Pass --out a folder you can write to.",
    )


def _remove(path: Path) -> None:
    if path.is_symlink():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path, ignore_errors=True)


def _data_folder(data: Path) -> Path:
    """The folder the dataset reads: the folder itself, or the CSV file's folder."""
    data = Path(data).expanduser().resolve()
    return data.parent if data.is_file() else data


def _absolute(path: Path | str) -> Path:
    """`path` made absolute and normalised ("runs/../x" -> "x"), symlinks resolved except the last part."""
    p = Path(os.path.abspath(Path(path).expanduser()))
    return p.parent.resolve() / p.name if p.name else p
