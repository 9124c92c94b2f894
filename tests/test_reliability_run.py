"""`tlearn train` and `tlearn compare` when things go wrong: what the user reads, the exit code, the files left.

Each test is named after what a user sees. Runs use the tiny timm model at 64 px; most are refused
before any training, so they take a second or two.
"""

from __future__ import annotations

import csv
import errno
import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

import tlearn
from tlearn.core.errors import OutputError

TINY = ["--backbone", "test_efficientnet", "--weights", "none", "--input-size", "64"]
FEATURES = ["--method", "features", *TINY, "--C", "1"]
FAST_FINETUNE = ["--method", "finetune", *TINY, "--views", "1", "--head-epochs", "3", "--head-lr", "0.05"]
FAST_FINETUNE += ["--epochs", "2", "--lr", "0.01", "--patience", "0"]


def digest(folder: Path) -> dict[str, str]:
    """Every file under `folder` by relative path, with a hash of its bytes."""
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def beside(folder: Path) -> list[str]:
    """Temporary folders and moved-aside bundles left next to `folder`."""
    return sorted(p.name for p in folder.parent.iterdir() if p.name.startswith(f".{folder.name}."))


def one_error(err: str) -> str:
    """The error line of stderr (an optional hint line may follow); fails on anything else, such as a traceback."""
    lines = err.strip().splitlines()
    assert 1 <= len(lines) <= 2 and lines[0].startswith("Error: "), err
    assert len(lines) == 1 or lines[1].startswith("Hint: "), err
    assert "bug in tlearn" not in err and "Traceback" not in err
    return err.strip()


@pytest.fixture
def old_bundle(tiny_bundle: Path, tmp_path: Path) -> Path:
    """A private copy of a finished bundle (trained once per session) to retrain over."""
    return Path(shutil.copytree(tiny_bundle, tmp_path / "run"))


# --- 1. an existing bundle -------------------------------------------------------------------------------


def test_train_into_an_existing_bundle_is_refused_and_says_to_pass_overwrite(  # type: ignore[no-untyped-def]
    run_cli, shapes: Path, old_bundle: Path
) -> None:
    before = digest(old_bundle)
    res = run_cli("train", shapes, *FEATURES, "--out", old_bundle)
    assert res.code == 1
    text = one_error(res.err)
    assert f"--out {old_bundle} already holds a bundle." in text
    assert "--overwrite" in text and "another --out" in text
    assert digest(old_bundle) == before and beside(old_bundle) == []


def test_python_api_refuses_an_existing_bundle_unless_overwrite(shapes: Path, old_bundle: Path) -> None:
    with pytest.raises(OutputError, match="already holds a bundle"):
        tlearn.train(shapes, method="features", backbone="test_efficientnet", weights="none", out=old_bundle)


def test_overwrite_replaces_the_old_bundle_whole(run_cli, shapes: Path, old_bundle: Path) -> None:  # type: ignore[no-untyped-def]
    (old_bundle / "history.csv").write_text("phase,epoch\nhead,1\n")  # curves of an older kind of run
    old_created = json.loads((old_bundle / "tlearn.json").read_text())["created"]
    res = run_cli("train", shapes, *FEATURES, "--head", "svm", "--out", old_bundle, "--overwrite")
    assert res.code == 0, res.err
    doc = json.loads((old_bundle / "tlearn.json").read_text())
    assert doc["details"]["head"] == "svm" and doc["created"] >= old_created
    assert not (old_bundle / "history.csv").exists()  # nothing of the old run is left over
    assert f"run folder <code>{old_bundle}</code>" in (old_bundle / "report.html").read_text()
    assert beside(old_bundle) == []
    assert tlearn.load(old_bundle).predict(shapes / "red_circle" / "red_circle_000.jpg") == ["red_circle"]


