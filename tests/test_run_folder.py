"""The run folder: which --out a run refuses, and how a new bundle takes the place of an old one.

No training here: folders are made by hand with the files a run writes, so each case takes milliseconds.
End-to-end runs through the CLI are in test_reliability_run.py.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from tlearn.core.errors import ConfigError, OutputError
from tlearn.training.run_folder import abandon, check_out, leftover, open_folder, publish


def bundle(folder: Path, tag: str = "old") -> Path:
    """A folder holding what a finished run writes; every file says which run wrote it."""
    folder.mkdir(parents=True)
    for name in ("tlearn.json", "model.safetensors", "split.json", "check.json", "predictions.csv"):
        (folder / name).write_text(tag)
    return folder


def contents(folder: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(folder.iterdir()) if p.is_file()}


def beside(folder: Path) -> list[str]:
    """Everything left next to `folder` other than it: temporary folders, old bundles moved aside."""
    return sorted(p.name for p in folder.parent.iterdir() if p.name.startswith(f".{folder.name}."))


@pytest.fixture
def data(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    for cls in ("cat", "dog"):
        (folder / cls).mkdir(parents=True)
        (folder / cls / "1.jpg").write_bytes(b"x")
    return folder


def test_an_existing_bundle_is_refused_with_what_to_pass(tmp_path: Path, data: Path) -> None:
    out = bundle(tmp_path / "run")
    with pytest.raises(OutputError) as info:
        check_out(out, data=data)
    assert info.value.message == f"--out {out} already holds a bundle."
    assert info.value.hint == "Pass --overwrite to replace it, or another --out."
    check_out(out, data=data, overwrite=True)  # replacing it is allowed when asked


def test_a_folder_an_interrupted_run_left_is_refused_with_resume_in_the_hint(tmp_path: Path, data: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "split.json").write_text("{}")
    (out / "checkpoint.pt").write_bytes(b"x")
    with pytest.raises(OutputError, match=r"holds an unfinished run \(no tlearn.json\)") as info:
        check_out(out, data=data)
    hint = f"Pass --resume {out} to continue its interrupted run, --overwrite to replace it, or another --out."
    assert info.value.hint == hint


def test_a_folder_of_other_files_is_refused_even_with_overwrite(tmp_path: Path, data: Path) -> None:
    out = tmp_path / "documents"
    out.mkdir()
    (out / "thesis.tex").write_text("years of work")
    for overwrite in (False, True):
        with pytest.raises(OutputError, match="is a folder of other files, not a tlearn run folder"):
            check_out(out, data=data, overwrite=overwrite)
    assert (out / "thesis.tex").read_text() == "years of work"


def test_a_new_or_empty_folder_is_fine(tmp_path: Path, data: Path) -> None:
    check_out(tmp_path / "new" / "run", data=data)
    (tmp_path / "empty").mkdir()
    check_out(tmp_path / "empty", data=data)


def test_a_file_or_a_path_through_a_file_is_refused(tmp_path: Path, data: Path) -> None:
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(OutputError, match=r"notes.txt is a file: a run folder must be a folder"):
        check_out(tmp_path / "notes.txt", data=data)
    with pytest.raises(OutputError, match=r"is inside .*notes.txt, which is a file"):
        check_out(tmp_path / "notes.txt" / "run", data=data)


def test_a_folder_inside_the_data_folder_is_refused(tmp_path: Path, data: Path) -> None:
    with pytest.raises(OutputError, match=r"is inside the dataset folder .*photos: the next run would read it as"):
        check_out(data / "plots", data=data)
    # a path that only resolves inside it counts too
    with pytest.raises(OutputError, match="is inside the dataset folder"):
        check_out(tmp_path / "elsewhere" / ".." / "photos" / "run", data=data)


def test_a_csv_dataset_takes_a_run_folder_beside_it(
    tmp_path: Path, data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A CSV names its images and classes: no folder beside it becomes a class. `cd project; tlearn train
    # labels.csv` was refused ("The default run folder runs/ is inside ...").
    table = data / "labels.csv"
    table.write_text("path,label\ncat/1.jpg,cat\n")
    check_out(data / "runs" / "one", data=table)
    monkeypatch.chdir(data)
    check_out(None, data=Path("labels.csv"))
    with pytest.raises(OutputError, match="holds the dataset"):  # but never over the CSV's own folder
        check_out(data, data=table, overwrite=True)


def test_a_folder_that_holds_the_dataset_is_refused(tmp_path: Path, data: Path) -> None:
    with pytest.raises(OutputError, match="holds the dataset"):
        check_out(tmp_path, data=data, overwrite=True)


def test_the_default_folder_is_refused_when_run_from_inside_the_data_folder(
    data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(data)
    with pytest.raises(OutputError, match=r"The default run folder runs/ is inside the dataset folder"):
        check_out(None, data=Path("."))


def test_a_read_only_place_is_one_line_naming_the_folder(
    tmp_path: Path, data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = Path.mkdir

    def read_only(self: Path, *args: object, **kwargs: object) -> None:
        if self.is_relative_to(tmp_path / "ro"):
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        real(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "mkdir", read_only)
    with pytest.raises(OutputError) as info:
        open_folder(tmp_path / "ro" / "run", data=data)
    assert info.value.message == f"Cannot create the run folder {tmp_path / 'ro' / 'run'}: Read-only file system."
    assert info.value.hint is not None and "read-only" in info.value.hint


def test_a_new_run_writes_beside_its_folder_and_is_renamed_into_place(tmp_path: Path, data: Path) -> None:
    out = tmp_path / "run"
    folder = open_folder(out, data=data)
    assert folder.work.parent == out.parent and folder.work.name == f".run.tmp-{os.getpid()}"
    assert not out.exists()
    (folder.work / "tlearn.json").write_text("new")
    assert publish(folder) == out
    assert contents(out) == {"tlearn.json": "new"} and beside(out) == []


def test_overwrite_replaces_the_whole_bundle(tmp_path: Path, data: Path) -> None:
    out = bundle(tmp_path / "run")
    (out / "history.csv").write_text("old curves")
    folder = open_folder(out, data=data, overwrite=True)
    assert contents(out)["tlearn.json"] == "old"  # untouched while the new run works
    (folder.work / "tlearn.json").write_text("new")
    publish(folder)
    assert contents(out) == {"tlearn.json": "new"}  # nothing of the old run is left, its history included
    assert beside(out) == []


def test_a_failed_retrain_leaves_the_old_bundle_whole(tmp_path: Path, data: Path) -> None:
    out = bundle(tmp_path / "run")
    before = contents(out)
    folder = open_folder(out, data=data, overwrite=True)
    (folder.work / "split.json").write_text("new")  # what a run writes first
    abandon(folder)
    assert contents(out) == before and beside(out) == []


def test_a_failed_first_run_leaves_nothing(tmp_path: Path, data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    folder = open_folder(None, data=data)
    assert folder.final == Path("runs/photos") and folder.final.is_dir()  # the name is taken at once
    assert open_folder(None, data=data).final == Path("runs/photos-2")  # so a second run picks the next
    (folder.work / "split.json").write_text("new")
    abandon(folder)
    assert not Path("runs/photos").exists() and beside(Path("runs/photos")) == []


def test_a_failed_run_with_a_checkpoint_can_be_resumed(tmp_path: Path, data: Path) -> None:
    out = tmp_path / "run"
    folder = open_folder(out, data=data)
    (folder.work / "checkpoint.pt").write_bytes(b"epoch 5")
    abandon(folder)
    assert (out / "checkpoint.pt").read_bytes() == b"epoch 5"  # nothing was there: renamed into place
    resumed = open_folder(out, data=data, resume=True)
    assert resumed.work == resumed.final == out


def test_a_killed_retrain_is_found_by_resume_and_replaces_the_old_bundle_when_done(tmp_path: Path, data: Path) -> None:
    out = bundle(tmp_path / "run")
    killed = tmp_path / ".run.tmp-99999"  # what a run killed before it could clean up leaves
    killed.mkdir()
    (killed / "checkpoint.pt").write_bytes(b"epoch 5")
    assert leftover(out) == killed
    with pytest.raises(OutputError, match=r"already holds a bundle") as info:
        check_out(out, data=data)
    assert f"--resume {out}" in (info.value.hint or "")

    resumed = open_folder(out, data=data, resume=True)
    assert resumed.final == out and resumed.work == killed
    (killed / "tlearn.json").write_text("resumed")
    publish(resumed)
    assert contents(out) == {"checkpoint.pt": "epoch 5", "tlearn.json": "resumed"} and beside(out) == []


def test_resume_with_nothing_to_resume_says_so(tmp_path: Path, data: Path) -> None:
    out = bundle(tmp_path / "run")
    with pytest.raises(ConfigError, match=r"Nothing to resume in .*run: it has no checkpoint.pt"):
        check_out(out, data=data, resume=True)
