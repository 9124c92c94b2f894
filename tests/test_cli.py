"""The command line end to end: files written, messages read, exit codes, never a traceback."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import fields, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from PIL import Image

from conftest import add_broken_files
from tlearn.cli.options import AugmentFlags, option_groups


def test_sample_data_then_check(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    made = run_cli("sample-data", tmp_path / "demo", "--per-class", "12")
    assert made.code == 0
    assert "Wrote 48 images in 4 classes" in made.out
    assert made.out.rstrip().endswith(f"Next: tlearn check {tmp_path / 'demo'}")
    res = run_cli("check", tmp_path / "demo")
    assert res.code == 0, res.err
    assert "Usable: 48 images in 4 classes" in res.out
    assert res.out.rstrip().endswith(f"Next: tlearn train {tmp_path / 'demo'}")
    assert "red_circle" in res.out


def test_check_lists_exactly_the_broken_files(run_cli, shapes: Path) -> None:  # type: ignore[no-untyped-def]
    expected = add_broken_files(shapes, "green_square")
    res = run_cli("check", shapes)
    assert res.code == 0
    assert "Unreadable files (3), skipped" in res.out
    for name in expected:
        assert f"green_square/{name}" in res.out
    assert "Traceback" not in res.out + res.err


def test_check_json_and_plot(run_cli, shapes: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    add_broken_files(shapes, "red_circle")
    res = run_cli("check", shapes, "--json", "--plot", tmp_path / "counts.png")
    assert res.code == 0
    doc = json.loads(res.out)
    assert doc["usable"] and doc["total"] == 96
    assert {Path(u["path"]).name for u in doc["unreadable"]} == {"truncated.jpg", "empty.jpg", "notes.jpg"}
    with Image.open(tmp_path / "counts.png") as png:
        assert png.width > 300 and png.height > 200


def test_unusable_dataset_exits_1_with_the_reason(run_cli, shapes: Path) -> None:  # type: ignore[no-untyped-def]
    for cls in ("green_square", "blue_triangle", "yellow_star"):
        shutil.rmtree(shapes / cls)
    res = run_cli("check", shapes)
    assert res.code == 1
    assert "Not usable: A classifier needs at least two classes" in res.err


def test_wrong_path_is_one_line_and_a_hint(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    res = run_cli("check", tmp_path / "photos")
    assert res.code == 1
    assert res.err.startswith("Error: No such file or folder:")  # no blank line from a progress bar before it
    lines = res.err.strip().splitlines()
    assert lines[1].startswith("Hint:")
    assert len(lines) == 2


def test_real_entry_point_has_no_traceback_and_debug_shows_it(tmp_path: Path) -> None:
    env = {**os.environ, "COLUMNS": "200"}
    cmd = [sys.executable, "-m", "tlearn", "check", str(tmp_path / "nope")]
    plain = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    assert plain.returncode == 1
    assert "Traceback" not in plain.stderr and "No such file or folder" in plain.stderr
    debug = subprocess.run(cmd, capture_output=True, text=True, env={**env, "TLEARN_DEBUG": "1"}, check=False)
    assert "Traceback" in debug.stderr and "DataError" in debug.stderr


@pytest.mark.parametrize("args", [["--help"], ["sample-data", "{tmp}/demo"]])
def test_help_and_sample_data_answer_without_loading_torch(args: list[str], tmp_path: Path) -> None:
    """The quick start's first command and --help stay quick: the network libraries load only where used."""
    code = (
        "import sys, tlearn.cli\n"
        f"sys.argv = ['tlearn', *{[a.format(tmp=tmp_path) for a in args]!r}]\n"
        "try:\n    tlearn.cli.main()\nexcept SystemExit as stop:\n    assert not stop.code, stop.code\n"
        "heavy = [m for m in ('torch', 'timm', 'sklearn', 'matplotlib', 'captum', 'onnx') if m in sys.modules]\n"
        "print('loaded:', heavy)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert "loaded: []" in done.stdout


def test_usage_errors_are_clean(run_cli) -> None:  # type: ignore[no-untyped-def]
    res = run_cli("check")
    assert res.code == 2
    assert "Missing argument" in res.err or "Missing parameter" in res.err
    assert "Traceback" not in res.err


# --- train and compare options: parsed, grouped and passed on (the library stubbed out) -------------

FINETUNE_FLAGS = [
    "--head-epochs", "--head-lr", "--epochs", "--lr", "--lr-decay", "--unfreeze", "--weight-decay",
    "--label-smoothing", "--dropout", "--hidden", "--schedule", "--warmup-epochs", "--patience", "--resume",
]  # fmt: skip
AUGMENT_FLAGS = [
    "--preset", "--hflip", "--vflip", "--rotation", "--zoom", "--crop-scale", "--crop-ratio", "--no-crop",
    "--translate", "--shear", "--brightness", "--contrast", "--saturation", "--hue", "--grayscale", "--blur",
    "--blur-sigma", "--erasing", "--fill", "--fill-color", "--mixup", "--cutmix",
]  # fmt: skip
TRAIN_OPTIONS = [
    "--method", "--backbone", "--weights", "--input-size", "--out", "--overwrite", "--seed", "--val-frac",
    "--test-frac", "--split-file", "--class-weight", "--tta", "--unknown-recall", "--batch-size", "--device",
    "--precision", "--time-budget", "--views", "--help",
]  # fmt: skip


def help_panels(text: str) -> dict[str, list[str]]:
    """Rich help -> {panel title: the first flag of each row, in order}."""
    panels: dict[str, list[str]] = {}
    rows: list[str] = []
    for line in text.splitlines():
        if title := re.match(r"╭─ (.+?) ─", line):
            rows = panels.setdefault(title.group(1), [])
        elif flag := re.match(r"│ (?:\*\s+)?(--?[\w-]+)", line):
            rows.append(flag.group(1))
    return panels


@pytest.fixture
def stub_library(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """`tlearn train` and `tlearn compare` stop where the library starts: returns what it was given
    (the TrainConfig for train, compare's keyword arguments for compare)."""
    given: list[Any] = []

    def run(cfg: Any, **_: Any) -> Any:
        given.append(cfg)
        return SimpleNamespace(details=SimpleNamespace(interrupted=None))

    def compare(data: Path, **kwargs: Any) -> Any:
        given.append({"data": data, **kwargs})
        return SimpleNamespace(ok=True, runs=())

    monkeypatch.setattr("tlearn.training.run.run", run)
    monkeypatch.setattr("tlearn.cli.train.render_result", lambda result: None)
    monkeypatch.setattr("tlearn.training.compare.compare", compare)
    monkeypatch.setattr("tlearn.cli.compare.render_comparison", lambda result: None)
    return given


def train_config(run_cli, stub_library: list[Any], *args: str) -> Any:  # type: ignore[no-untyped-def]
    res = run_cli("train", "photos", *args)
    assert res.code == 0, res.err
    assert len(stub_library) == 1
    return stub_library.pop()


def test_train_help_lists_every_option_in_its_panel(run_cli) -> None:  # type: ignore[no-untyped-def]
    res = run_cli("train", "--help")
    assert res.code == 0
    panels = help_panels(res.out)
    assert panels["Options"] == TRAIN_OPTIONS
    assert panels["Feature method (--method features, auto)"] == ["--unlabelled", "--feature-layer", "--head", "--C"]
    assert panels["Fine-tuning (--method finetune, scratch, auto)"] == FINETUNE_FLAGS
    assert panels["Augmentation (each flag changes the preset)"] == AUGMENT_FLAGS
    assert "--no-hflip" in res.out and "--no-tta" in res.out


def test_compare_and_augment_help_list_their_option_groups(run_cli) -> None:  # type: ignore[no-untyped-def]
    panels = help_panels(run_cli("compare", "--help").out)
    assert panels["Training length and rates (all methods that train in epochs)"] == [
        "--head-epochs", "--head-lr", "--epochs", "--lr", "--patience",
    ]  # fmt: skip
    assert panels["Feature method (features, auto)"] == ["--head", "--C"]
    assert panels["Augmentation (each flag changes the preset)"] == AUGMENT_FLAGS
    panels = help_panels(run_cli("augment", "--help").out)
    assert panels["Augmentation (each flag changes the preset)"] == AUGMENT_FLAGS


def test_train_defaults_are_the_library_defaults(run_cli, stub_library: list[Any]) -> None:  # type: ignore[no-untyped-def]
    from tlearn.training.config import TrainConfig

    cfg = train_config(run_cli, stub_library)
    assert cfg == TrainConfig(data=Path("photos"), command=cfg.command)
    assert cfg.command == "tlearn train photos"


def test_every_fine_tuning_flag_reaches_the_finetune_config(run_cli, stub_library: list[Any]) -> None:  # type: ignore[no-untyped-def]
    from tlearn.training.config import FinetuneConfig

    cfg = train_config(
        run_cli, stub_library, "--head-epochs", "3", "--head-lr", "0.01", "--epochs", "4", "--lr", "0.002",
        "--lr-decay", "0.5", "--unfreeze", "all", "--weight-decay", "0.01", "--label-smoothing", "0.2",
        "--dropout", "0.3", "--hidden", "64", "--schedule", "step", "--warmup-epochs", "2", "--patience", "7",
    )  # fmt: skip
    assert cfg.finetune == FinetuneConfig(
        head_epochs=3, head_lr=0.01, epochs=4, lr=0.002, lr_decay=0.5, unfreeze="all", weight_decay=0.01,
        label_smoothing=0.2, dropout=0.3, hidden=64, schedule="step", warmup_epochs=2, patience=7,
    )  # fmt: skip


def test_mixup_and_cutmix_reach_the_augment_config_of_train_and_compare(run_cli, stub_library: list[Any]) -> None:  # type: ignore[no-untyped-def]
    from tlearn.data.augment import preset

    cfg = train_config(run_cli, stub_library, "--mixup", "0.2", "--cutmix", "1.0", "--preset", "light")
    assert cfg.augment == replace(preset("light"), mixup=0.2, cutmix=1.0)
    assert train_config(run_cli, stub_library, "--mixup", "0.2").augment.mixup == 0.2

    res = run_cli("compare", "photos", "--mixup", "0.2", "--no-hflip", "--epochs", "3", "--patience", "2")
    assert res.code == 0, res.err
    given = stub_library.pop()
    assert given["augment"] == replace(preset("standard"), mixup=0.2, hflip=0.0)
    assert (given["finetune"].epochs, given["finetune"].patience, given["finetune"].head_epochs) == (3, 2, 30)


def test_compare_defaults_are_the_library_defaults(run_cli, stub_library: list[Any]) -> None:  # type: ignore[no-untyped-def]
    from tlearn.training.config import TrainConfig

    assert run_cli("compare", "photos").code == 0
    given = stub_library.pop()
    assert given["methods"] == ["features", "finetune", "scratch"]
    options = {k: v for k, v in given.items() if k in {f.name for f in fields(TrainConfig)}}
    assert TrainConfig(**options) == TrainConfig(data=Path("photos"))


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90), ("2.5", 2.5), ("90s", 90), ("5m", 300), ("1h", 3600), ("1h30m", 5400), ("1h 30m", 5400),
     ("1.5h", 5400), ("2M", 120), ("1m30s", 90)],
)  # fmt: skip
def test_time_budget_accepts_seconds_and_h_m_s(run_cli, stub_library: list[Any], text: str, seconds: float) -> None:  # type: ignore[no-untyped-def]
    assert train_config(run_cli, stub_library, "--time-budget", text).time_budget == seconds


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--time-budget", "5x"], "--time-budget must look like 10m, 90s or 1h30m. Got '5x'."),
        (["--time-budget", "ten minutes"], "--time-budget must look like 10m, 90s or 1h30m. Got 'ten minutes'."),
        (["--time-budget", "5m30"], "--time-budget must look like 10m, 90s or 1h30m. Got '5m30'."),
        (["--time-budget=-5m"], "--time-budget must look like 10m, 90s or 1h30m. Got '-5m'."),
        (["--time-budget", "0"], "--time-budget must be above 0. Got 0.0."),
        (["--unfreeze", "two"], "--unfreeze must be a number of stages or 'all'. Got 'two'."),
        (["--unfreeze", "1.5"], "--unfreeze must be a number of stages or 'all'. Got '1.5'."),
        (["--unfreeze", "-1"], "--unfreeze must be a number of stages (0 or more) or 'all'. Got -1."),
    ],
)
def test_a_bad_time_budget_or_unfreeze_is_one_line_naming_the_flag(  # type: ignore[no-untyped-def]
    run_cli, stub_library: list[Any], args: list[str], message: str
) -> None:
    res = run_cli("train", "photos", *args)
    assert res.code == 1
    assert res.err.strip() == f"Error: {message}"
    assert stub_library == []  # nothing ran


