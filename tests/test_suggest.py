"""`tlearn suggest`: uncertain photos first, near copies not picked twice, and the files a user sorts."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import add_broken_files
from tlearn.data.synthetic import make_sample_dataset
from tlearn.training.ranking import margin_uncertainty, rank_for_labelling
from tlearn.training.suggest import suggest


def test_ranking_takes_one_of_a_cluster_of_uncertain_copies() -> None:
    rng = np.random.default_rng(0)
    # 10 near copies of one doubtful photo (the most uncertain of all), 40 others spread out
    base = rng.normal(size=16)
    feats = np.vstack([base + rng.normal(scale=0.01, size=(10, 16)), rng.normal(size=(40, 16))])
    proba = np.vstack([np.tile([0.5, 0.5], (10, 1)), np.column_stack([p := rng.uniform(0.55, 0.9, 40), 1 - p])])
    copies = set(range(10))
    doubt_only, _ = rank_for_labelling(proba, feats, 5, strategy="uncertainty")
    assert len(copies & set(doubt_only[:5].tolist())) == 5  # uncertainty alone takes five copies of one photo
    order, score = rank_for_labelling(proba, feats, 5)
    picked = order[:5].tolist()
    assert len(copies & set(picked)) == 1 and picked[0] in copies  # the most doubtful once, then others
    assert sorted(order.tolist()) == list(range(50))  # every photo ranked once
    assert np.all(score[order[:5]] > 0)
    others = [i for i in picked if i not in copies]
    assert min(margin_uncertainty(proba)[others]) >= np.sort(margin_uncertainty(proba)[10:])[-20]  # still doubtful


def _planted_folder(tmp_path: Path, bundle: Path) -> tuple[Path, set[str]]:
    """Unlabelled shapes plus five near copies (resized, re-saved) of the photo the model doubts most."""
    folder = make_sample_dataset(tmp_path / "unlabelled", classes=4, per_class=6, seed=5)
    first = suggest(bundle, folder, n=1, out=tmp_path / "probe", strategy="uncertainty")
    doubtful = first.ranked[0].path
    img = Image.open(doubtful).convert("RGB")
    names = set()
    for k in range(5):
        name = f"copy_{k}.jpg"
        img.resize((img.width + k + 1, img.height + k + 1)).save(folder / name, quality=80 + 3 * k)
        names.add(name)
    return folder, names | {doubtful.name}


def test_suggest_does_not_pick_near_copies_twice(tiny_bundle: Path, tmp_path: Path) -> None:
    folder, copies = _planted_folder(tmp_path, tiny_bundle)
    doubt_only = suggest(tiny_bundle, folder, n=6, out=tmp_path / "u", strategy="uncertainty")
    assert len({s.path.name for s in doubt_only.picked} & copies) >= 3  # the trap works
    result = suggest(tiny_bundle, folder, n=6, out=tmp_path / "d")
    assert len({s.path.name for s in result.picked} & copies) <= 1


def test_suggest_cli_writes_csv_sheet_and_folders(tiny_bundle: Path, tmp_path: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    folder = make_sample_dataset(tmp_path / "photos", classes=4, per_class=5, seed=3)
    broken = add_broken_files(folder, "red_circle")
    before = sorted(p.relative_to(folder) for p in folder.rglob("*"))
    out = tmp_path / "next"
    res = run_cli("suggest", tiny_bundle, folder, "--n", "7", "--out", out)
    assert res.code == 0, res.err
    for name in broken:
        assert name in res.out  # listed as skipped
    assert sorted(p.relative_to(folder) for p in folder.rglob("*")) == before  # originals untouched

    rows = list(csv.DictReader((out / "suggestions.csv").open()))
    assert [r["rank"] for r in rows] == [str(i) for i in range(1, 21)]  # the 20 readable photos, ranked
    assert set(rows[0]) == {"path", "guess", "confidence", "score", "rank"}
    classes = {"blue_triangle", "green_square", "red_circle", "yellow_star"}
    assert {r["guess"] for r in rows} <= classes
    assert not any(name in r["path"] for r in rows for name in broken)

    sorted_into = out / "to_label"
    assert {p.name for p in sorted_into.iterdir()} == classes  # a folder per class, empty ones too
    copies = sorted(sorted_into.rglob("*.jpg"))
    assert len(copies) == 7
    for r in rows[:7]:
        src = Path(r["path"])
        copy = sorted_into / r["guess"] / f"{int(r['rank']):03d}_{src.name}"
        assert copy.read_bytes() == src.read_bytes()

    sheet = (out / "contact_sheet.html").read_text()
    assert sheet.count("<img ") == 7 and "data:image/jpeg;base64," in sheet
    assert f"guess: {rows[0]['guess']}" in sheet

    again = run_cli("suggest", tiny_bundle, folder, "--out", out)
    assert again.code == 1 and "already exists" in again.err


def test_suggest_refuses_a_folder_without_images(tiny_bundle: Path, tmp_path: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    empty = tmp_path / "empty"
    empty.mkdir()
    res = run_cli("suggest", tiny_bundle, empty)
    assert res.code == 1 and "holds no image files" in res.err
    with pytest.raises(Exception, match="--n must be 1 or more"):
        suggest(tiny_bundle, empty, n=0)
    shutil.rmtree(empty)


def test_suggest_leaves_out_photos_the_bundle_was_trained_or_tested_on(  # type: ignore[no-untyped-def]
    tiny_bundle: Path, shapes_master: Path, tmp_path: Path, run_cli
) -> None:
    folder = make_sample_dataset(tmp_path / "photos", classes=4, per_class=3, seed=7)
    known = sorted(shapes_master.rglob("*.jpg"))[::20]  # labelled images from every part of the bundle's split
    shutil.copy(known[0], folder / "exact.jpg")
    for k, path in enumerate(known[1:]):
        img = Image.open(path)
        img.resize((img.width + 3, img.height + 3)).save(folder / f"resaved_{k}.jpg", quality=85)  # near copies
    res = run_cli("suggest", tiny_bundle, folder, "--n", "3", "--out", tmp_path / "s")
    assert res.code == 0, res.err
    assert (
        f"Left out {len(known)} photos that copy an image the bundle was trained, validated or tested on"
        in " ".join(res.out.split())
    )
    with (tmp_path / "s" / "suggestions.csv").open() as fh:
        ranked = [Path(row["path"]).name for row in csv.DictReader(fh)]
    assert len(ranked) == 12 and not any(name.startswith(("exact", "resaved")) for name in ranked)

    only_known = tmp_path / "known"
    only_known.mkdir()
    shutil.copy(known[0], only_known / "a.jpg")
    res = run_cli("suggest", tiny_bundle, only_known, "--out", tmp_path / "t")
    assert res.code == 1 and "is a copy of an image the bundle was trained, validated or tested on" in res.err
