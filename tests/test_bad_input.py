"""Input that real disks and real users produce: names that are not UTF-8, symlink loops, huge files,
CSV rows that point elsewhere. What a user sees: valid output, each file once, one-line answers."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from pathlib import Path

import pytest

from conftest import jpeg_bytes, solid
from tlearn.core.errors import DataError
from tlearn.data.checks import check_path
from tlearn.data.sources import display_path, load_dataset

# A Latin-1 file name, as an old USB disk or a zip made on Windows gives it: not valid UTF-8, so
# Python holds it as the surrogate escape '\udce9' and a UTF-8 writer refuses it.
CAFE = b"caf\xe9.jpg"


def put_bytes_name(folder: Path, name: bytes = CAFE, rgb: tuple[int, int, int] = (30, 200, 30)) -> Path:
    path = Path(os.fsdecode(os.path.join(os.fsencode(folder), name)))
    path.write_bytes(jpeg_bytes(solid(rgb)))
    return path


def valid_utf8(text: str) -> str:
    """The text, checked to be writable as UTF-8 (raises UnicodeEncodeError otherwise)."""
    text.encode("utf-8")
    return text


# --- 1. names that are not UTF-8 ------------------------------------------------------------------


def test_a_path_is_shown_with_its_undecodable_bytes_escaped() -> None:
    assert display_path(Path(os.fsdecode(b"photos/caf\xe9.jpg"))) == "photos/caf\\xe9.jpg"
    assert display_path(os.fsdecode(b"\xff\xfe")) == "\\xff\\xfe"
    assert display_path("crème brûlée/写真 1.jpg") == "crème brûlée/写真 1.jpg"  # valid names unchanged
    assert display_path("C:\\photos\\a.jpg") == "C:\\photos\\a.jpg"  # backslashes are not doubled
    # Control characters would break a line of a table or move the cursor of a terminal.
    assert display_path("a\nb\x1b[31m.jpg") == "a\\x0ab\\x1b[31m.jpg"
    assert display_path("rtl\u202egpj.exe") == "rtl\\u202egpj.exe"
    assert display_path("\ud800") == "\\ud800"  # a lone surrogate that is no escaped byte


def test_file_name_not_utf8_is_read_by_its_real_path_and_listed_escaped(shapes: Path) -> None:
    first = sorted((shapes / "green_square").iterdir())[0]
    put_bytes_name(shapes / "green_square").write_bytes(first.read_bytes())  # a copy, listed among duplicates
    report = check_path(shapes)
    assert report.total == 97 and not report.unreadable  # the file is read, under its real name
    doc = json.loads(valid_utf8(json.dumps(report.to_dict(), ensure_ascii=False)))
    copies = [p for g in doc["duplicates"] for p in g["paths"]]
    assert str(shapes / "green_square" / "caf\\xe9.jpg") in copies


def test_class_folder_name_not_utf8_becomes_an_escaped_class_name(tmp_path: Path) -> None:
    for name in (b"r\xe9sum\xe9", b"other"):
        folder = Path(os.fsdecode(os.path.join(os.fsencode(tmp_path), name)))
        folder.mkdir()
        put_bytes_name(folder, b"a.jpg")
    ds = load_dataset(tmp_path)
    assert ds.classes == ("other", "r\\xe9sum\\xe9")  # text a bundle, a table and JSON can hold
    assert all(s.path.is_file() for s in ds.samples)  # while each file keeps its real path


def test_missing_dataset_with_a_name_not_utf8_is_one_readable_line(tmp_path: Path) -> None:
    missing = Path(os.fsdecode(os.path.join(os.fsencode(tmp_path), b"f\xf6to")))
    with pytest.raises(DataError) as info:
        load_dataset(missing)
    assert "f\\xf6to" in valid_utf8(info.value.message)


def test_check_json_with_a_name_not_utf8_is_valid_utf8(run_cli, shapes: Path) -> None:  # type: ignore[no-untyped-def]
    put_bytes_name(shapes / "green_square")
    (shapes / "red_circle" / "broken.jpg").write_bytes(b"")
    put_bytes_name(shapes / "red_circle", b"\xe9mpty.jpg").write_bytes(b"")
    res = run_cli("check", shapes, "--json")
    assert res.code == 0, res.err
    doc = json.loads(valid_utf8(res.out))
    assert doc["total"] == 97
    assert "red_circle/\\xe9mpty.jpg" in {Path(u["path"]).relative_to(shapes).as_posix() for u in doc["unreadable"]}


def test_check_table_with_a_name_not_utf8_shows_it_escaped(run_cli, shapes: Path) -> None:  # type: ignore[no-untyped-def]
    put_bytes_name(shapes / "red_circle", b"\xe9mpty.jpg").write_bytes(b"")
    res = run_cli("check", shapes)
    assert res.code == 0, res.err
    assert "red_circle/\\xe9mpty.jpg" in valid_utf8(res.out)


def test_check_next_line_quotes_a_folder_name_not_utf8_for_the_shell(run_cli, shapes: Path) -> None:  # type: ignore[no-untyped-def]
    odd = Path(os.fsdecode(os.path.join(os.fsencode(shapes.parent), b"sh\xe4pes")))
    shapes.rename(odd)
    res = run_cli("check", odd)
    assert res.code == 0, res.err
    # bash, zsh and ksh read $'...\xe4...' as the byte itself: the line can be pasted as it is.
    assert "Next: tlearn train $'" in res.out and "sh\\xe4pes'" in res.out


@pytest.mark.parametrize("fmt", ["json", "csv", "table"])
def test_predict_with_a_name_not_utf8_writes_valid_utf8(run_cli, tiny_bundle: Path, tmp_path: Path, fmt: str) -> None:  # type: ignore[no-untyped-def]
    folder = tmp_path / "photos"
    folder.mkdir()
    put_bytes_name(folder)  # a readable image
    put_bytes_name(folder, b"\xe9mpty.jpg").write_bytes(b"")  # and a broken one
    res = run_cli("predict", tiny_bundle, folder, "--format", fmt)
    assert res.code == 0, res.err
    out = valid_utf8(res.out)
    if fmt == "json":
        doc = json.loads(out)
        assert [Path(p["path"]).name for p in doc["predictions"]] == ["caf\\xe9.jpg"]
        assert [Path(e["path"]).name for e in doc["errors"]] == ["\\xe9mpty.jpg"]
    elif fmt == "csv":
        rows = list(csv.DictReader(io.StringIO(out)))
        assert {Path(r["path"]).name for r in rows} == {"caf\\xe9.jpg", "\\xe9mpty.jpg"}
    else:
        assert "caf\\xe9.jpg" in out and "\\xe9mpty.jpg" in out


def test_train_on_a_file_name_not_utf8_finishes(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from tlearn.data.synthetic import make_sample_dataset

    data = make_sample_dataset(tmp_path / "ds", classes=2, per_class=12, seed=0)
    first = sorted((data / "green_square").iterdir())[0]
    shutil.copy(first, Path(os.fsdecode(os.path.join(os.fsencode(data / "green_square"), CAFE))))
    out = tmp_path / "run"
    res = run_cli(
        "train", data, "--method", "features", "--backbone", "test_efficientnet", "--weights", "none",
        "--input-size", "64", "--out", out,
    )  # fmt: skip
    assert res.code == 0, res.err
    for name in ("split.json", "check.json", "tlearn.json", "predictions.csv"):
        valid_utf8((out / name).read_bytes().decode("utf-8"))
    split = json.loads((out / "split.json").read_text(encoding="utf-8"))
    assert "green_square/caf\\xe9.jpg" in split["train"] + split["val"] + split["test"]


# --- 2. symlink loops and links ---------------------------------------------------------------------


def two_classes(root: Path, n: int = 20) -> Path:
    for cls, rgb in (("cats", (200, 30, 30)), ("dogs", (30, 30, 200))):
        (root / cls).mkdir(parents=True)
        for i in range(n):
            (root / cls / f"{i:02d}.jpg").write_bytes(jpeg_bytes(solid((rgb[0], rgb[1], i * 10))))
    return root


def test_symlink_loop_in_a_class_folder_counts_each_file_once(tmp_path: Path) -> None:
    data = two_classes(tmp_path / "pets")
    (data / "cats" / "loop").symlink_to(".")  # ln -s . loop
    ds = load_dataset(data)
    assert sum(s.label == "cats" for s in ds.samples) == 20  # not 820
    assert [(i.path.name, i.reason) for i in ds.ignored] == [("loop", "a link to cats, listed already")]


def test_linked_folder_is_followed_once_and_a_second_link_to_it_is_named(tmp_path: Path) -> None:
    data = two_classes(tmp_path / "pets", n=3)
    extra = tmp_path / "more cats"
    extra.mkdir()
    (extra / "x.jpg").write_bytes(jpeg_bytes(solid((1, 2, 3))))
    (data / "cats" / "more").symlink_to(extra)  # photos kept elsewhere: followed
    (data / "cats" / "again").symlink_to(extra)  # the same folder a second time: once is enough
    ds = load_dataset(data)
    cats = sorted(s.path.relative_to(data).as_posix() for s in ds.samples if s.label == "cats")
    assert cats == ["cats/00.jpg", "cats/01.jpg", "cats/02.jpg", "cats/again/x.jpg"]  # sorted: again/ first
    assert [(i.path.name, i.reason) for i in ds.ignored] == [("more", "a link to cats/again, listed already")]


def test_a_link_to_another_class_folder_or_the_dataset_is_not_followed(tmp_path: Path) -> None:
    data = two_classes(tmp_path / "pets", n=3)
    (data / "cats" / "up").symlink_to(data)  # ln -s .. up: it reached dogs/ through pets/ and took its photos
    (data / "cats" / "dogs too").symlink_to(data / "dogs")
    ds = load_dataset(data)
    assert {s.label: sum(t.label == s.label for t in ds.samples) for s in ds.samples} == {"cats": 3, "dogs": 3}
    assert {i.path.name: i.reason for i in ds.ignored} == {
        "dogs too": "a link to dogs, a class folder of its own: not followed",
        "up": "a link to the dataset's folder: not followed",
    }


def test_a_link_from_one_split_to_another_is_not_followed(tmp_path: Path) -> None:
    data = tmp_path / "pets"
    for part in ("train", "val"):
        two_classes(data / part, n=3)
    (data / "train" / "cats" / "more").symlink_to(data / "val" / "dogs")  # val/ comes after train/ in the walk
    (data / "train" / "dogs" / "all val").symlink_to(data / "val")
    ds = load_dataset(data)
    counts = {
        (p, c): sum(s.split == p and s.label == c for s in ds.samples)
        for p in ("train", "val")
        for c in ("cats", "dogs")
    }
    assert set(counts.values()) == {3}
    assert {i.path.name: i.reason for i in ds.ignored} == {
        "more": "a link to val/dogs, a class folder of its own: not followed",
        "all val": "a link to val, a split folder of its own: not followed",
    }


def test_same_file_by_a_link_or_a_hard_link_is_counted_once_and_named(tmp_path: Path) -> None:
    data = two_classes(tmp_path / "pets", n=3)
    (data / "cats" / "link.jpg").symlink_to(data / "cats" / "00.jpg")
    os.link(data / "cats" / "01.jpg", data / "dogs" / "hard.jpg")  # one file under two classes
    (data / "dogs" / "dangling.jpg").symlink_to(data / "nowhere.jpg")
    ds = load_dataset(data)
    assert len(ds.samples) == 6
    assert {i.path.name: i.reason for i in ds.ignored} == {
        "link.jpg": "same file as cats/00.jpg (a link)",
        "hard.jpg": "same file as cats/01.jpg (a hard link)",
        "dangling.jpg": "a link to nothing (no such file)",
    }


def test_check_counts_a_class_folder_with_a_symlink_loop_once(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    data = two_classes(tmp_path / "pets")
    (data / "cats" / "loop").symlink_to(".")
    res = run_cli("check", data, "--json")
    doc = json.loads(res.out)
    assert doc["counts"] == {"cats": 20, "dogs": 20}
    assert doc["ignored"] == [{"path": str(data / "cats" / "loop"), "reason": "a link to cats, listed already"}]


def test_predict_on_a_folder_with_a_symlink_loop_predicts_each_image_once(
    run_cli, tiny_bundle: Path, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    data = two_classes(tmp_path / "pets", n=2)
    (data / "cats" / "loop").symlink_to(".")
    (data / "cats" / "link.jpg").symlink_to(data / "cats" / "00.jpg")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "z.jpg").write_bytes(jpeg_bytes(solid((9, 9, 9))))
    (data / "dogs" / "more").symlink_to(elsewhere)  # a linked folder is followed, as training does
    res = run_cli("predict", tiny_bundle, data, "--format", "json")
    assert res.code == 0, res.err
    names = [Path(p["path"]).relative_to(data).as_posix() for p in json.loads(res.out)["predictions"]]
    assert names == ["cats/00.jpg", "cats/01.jpg", "dogs/00.jpg", "dogs/01.jpg", "dogs/more/z.jpg"]


def test_predict_names_each_file_once_however_it_is_given(tiny_bundle: Path, tmp_path: Path) -> None:
    from tlearn.infer.inputs import find_images

    data = two_classes(tmp_path / "pets", n=1)
    files, failures = find_images([data, data / "cats" / "00.jpg", tmp_path / "pets" / "cats" / ".." / "cats"])
    assert [f.relative_to(data).as_posix() for f in files] == ["cats/00.jpg", "dogs/00.jpg"] and not failures


# --- 3. huge files ----------------------------------------------------------------------------------


def sparse_file(path: Path, size: int) -> Path:
    """A file of `size` bytes that takes no disk space (a hole), starting like a JPEG."""
    with path.open("wb") as fh:
        fh.write(b"\xff\xd8\xff\xe0")
        fh.truncate(size)
    return path


def peak_python_memory(fn) -> int:  # type: ignore[no-untyped-def]
    import tracemalloc

    tracemalloc.start()
    try:
        fn()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


def test_huge_file_named_jpg_is_refused_before_it_is_read(tmp_path: Path) -> None:
    from tlearn.core.errors import ImageTooLarge
    from tlearn.data.images import decode_image

    huge = sparse_file(tmp_path / "movie.jpg", 2_100_000_000)  # 2.1 GB

    def decode() -> None:
        with pytest.raises(ImageTooLarge, match=r"file is 2\.1 GB, over the 200 MB limit for an image file"):
            decode_image(huge)

    assert peak_python_memory(decode) < 10_000_000  # nothing of it was read


def test_check_lists_a_huge_file_as_unreadable_with_its_size(shapes: Path) -> None:
    sparse_file(shapes / "red_circle" / "backup.jpg", 300_000_000)
    report = check_path(shapes)
    assert [(u.path.name, u.reason) for u in report.unreadable] == [
        ("backup.jpg", "file is 300 MB, over the 200 MB limit for an image file")
    ]
    assert report.total == 96


def test_predict_lists_a_huge_file_with_its_size(run_cli, tiny_bundle: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    sparse_file(tmp_path / "huge.png", 250_000_000)
    (tmp_path / "ok.jpg").write_bytes(jpeg_bytes(solid((200, 30, 30))))
    res = run_cli("predict", tiny_bundle, tmp_path, "--format", "json")
    assert res.code == 0, res.err
    assert json.loads(res.out)["errors"] == [
        {"path": str(tmp_path / "huge.png"), "error": "file is 250 MB, over the 200 MB limit for an image file"}
    ]


def test_a_pipe_named_jpg_is_refused_without_waiting_for_it(tmp_path: Path) -> None:
    import threading

    from tlearn.core.errors import UnreadableFile
    from tlearn.data.images import decode_image

    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)  # reading it waits for a writer, forever if there is none
    done = threading.Event()

    def writer() -> None:  # so that a decoder that does read it gets bytes and ends, rather than hanging the test
        while not done.wait(0.01):
            try:
                fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:  # no reader yet
                continue
            os.write(fd, b"not an image")
            os.close(fd)
            return

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    try:
        with pytest.raises(UnreadableFile, match="not a regular file"):
            decode_image(fifo)
    finally:
        done.set()
        thread.join()


# --- 4. CSV rows outside the CSV's folder ------------------------------------------------------------


def test_csv_rows_outside_its_folder_are_used_with_one_warning_naming_the_first(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    labels = tmp_path / "project" / "labels"
    labels.mkdir(parents=True)
    elsewhere = tmp_path / "project" / "images"
    elsewhere.mkdir()
    for name in ("a.jpg", "b.jpg"):
        (elsewhere / name).write_bytes(jpeg_bytes(solid((1, 2, 3))))
    (labels / "c.jpg").write_bytes(jpeg_bytes(solid((4, 5, 6))))
    (labels / "sub").mkdir()
    (labels / "sub" / "d.jpg").write_bytes(jpeg_bytes(solid((7, 8, 9))))
    csv_file = labels / "labels.csv"
    csv_file.write_text(
        f"path,label\nc.jpg,cat\n../images/a.jpg,dog\n{elsewhere / 'b.jpg'},dog\nsub/../sub/d.jpg,cat\n"
    )
    with caplog.at_level("WARNING", logger="tlearn"):
        ds = load_dataset(csv_file)
    assert len(ds.samples) == 4  # used: a CSV beside its images' folder, or with absolute paths, is common
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == [
        "2 rows of labels.csv name files outside its folder (first: labels.csv:3, ../images/a.jpg); they are "
        "used as given. A copy of the folder alone would lack them, and split.json keeps their full paths."
    ]


def test_csv_rows_inside_its_folder_give_no_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "x.jpg").write_bytes(jpeg_bytes(solid((1, 2, 3))))
    (tmp_path / "labels.csv").write_text(f"path,label\nimg/x.jpg,cat\n{tmp_path / 'img' / 'x.jpg'},dog\n")
    with caplog.at_level("WARNING", logger="tlearn"):
        load_dataset(tmp_path / "labels.csv")
    assert not [r for r in caplog.records if r.levelname == "WARNING"]


# --- a file that makes the decoder itself fail ---------------------------------------------------------


@pytest.mark.filterwarnings("ignore::UserWarning:PIL")  # Pillow warns of the tags it skips
def test_check_lists_a_tiff_that_makes_pillow_fail_as_unreadable(shapes: Path) -> None:
    from test_properties import PILLOW_CRASHES

    for i, data in enumerate(PILLOW_CRASHES.values()):
        (shapes / "red_circle" / f"scan{i}.tif").write_bytes(data)
    report = check_path(shapes)  # stopped with "Unexpected error: TypeError" before
    assert sorted(u.path.name for u in report.unreadable) == [f"scan{i}.tif" for i in range(len(PILLOW_CRASHES))]
    assert all(u.reason.startswith("truncated or corrupt") for u in report.unreadable)


def test_a_dataset_without_one_readable_image_is_a_problem_not_a_crash(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    for cls in ("cats", "dogs"):
        (tmp_path / "data" / cls).mkdir(parents=True)
        for i in range(3):
            (tmp_path / "data" / cls / f"{i}.jpg").write_text("not a photo")  # a download that saved error pages
    report = check_path(tmp_path / "data")
    assert report.problems == ("None of the 6 image files could be read.",)
    train = (
        "train",
        tmp_path / "data",
        "--backbone",
        "test_efficientnet",
        "--weights",
        "none",
        "--out",
        tmp_path / "run",
    )
    for res in (run_cli("check", tmp_path / "data"), run_cli(*train)):
        assert res.code == 1, res.out + res.err
        assert "None of the 6 image files could be read." in res.out + res.err
        assert "bug in tlearn" not in res.out + res.err
    assert not (tmp_path / "run").exists()