@pytest.mark.parametrize(("text", "stages"), [("all", "all"), ("ALL", "all"), (" all ", "all"), ("0", 0), ("3", 3)])
def test_unfreeze_takes_all_or_a_number_of_stages(run_cli, stub_library: list[Any], text: str, stages: object) -> None:  # type: ignore[no-untyped-def]
    assert train_config(run_cli, stub_library, "--unfreeze", text).finetune.unfreeze == stages


def test_bad_flags_of_every_group_are_reported_at_once(run_cli, stub_library: list[Any]) -> None:  # type: ignore[no-untyped-def]
    res = run_cli("train", "photos", "--val-frac", "1.5", "--dropout", "2", "--method", "magic")
    assert res.code == 1
    line = res.err.strip()
    assert line.startswith("Error: Invalid options: ") and "\n" not in line
    for flag in ("--val-frac", "--dropout", "--method"):
        assert flag in line
    assert stub_library == []


def test_option_groups_refuse_a_flag_that_two_groups_declare() -> None:
    def command(*, preset: str = "x", augment: AugmentFlags) -> None: ...

    with pytest.raises(TypeError, match=r"command: option groups repeat the parameters \['preset'\]"):
        option_groups(command)


def test_head_epochs_0_with_epochs_0_is_refused_naming_the_flags(run_cli, stub_library: list[Any]) -> None:  # type: ignore[no-untyped-def]
    trains_nothing = "trains nothing (the model would be saved untrained): train at least one epoch."
    for method in ("finetune", "auto"):
        res = run_cli("train", "photos", "--method", method, "--head-epochs", "0", "--epochs", "0")
        assert res.code == 1
        assert res.err.strip() == f"Error: --head-epochs 0 with --epochs 0 {trains_nothing}"
    res = run_cli("train", "photos", "--method", "finetune", "--head-epochs", "0", "--unfreeze", "0")
    assert res.err.strip() == f"Error: --head-epochs 0 with --unfreeze 0 {trains_nothing}"
    assert stub_library == []
    # the head alone, or phase 2 alone, is training
    assert train_config(run_cli, stub_library, "--method", "finetune", "--epochs", "0").finetune.epochs == 0
    assert train_config(run_cli, stub_library, "--method", "finetune", "--head-epochs", "0").finetune.head_epochs == 0


