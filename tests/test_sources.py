"""Finding a dataset's images and labels in the layouts users have."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import jpeg_bytes, solid
from tlearn.core.errors import DataError
from tlearn.data.sources import Dataset, load_dataset


def put(path: Path, rgb: tuple[int, int, int] = (200, 30, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(jpeg_bytes(solid(rgb)))
    return path


def csv_dataset(folder: Path, text: str, *images: str) -> Dataset:
    """The dataset of a labels.csv holding `text`, beside the `images` it names (paths from `folder`)."""
    for name in images:
        put(folder / name)
    csv = folder / "labels.csv"
    csv.write_text(text)
    return load_dataset(csv)


def test_class_folders_give_sorted_classes_and_skip_hidden_and_junk(tmp_path: Path) -> None:
    put(tmp_path / "dogs" / "a.jpg")
    put(tmp_path / "cats" / "b.jpg")
    put(tmp_path / "cats" / "nested" / "c.png")
    put(tmp_path / "cats" / ".hidden.jpg")
    put(tmp_path / ".ipynb_checkpoints" / "x.jpg")
    put(tmp_path / "__MACOSX" / "cats" / "._b.jpg")
    (tmp_path / "cats" / ".DS_Store").write_bytes(b"\0")
    (tmp_path / "cats" / "readme.txt").write_text("hi")
    ds = load_dataset(tmp_path)
    assert ds.kind == "folders"
    assert ds.classes == ("cats", "dogs")
    assert sorted(s.path.name for s in ds.samples) == ["a.jpg", "b.jpg", "c.png"]
    assert [i.path.name for i in ds.ignored] == ["readme.txt"]


def test_train_and_val_folders_are_splits_not_two_classes(tmp_path: Path) -> None:
    for split in ("train", "val"):
        put(tmp_path / split / "cat" / f"{split}1.jpg")
        put(tmp_path / split / "dog" / f"{split}2.jpg")
    ds = load_dataset(tmp_path)
    assert ds.kind == "splits"
    assert ds.classes == ("cat", "dog")
    assert {s.split for s in ds.samples} == {"train", "val"}


def test_validation_folder_names_are_recognised(tmp_path: Path) -> None:
    put(tmp_path / "train" / "a" / "1.jpg")
    put(tmp_path / "Validation" / "a" / "2.jpg")
    put(tmp_path / "test" / "a" / "3.jpg")
    ds = load_dataset(tmp_path)
    assert sorted(s.split or "" for s in ds.samples) == ["test", "train", "val"]


def test_csv_paths_are_relative_to_the_csv(tmp_path: Path) -> None:
    ds = csv_dataset(tmp_path, "path,label\nimg/x.jpg,cat\nimg/y.jpg,dog\n,dog\n", "img/x.jpg", "img/y.jpg")
    assert ds.kind == "csv"
    assert [(s.path, s.label) for s in ds.samples] == [
        (tmp_path / "img/x.jpg", "cat"),
        (tmp_path / "img/y.jpg", "dog"),
    ]
    assert "without a path or a label" in ds.ignored[0].reason


@pytest.mark.parametrize("sep", [";", "\t"])
def test_csv_of_a_spreadsheet_that_separates_by_semicolons_or_tabs_is_read(tmp_path: Path, sep: str) -> None:
    put(tmp_path / "img" / "x,1.jpg")  # a comma in a name stays a name
    put(tmp_path / "img" / "y.jpg")
    csv = tmp_path / "labels.csv"
    csv.write_text(f"\ufeffpath{sep}label\nimg/x,1.jpg{sep}cat\nimg/y.jpg{sep}dog\n")  # as Excel saves it
    assert [(s.path.name, s.label) for s in load_dataset(csv).samples] == [("x,1.jpg", "cat"), ("y.jpg", "dog")]


def test_csv_written_on_windows_with_backslashes_finds_its_images(tmp_path: Path) -> None:
    rows = "path,label\nimg\\cats\\a.jpg,cat\nimg\\dogs\\b.jpg,dog\nodd\\name.jpg,cat\n"
    # a backslash in a name is legal here: a file of that very name is taken as it is
    ds = csv_dataset(tmp_path, rows, "img/cats/a.jpg", "img/dogs/b.jpg", "odd\\name.jpg")
    assert [s.path.relative_to(tmp_path).as_posix() for s in ds.samples] == [
        "img/cats/a.jpg", "img/dogs/b.jpg", "odd\\name.jpg"
    ]  # fmt: skip
    assert all(s.path.is_file() for s in ds.samples)


def test_a_class_named_like_a_split_is_a_class(tmp_path: Path) -> None:
    for cls in ("bus", "car", "train"):  # vehicles: 'train' holds photos of trains, not class folders
        put(tmp_path / "vehicles" / cls / "1.jpg")
        put(tmp_path / "vehicles" / cls / "2.jpg")
    ds = load_dataset(tmp_path / "vehicles")
    assert ds.classes == ("bus", "car", "train") and not ds.has_splits and len(ds.samples) == 6
    put(tmp_path / "photos" / "train" / "cat" / "1.jpg")  # a split folder of class folders stays a split,
    put(tmp_path / "photos" / "train" / "dog" / "2.jpg")
    put(tmp_path / "photos" / "test" / "3.jpg")  # and so does a test/ of unlabelled photos beside it (Kaggle's)
    ds = load_dataset(tmp_path / "photos")
    assert ds.has_splits and ds.classes == ("cat", "dog")


def test_a_csv_row_given_twice_is_one_image_and_the_repeat_is_named(tmp_path: Path) -> None:
    rows = "path,label\nimg/a.jpg,cat\nimg/b.jpg,dog\nimg/./a.jpg,cat\nimg/b.jpg,cat\n"
    ds = csv_dataset(tmp_path, rows, "img/a.jpg", "img/b.jpg")
    assert [(s.path.name, s.label) for s in ds.samples] == [("a.jpg", "cat"), ("b.jpg", "dog"), ("b.jpg", "cat")]
    assert [(i.path.name, i.reason) for i in ds.ignored] == [("labels.csv:4", "the same file and label as line 2")]


def test_csv_without_label_column_names_the_header(tmp_path: Path) -> None:
    csv = tmp_path / "bad.csv"
    csv.write_text("file,species_name\na.jpg,cat\n")
    with pytest.raises(DataError, match=r"needs 'path' and 'label' columns. Got header: file,species_name"):
        load_dataset(csv)


def test_unicode_and_spaces_in_names(tmp_path: Path) -> None:
    put(tmp_path / "crème brûlée" / "photo 1.jpg")
    put(tmp_path / "日本" / "写真.jpg")
    ds = load_dataset(tmp_path)
    assert ds.classes == ("crème brûlée", "日本")
    assert len(ds.samples) == 2


def test_empty_class_folder_is_recorded_not_a_class(tmp_path: Path) -> None:
    put(tmp_path / "a" / "1.jpg")
    put(tmp_path / "b" / "1.jpg")
    (tmp_path / "empty").mkdir()
    ds = load_dataset(tmp_path)
    assert ds.classes == ("a", "b")
    assert ds.empty_classes == ("empty",)


def test_missing_path_says_what_to_pass(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="No such file or folder") as info:
        load_dataset(tmp_path / "photos")
    assert info.value.hint and "subfolder per class" in info.value.hint


def test_images_without_class_folders_explain_the_layout(tmp_path: Path) -> None:
    put(tmp_path / "a.jpg")
    put(tmp_path / "b.jpg")
    with pytest.raises(DataError, match=r"No class folders .* holds 2 images directly"):
        load_dataset(tmp_path)


def test_val_without_train_is_refused(tmp_path: Path) -> None:
    put(tmp_path / "val" / "a" / "1.jpg")
    put(tmp_path / "test" / "a" / "1.jpg")
    with pytest.raises(DataError, match="no train/ folder"):
        load_dataset(tmp_path)


def test_csv_split_column_puts_each_row_in_its_part(tmp_path: Path) -> None:
    from tlearn.data.split import split_from_dataset

    rows = [("a1", "cat", "train"), ("a2", "dog", "Train"), ("b1", "cat", "valid"), ("b2", "dog", "val")]
    rows += [("c1", "cat", "test"), ("c2", "dog", "testing")]
    for stem, _, _ in rows:
        put(tmp_path / "img" / f"{stem}.jpg")
    csv = tmp_path / "labels.csv"
    csv.write_text("path,label,split\n" + "".join(f"img/{s}.jpg,{c},{p}\n" for s, c, p in rows))
    ds = load_dataset(csv)
    assert ds.has_splits
    assert {s.path.stem: s.split for s in ds.samples} == {
        "a1": "train", "a2": "train", "b1": "val", "b2": "val", "c1": "test", "c2": "test",
    }  # fmt: skip
    split = split_from_dataset(ds.samples)
    names = {part: sorted(ds.samples[i].path.stem for i in ix) for part, ix in split.parts().items()}
    assert names == {"train": ["a1", "a2"], "val": ["b1", "b2"], "test": ["c1", "c2"]}
    assert split.origin == "dataset"


def test_csv_split_with_a_bad_value_names_the_row(tmp_path: Path) -> None:
    put(tmp_path / "x.jpg")
    put(tmp_path / "y.jpg")
    csv = tmp_path / "labels.csv"
    csv.write_text("path,label,split\nx.jpg,cat,train\ny.jpg,dog,trian\n")
    with pytest.raises(DataError, match=r"Unknown split 'trian' in .*labels\.csv:3\.") as info:
        load_dataset(csv)
    assert "\n" not in info.value.message
    assert "train, val or test" in (info.value.hint or "")


def test_csv_split_given_for_some_rows_only_is_refused(tmp_path: Path) -> None:
    put(tmp_path / "x.jpg")
    put(tmp_path / "y.jpg")
    csv = tmp_path / "labels.csv"
    csv.write_text("path,label,split\nx.jpg,cat,train\ny.jpg,dog,\n")
    with pytest.raises(DataError, match="gives a split for some rows but not for others"):
        load_dataset(csv)
