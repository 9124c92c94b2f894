"""Dataset checks: what a user sees about broken files, duplicates, leakage and balance."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

from PIL import Image

from conftest import add_broken_files
from tlearn.data.checks import check_dataset, check_path, group_ids
from tlearn.data.scan import scan_images
from tlearn.data.sources import load_dataset
from tlearn.data.split import stratified_split


def test_broken_files_are_listed_with_reasons_and_the_rest_is_used(shapes: Path) -> None:
    expected = add_broken_files(shapes, "red_circle")
    report = check_path(shapes)
    assert report.usable
    reasons = {u.path.name: u.reason for u in report.unreadable}
    assert set(reasons) == set(expected)
    for name, words in expected.items():
        assert words in reasons[name]
    assert report.total == 96
    assert any("3 files cannot be read" in w for w in report.warnings)


def test_exact_and_near_duplicates_are_found(shapes: Path) -> None:
    src = shapes / "red_circle" / "red_circle_000.jpg"
    shutil.copy(src, shapes / "red_circle" / "copy.jpg")
    img = Image.open(src)
    small = img.resize((img.width // 2, img.height // 2))
    buf = io.BytesIO()
    small.save(buf, "JPEG", quality=70)
    (shapes / "red_circle" / "resaved.jpg").write_bytes(buf.getvalue())
    report = check_path(shapes)
    groups = [g for g in report.duplicates if src in g.paths]
    assert len(groups) == 1
    assert {p.name for p in groups[0].paths} == {"red_circle_000.jpg", "copy.jpg", "resaved.jpg"}
    assert groups[0].kind == "near" and groups[0].scope == "within a class"
    assert len(report.duplicates) == 1  # distinct synthetic images are not flagged


def test_same_image_in_two_classes_is_a_label_conflict(shapes: Path) -> None:
    shutil.copy(shapes / "red_circle" / "red_circle_001.jpg", shapes / "green_square" / "oops.jpg")
    report = check_path(shapes)
    (group,) = report.duplicates
    assert group.kind == "exact" and group.label_conflict
    assert any("label conflicts" in w for w in report.warnings)


def test_copy_across_given_splits_is_reported_as_leakage(tmp_path: Path, shapes: Path) -> None:
    tmp_path = tmp_path / "data"
    for split in ("train", "test"):
        for cls in ("red_circle", "green_square"):
            (tmp_path / split / cls).mkdir(parents=True)
    for i, f in enumerate(sorted((shapes / "red_circle").iterdir())[:6]):
        shutil.copy(f, tmp_path / ("train" if i < 4 else "test") / "red_circle" / f.name)
    for i, f in enumerate(sorted((shapes / "green_square").iterdir())[:6]):
        shutil.copy(f, tmp_path / ("train" if i < 4 else "test") / "green_square" / f.name)
    leaked = sorted((tmp_path / "train" / "red_circle").iterdir())[0]
    shutil.copy(leaked, tmp_path / "test" / "red_circle" / "leaked.jpg")
    report = check_path(tmp_path, min_per_class=2)
    assert report.split_counts["test"]["red_circle"] == 3
    (group,) = report.duplicates
    assert group.leaks and group.scope == "across splits"
    assert any("more than one split" in w for w in report.warnings)


def test_one_class_is_not_usable(shapes: Path) -> None:
    for cls in ("green_square", "blue_triangle", "yellow_star"):
        shutil.rmtree(shapes / cls)
    report = check_path(shapes)
    assert not report.usable
    assert "at least two classes" in report.problems[0]


def test_imbalance_and_small_classes_warn(shapes: Path) -> None:
    for f in sorted((shapes / "yellow_star").iterdir())[3:]:
        f.unlink()
    report = check_path(shapes)
    assert report.imbalance == 8.0
    assert report.small_classes == ("yellow_star",)
    assert any("--class-weight balanced" in w for w in report.warnings)


def test_class_whose_files_are_all_broken_is_left_out(shapes: Path) -> None:
    folder = shapes / "broken_class"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(b"")
    report = check_path(shapes)
    assert "broken_class" not in report.classes
    assert "broken_class" in report.empty_classes


def test_duplicate_groups_feed_the_split(shapes: Path) -> None:
    src = shapes / "blue_triangle" / "blue_triangle_003.jpg"
    for k in range(3):
        shutil.copy(src, shapes / "blue_triangle" / f"copy{k}.jpg")
    ds = load_dataset(shapes)
    scanned = scan_images(ds.samples)
    report = check_dataset(ds, scanned)
    groups = group_ids(len(scanned), report.duplicates)
    split = stratified_split([s.label for s in scanned.samples], seed=1, groups=groups)
    copies = [i for i, s in enumerate(scanned.samples) if s.path.name.startswith("copy") or s.path == src]
    parts = {p for p, ix in split.parts().items() for i in copies if i in ix}
    assert len(parts) == 1


def test_a_csv_class_without_readable_images_is_not_called_a_folder(shapes: Path) -> None:
    table = shapes / "labels.csv"
    table.write_text(
        "path,label\n"
        + "".join(f"{p.relative_to(shapes).as_posix()},{p.parent.name}\n" for p in shapes.rglob("*.jpg"))
        + "missing.jpg,ghost\n"
    )
    dataset = load_dataset(table)
    report = check_dataset(dataset, scan_images(dataset.samples, short_side=32))
    assert "1 class has no readable images and is left out: ghost." in report.warnings


def test_images_too_small_to_learn_from_are_named_in_a_warning(shapes: Path) -> None:
    clean = check_path(shapes)
    assert not any("smaller than" in w for w in clean.warnings)  # the 64 px shapes are fine
    Image.new("RGB", (1, 1), (255, 0, 0)).save(shapes / "red_circle" / "pixel.png")
    Image.new("RGB", (200, 20), (0, 0, 255)).save(shapes / "red_circle" / "banner.png")  # short side 20 px
    report = check_path(shapes)
    assert report.usable  # a warning: they may be meant
    (warning,) = (w for w in report.warnings if "smaller than" in w)
    assert warning.startswith(
        "2 images are smaller than 32 px on the shorter side (red_circle/banner.png, red_circle/pixel.png)"
    )


def test_class_names_that_differ_only_in_case_or_spacing_are_named(tmp_path: Path) -> None:
    for cls in ("Cat", "cat", "golden-retriever", "Golden Retriever", "dog"):
        for i in range(2):
            Image.new("RGB", (40, 40), (40 * i + len(cls), 9 * len(cls), 200)).save(tmp_path / f"{cls}{i}.png")
    rows = "".join(f"{cls}{i}.png,{cls}\n" for cls in ("Cat", "cat", "golden-retriever", "Golden Retriever", "dog")
                   for i in range(2))  # fmt: skip
    (tmp_path / "labels.csv").write_text("path,label\n" + rows)
    alike = [w for w in check_path(tmp_path / "labels.csv").warnings if "differ only" in w]
    assert alike == [
        "Classes 'Cat' and 'cat' differ only in case, spaces or dashes: if they are one class, give them one name.",
        "Classes 'Golden Retriever' and 'golden-retriever' differ only in case, spaces or dashes: if they are one "
        "class, give them one name.",
    ]