def test_overwrite_reaches_train_and_compare(run_cli, stub_library: list[Any]) -> None:  # type: ignore[no-untyped-def]
    assert train_config(run_cli, stub_library, "--overwrite").overwrite is True
    assert run_cli("compare", "photos", "--overwrite").code == 0
    assert stub_library.pop()["overwrite"] is True


def failing_run(monkeypatch: pytest.MonkeyPatch, error: BaseException) -> None:
    def run(cfg: Any, **_: Any) -> None:
        raise error

    monkeypatch.setattr("tlearn.training.run.run", run)


@pytest.mark.parametrize(
    ("error", "line"),
    [
        (PermissionError(13, "Permission denied", "/data/runs/x"), "Error: Permission denied: /data/runs/x."),
        (OSError(30, "Read-only file system", "/mnt/ro/run"), "Error: Read-only file system: /mnt/ro/run."),
        (NotADirectoryError(20, "Not a directory", "/a/file/run"), "Error: Not a directory: /a/file/run."),
        (OSError(28, "No space left on device"), "Error: No space left on device."),
    ],
)
def test_a_file_system_refusal_is_a_user_error_naming_the_path(  # type: ignore[no-untyped-def]
    run_cli, monkeypatch: pytest.MonkeyPatch, error: OSError, line: str
) -> None:
    failing_run(monkeypatch, error)
    res = run_cli("train", "photos")
    assert res.code == 1
    lines = res.err.strip().splitlines()
    assert lines[0] == line and lines[1].startswith("Hint: ") and len(lines) == 2
    assert "bug" not in res.err