def test_ctrl_c_during_a_retrain_leaves_the_old_bundle_whole_and_exits_130(  # type: ignore[no-untyped-def]
    run_cli, shapes: Path, old_bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = digest(old_bundle)

    def ctrl_c(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("tlearn.training.feature_method.fit_feature_method", ctrl_c)
    res = run_cli("train", shapes, *FEATURES, "--out", old_bundle, "--overwrite")
    assert res.code == 130
    assert res.err.startswith("Interrupted.") and "bug" not in res.err
    assert digest(old_bundle) == before  # not one new file (split.json, check.json) in the old bundle
    assert beside(old_bundle) == []


def test_default_run_folders_still_count_up(run_cli, shapes: Path, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "shapes").mkdir(parents=True)
    res = run_cli("train", shapes, *FEATURES)
    assert res.code == 0, res.err
    assert "Bundle: runs/shapes-2" in res.out and (tmp_path / "runs" / "shapes-2" / "tlearn.json").is_file()
    assert beside(tmp_path / "runs" / "shapes-2") == []


# --- 2. a run folder inside the data folder --------------------------------------------------------------


def test_out_inside_the_data_folder_is_refused_before_it_becomes_a_class(run_cli, shapes: Path) -> None:  # type: ignore[no-untyped-def]
    classes = sorted(p.name for p in shapes.iterdir())
    res = run_cli("train", shapes, *FEATURES, "--out", shapes / "plots")
    assert res.code == 1
    assert f"is inside the dataset folder {shapes.resolve()}" in one_error(res.err)
    assert sorted(p.name for p in shapes.iterdir()) == classes  # no 'plots' class for the next run


def test_a_csv_dataset_trains_into_runs_beside_it(run_cli, shapes: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    table = shapes / "labels.csv"
    rows = [f"{p.relative_to(shapes).as_posix()},{p.parent.name}" for p in sorted(shapes.rglob("*.jpg"))]
    table.write_text("path,label\n" + "\n".join(rows) + "\n")
    monkeypatch.chdir(shapes)
    res = run_cli("train", "labels.csv", *FEATURES)  # cd project; tlearn train labels.csv
    assert res.code == 0, res.err
    assert (shapes / "runs" / "labels" / "tlearn.json").is_file()


# --- 3. an --out that cannot be a folder, or cannot be written ---------------------------------------------


def test_out_an_existing_file_is_one_line_and_exit_1(run_cli, shapes: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "model.txt").write_text("my notes")
    res = run_cli("train", shapes, *FEATURES, "--out", tmp_path / "model.txt")
    assert res.code == 1
    assert f"--out {tmp_path / 'model.txt'} is a file" in one_error(res.err)
    assert (tmp_path / "model.txt").read_text() == "my notes"


def test_out_on_a_read_only_file_system_is_one_line_and_exit_1(  # type: ignore[no-untyped-def]
    run_cli, shapes: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = Path.mkdir
    ro = tmp_path / "ro"

    def read_only(self: Path, *args: object, **kwargs: object) -> None:
        if self.is_relative_to(ro):
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        real(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "mkdir", read_only)
    res = run_cli("train", shapes, *FEATURES, "--out", ro / "run")
    assert res.code == 1
    text = one_error(res.err)
    assert f"Cannot create the run folder {ro / 'run'}: Read-only file system." in text
    assert "read-only file system: choose a place you can write to" in text


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="needs a user that permissions apply to")
def test_out_in_a_folder_without_write_permission_is_one_line_and_exit_1(  # type: ignore[no-untyped-def]
    run_cli, shapes: Path, tmp_path: Path
) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        res = run_cli("train", shapes, *FEATURES, "--out", locked / "run")
    finally:
        locked.chmod(0o700)
    assert res.code == 1
    assert "Permission denied" in one_error(res.err)


# --- 4. Ctrl-C during the head phase -------------------------------------------------------------------------


def test_ctrl_c_in_the_head_phase_saves_the_best_epoch_exits_130_and_says_how_to_resume(  # type: ignore[no-untyped-def]
    run_cli, shapes: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "run"
    epochs: list[tuple[str, int]] = []
    import tlearn.cli.train as cli_train

    printed = cli_train.print_epoch

    def record(row: dict[str, object]) -> None:
        epochs.append((str(row["phase"]), int(row["epoch"])))  # type: ignore[call-overload]
        printed(row)

    pressed: list[int] = []

    def before_each_step(optimizer: torch.optim.Optimizer, args: object, kwargs: object) -> None:
        # Once: the run goes on to the label check and the report, whose solvers step optimizers too.
        if epochs == [("head", 1)] and not pressed:
            pressed.append(1)
            raise KeyboardInterrupt  # the user presses Ctrl-C during head epoch 2

    monkeypatch.setattr(cli_train, "print_epoch", record)
    hook = register_optimizer_step_pre_hook(before_each_step)
    try:
        res = run_cli("train", shapes, *FAST_FINETUNE, "--out", out)
    finally:
        hook.remove()
    assert res.code == 130, res.err
    assert "Interrupted during the head phase" in res.out and f"add --resume {out} to the command" in res.out
    assert json.loads((out / "tlearn.json").read_text())["details"]["interrupted"] == "head"
    assert (out / "checkpoint.pt").is_file() and beside(out) == []

    again = run_cli("train", shapes, *FAST_FINETUNE, "--resume", out)
    assert again.code == 0, again.err
    assert epochs[1:] == [("head", 2), ("head", 3), ("finetune", 4), ("finetune", 5)]
    with (out / "history.csv").open() as fh:
        assert [int(r["epoch"]) for r in csv.DictReader(fh)] == [1, 2, 3, 4, 5]
    assert "interrupted" not in json.loads((out / "tlearn.json").read_text())["details"]


# --- 5. a class in val/ that train/ lacks ----------------------------------------------------------------------


def test_a_class_only_in_val_is_refused_naming_the_class_and_its_folder(run_cli, shapes: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    data = tmp_path / "photos"
    for cls in sorted(p.name for p in shapes.iterdir()):
        files = sorted((shapes / cls).iterdir())
        for part, chosen in (("train", files[:18]), ("val", files[18:])):
            if cls == "yellow_star" and part == "train":
                continue  # yellow stars only in val/
            (data / part / cls).mkdir(parents=True)
            for f in chosen:
                shutil.copy(f, data / part / cls / f.name)
    res = run_cli("train", data, *FEATURES, "--out", tmp_path / "run")
    assert res.code == 1
    text = one_error(res.err)
    assert f"val/ holds a class that train/ lacks: yellow_star ({data / 'val' / 'yellow_star'})" in text
    assert not (tmp_path / "run").exists() and beside(tmp_path / "run") == []


# --- 6. a split file from another run ----------------------------------------------------------------------------


def test_a_split_file_from_another_dataset_is_refused_with_how_many_images_it_misses(  # type: ignore[no-untyped-def]
    run_cli, shapes: Path, tiny_bundle: Path, tmp_path: Path
) -> None:
    for f in sorted((shapes / "red_circle").iterdir()):  # this dataset has 24 more images than the bundle's
        shutil.copy(f, f.with_name("more_" + f.name))
    res = run_cli("train", shapes, *FEATURES, "--split-file", tiny_bundle / "split.json", "--out", tmp_path / "r")
    assert res.code == 1
    text = one_error(res.err)
    assert f"The split file {tiny_bundle / 'split.json'} does not fit the dataset: it leaves out 24 of the 120" in text
    assert "probably from another dataset" in text and "--val-frac" not in text


def test_a_malformed_split_file_says_so_without_a_val_frac_hint(run_cli, shapes: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    notes = tmp_path / "split.json"
    notes.write_text("train: everything\n")
    res = run_cli("train", shapes, *FEATURES, "--split-file", notes, "--out", tmp_path / "r")
    assert res.code == 1
    text = one_error(res.err)
    assert f"The split file {notes} is not JSON" in text and "--val-frac" not in text


# --- 7. options that train nothing ------------------------------------------------------------------------------


def test_compare_refuses_options_that_leave_one_method_untrained_before_any_work(tmp_path: Path) -> None:
    from tlearn.core.errors import ConfigError
    from tlearn.training.compare import compare
    from tlearn.training.config import FinetuneConfig

    with pytest.raises(ConfigError, match=r"--epochs 0 with --method scratch trains nothing"):
        compare(tmp_path / "photos", finetune=FinetuneConfig(epochs=0), out=tmp_path / "cmp")  # features first
    assert not (tmp_path / "cmp").exists()


# --- compare ---------------------------------------------------------------------------------------------------------


def test_compare_into_an_earlier_comparison_is_refused_before_any_work(  # type: ignore[no-untyped-def]
    run_cli, shapes: Path, tmp_path: Path, old_bundle: Path
) -> None:
    cmp = tmp_path / "cmp"
    cmp.mkdir()
    (cmp / "compare.json").write_text("{}")
    res = run_cli("compare", shapes, "--methods", "features", *TINY, "--out", cmp)
    assert res.code == 1
    assert f"--out {cmp} already holds a comparison (compare.json)." in one_error(res.err)
    assert "--overwrite" in res.err

    fresh = tmp_path / "fresh"
    shutil.copytree(old_bundle, fresh / "features")
    res = run_cli("compare", shapes, "--methods", "scratch,features", *TINY, "--out", fresh)
    assert res.code == 1
    assert f"{fresh / 'features'} already holds a bundle." in one_error(res.err)
    assert not (fresh / "scratch").exists()  # refused before the first method trained
