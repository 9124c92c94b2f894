"""A path the user names for an output never loses a file of theirs: tlearn replaces only what it wrote.

Each command is run twice onto the same path (the second run replaces the first's file, as a rerun
expects), and once onto a file of the user's (refused before any work, the file unchanged)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import CliResult


def _users_photo(path: Path) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((40, 40, 3), 200, np.uint8)).save(path)
    return path.read_bytes()


def _refused(res: CliResult, path: Path, option: str) -> None:
    text = res.out + res.err
    assert res.code == 1, text
    assert f"Error: {option} {path} exists and is not" in text
    assert f"Hint: Pass {option} another path, or move that file away." in text
    assert "Traceback" not in text


def test_predict_explain_into_a_folder_of_photos_keeps_each_photo(  # type: ignore[no-untyped-def]
    run_cli, tiny_bundle: Path, shapes: Path
) -> None:
    folder = shapes / "red_circle"
    photo = next(folder.glob("*.jpg"))
    as_png = folder / f"{photo.stem}.png"  # the user's PNG of the same name, which the heatmap's name would take
    before = _users_photo(as_png)
    for _ in range(2):
        res = run_cli("predict", tiny_bundle, photo, "--explain", folder)
        assert res.code == 0, res.out + res.err
    assert as_png.read_bytes() == before
    heatmaps = sorted(p.name for p in folder.glob(f"{photo.stem}*.png"))
    assert heatmaps == [f"{photo.stem}-2.png", as_png.name]  # the rerun replaced its own heatmap


def test_augment_never_replaces_a_picture_it_did_not_draw(run_cli, shapes: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    mine, preview = tmp_path / "holiday.png", tmp_path / "preview.png"
    before = _users_photo(mine)
    _refused(run_cli("augment", shapes, "--out", mine), mine, "--out")
    assert mine.read_bytes() == before
    for seed in ("0", "1"):
        res = run_cli("augment", shapes, "--out", preview, "--seed", seed)
        assert res.code == 0, res.out + res.err


def test_check_plot_never_replaces_a_picture_it_did_not_draw(  # type: ignore[no-untyped-def]
    run_cli, shapes: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tlearn.data.checks

    mine, chart = tmp_path / "chart.png", tmp_path / "counts.png"
    before = _users_photo(mine)
    with monkeypatch.context() as m:
        m.setattr(tlearn.data.checks, "check_path", lambda *a, **k: pytest.fail("the check began"))
        _refused(run_cli("check", shapes, "--plot", mine), mine, "--plot")
    assert mine.read_bytes() == before
    for _ in range(2):
        assert run_cli("check", shapes, "--plot", chart).code == 0
    assert Image.open(chart).size[0] > 100


def test_evaluate_plots_never_replace_a_picture_they_did_not_draw(  # type: ignore[no-untyped-def]
    run_cli, tiny_bundle: Path, shapes_master: Path, tmp_path: Path
) -> None:
    mine = tmp_path / "pics" / "confusion.png"
    before = _users_photo(mine)
    _refused(run_cli("evaluate", tiny_bundle, shapes_master, "--plots", mine.parent), mine, "--plots")
    assert mine.read_bytes() == before
    for _ in range(2):
        res = run_cli("evaluate", tiny_bundle, shapes_master, "--plots", tmp_path / "ours")
        assert res.code == 0, res.out + res.err


def test_export_never_replaces_a_model_it_did_not_write(  # type: ignore[no-untyped-def]
    run_cli, tiny_bundle: Path, tmp_path: Path
) -> None:
    pytest.importorskip("onnxruntime")
    theirs = tmp_path / "theirs.onnx"
    theirs.write_bytes(b"a model from another tool")
    _refused(run_cli("export", tiny_bundle, "--out", theirs), theirs, "--out")
    assert theirs.read_bytes() == b"a model from another tool"
    assert not (tmp_path / "theirs.onnx.json").exists()
    ours = tmp_path / "ours.onnx"
    for _ in range(2):
        res = run_cli("export", tiny_bundle, "--out", ours)
        assert res.code == 0, res.out + res.err
    notes = tmp_path / "ours.int8.onnx"  # the int8 twin's name, taken by a file of the user's
    notes.write_bytes(b"notes")
    _refused(run_cli("export", tiny_bundle, "--out", ours, "--int8", "on"), notes, "--out")
    assert notes.read_bytes() == b"notes"
