"""The command line end to end: files written, messages read, exit codes, never a traceback."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from PIL import Image

from conftest import add_broken_files


def test_sample_data_then_check(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    made = run_cli("sample-data", tmp_path / "demo", "--per-class", "12")
    assert made.code == 0
    assert "Wrote 48 images in 4 classes" in made.out
    res = run_cli("check", tmp_path / "demo")
    assert res.code == 0, res.err
    assert "Usable: 48 images in 4 classes" in res.out
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
    lines = res.err.strip().splitlines()
    assert lines[0].startswith("Error: No such file or folder:")
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


def test_usage_errors_are_clean(run_cli) -> None:  # type: ignore[no-untyped-def]
    res = run_cli("check")
    assert res.code == 2
    assert "Missing argument" in res.err or "Missing parameter" in res.err
    assert "Traceback" not in res.err