@pytest.mark.parametrize("error", [RuntimeError("boom"), FileNotFoundError(2, "No such file", "/tmp/x.npy")])
def test_a_real_bug_says_so_and_exits_2(run_cli, monkeypatch: pytest.MonkeyPatch, error: Exception) -> None:  # type: ignore[no-untyped-def]
    failing_run(monkeypatch, error)
    res = run_cli("train", "photos")
    assert res.code == 2
    assert res.err.startswith("Unexpected error: ") and "This is a bug in tlearn" in res.err


def test_ctrl_c_exits_130(run_cli, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    from tlearn.core.errors import Interrupted

    failing_run(monkeypatch, Interrupted("Interrupted. Features computed so far are cached.", hint="Run it again."))
    res = run_cli("train", "photos")
    assert res.code == 130
    assert res.err.strip().splitlines() == ["Interrupted. Features computed so far are cached.", "Hint: Run it again."]
    failing_run(monkeypatch, KeyboardInterrupt())
    assert run_cli("train", "photos").code == 130


def test_compare_exits_130_when_ctrl_c_stopped_a_method(run_cli, stub_library: list[Any], monkeypatch) -> None:  # type: ignore[no-untyped-def]
    stopped = SimpleNamespace(ok=True, runs=(SimpleNamespace(interrupted=False), SimpleNamespace(interrupted=True)))
    monkeypatch.setattr("tlearn.training.compare.compare", lambda data, **kwargs: stopped)
    assert run_cli("compare", "photos").code == 130


def test_train_passes_unknown_recall_and_checks_it(run_cli, stub_library: list[Any]) -> None:  # type: ignore[no-untyped-def]
    assert train_config(run_cli, stub_library, "--unknown-recall", "0.9").unknown_recall == 0.9
    res = run_cli("train", "photos", "--unknown-recall", "1.5")
    assert res.code == 1 and "--unknown-recall must be at least 0.5 and below 1. Got 1.5." in res.err


def test_every_command_summary_is_one_sentence_that_tlearn_help_wraps_itself() -> None:
    # Typer's rich mode keeps a docstring's line breaks: "check" and "predict" showed a sentence cut in two.
    import tlearn.cli  # noqa: F401  (registers the commands)
    from tlearn.cli.app import app

    assert len(app.registered_commands) >= 10
    for info in app.registered_commands:
        summary = (info.callback.__doc__ or "").strip().split("\n\n")[0]
        assert summary and "\n" not in summary, info.callback.__name__


def test_sample_data_never_mixes_its_classes_into_a_folder_of_yours(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    photos = tmp_path / "photos" / "cats"
    photos.mkdir(parents=True)
    (photos / "tom.jpg").write_bytes(b"a photo")
    res = run_cli("sample-data", tmp_path / "photos")
    assert res.code == 1
    assert "already holds cats: the sample's class folders would mix with it." in " ".join(res.err.split())
    assert sorted(p.name for p in (tmp_path / "photos").iterdir()) == ["cats"]
    for _ in range(2):  # an earlier sample dataset is written again
        assert run_cli("sample-data", tmp_path / "demo", "--per-class", "2").code == 0


def test_a_mistyped_choice_is_answered_with_the_closest_one(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    res = run_cli("train", tmp_path, "--method", "featurs")
    assert res.code == 1
    assert (
        "Error: --method must be one of auto, features, finetune, scratch. Got 'featurs' (did you mean features?)."
        in (" ".join(res.err.split()))
    )
    res = run_cli("train", tmp_path, "--method", "xyz")
    assert "Got 'xyz'." in res.err and "did you mean" not in res.err  # nothing close: no guess
