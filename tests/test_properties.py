"""Properties of the parts that take user input, for any input Hypothesis can think of.

Dataset sources (any folder names, any CSV text), the split (any class counts, any duplicate groups)
and image decoding (any bytes). Each test keeps `max_examples` modest so the file runs in seconds;
`deadline=None` because the machine is shared and a slow example is not a failure.
"""

from __future__ import annotations

import io
import os
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from tlearn.core.errors import ConfigError, DataError, ImageError
from tlearn.data.images import decode_image
from tlearn.data.scan import scan_images
from tlearn.data.sources import _JUNK, Dataset, display_path, load_dataset
from tlearn.data.split import stratified_split

FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- dataset sources ----------------------------------------------------------------------------------

# A name on Linux is any bytes but '/' and NUL: UTF-8 text of any script, spaces, punctuation, control
# characters, and bytes that are no text at all (Latin-1 names from old disks).
_text_names = st.text(st.characters(exclude_characters="/\0", exclude_categories=("Cs",)), min_size=1, max_size=10).map(
    os.fsencode
)
_byte_names = st.binary(min_size=1, max_size=10).filter(lambda b: b"/" not in b and b"\0" not in b)
names = st.one_of(_text_names, _byte_names, st.sampled_from([b"a b", b" lead", b"trail ", b"-x", b"*?[]", b"\n"]))
names = names.filter(lambda b: b not in (b".", b"..") and len(b) <= 200)


def _visible(name: bytes) -> bool:
    return not name.startswith(b".") and os.fsdecode(name) not in _JUNK


@FAST
@given(classes=st.dictionaries(names, st.lists(names, max_size=3, unique=True), min_size=1, max_size=4))
@example(classes={b"caf\xe9": [b"\xff.jpg"], b"train": [b"a.jpg"]})  # a split folder beside a class folder
def test_any_folder_names_give_a_dataset_or_a_data_error(classes: dict[bytes, list[bytes]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = os.fsencode(tmp)
        expected = 0
        for cls, files in classes.items():
            os.mkdir(os.path.join(root, cls))
            for f in files:
                name = f + b".jpg"
                if len(name) > 255:
                    continue
                with open(os.path.join(root, cls, name), "wb") as fh:
                    fh.write(b"x")
                expected += _visible(cls) and _visible(name)
        try:
            ds = load_dataset(Path(tmp))
        except DataError as err:
            str(err).encode("utf-8")  # the message can be printed
            return
        _check_dataset(ds)
        if ds.kind == "folders":
            assert len(ds.samples) == expected
            shown = {display_path(os.fsdecode(c)) for c in classes if _visible(c)}
            assert set(ds.classes) | set(ds.empty_classes) <= shown


def _check_dataset(ds: Dataset) -> None:
    """What every consumer of a Dataset relies on, whatever the names were."""
    assert ds.samples and ds.classes == tuple(sorted({s.label for s in ds.samples}))
    for s in ds.samples:
        s.label.encode("utf-8")  # a class name goes into tlearn.json, tables, JSON
        display_path(s.path).encode("utf-8")
    for i in ds.ignored:
        display_path(i.path).encode("utf-8")
        i.reason.encode("utf-8")


_cells = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)
_rows = st.lists(st.lists(_cells, max_size=4), max_size=6)


@st.composite
def csv_texts(draw: st.DrawFn) -> str:
    """Text that is sometimes a CSV of ours (a header we read, then rows), sometimes anything at all."""
    if draw(st.booleans()):
        return draw(st.text(max_size=200))
    header = draw(st.sampled_from(["path,label", "file,class,split", "image,target,split", "Path ; Label"]))
    sep = draw(st.sampled_from([",", ",", ";", "\t"]))
    lines = [sep.join(row) for row in draw(_rows)]
    return header + "\n" + draw(st.sampled_from(["\n", "\r\n"])).join(lines)


@FAST
@given(text=csv_texts())
@example(text="path,label\na\0b.jpg,cat\nx.jpg,dog\n")  # a NUL in a path: no file system takes it
@example(text='path,label\n"unclosed,cat\n')
@example(text="path,label,split\nx.jpg,cat,train\ny.jpg,dog,\n")
def test_any_csv_text_gives_a_dataset_or_a_data_error(text: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        csv = Path(tmp) / "labels.csv"
        csv.write_text(text, encoding="utf-8")
        try:
            ds = load_dataset(csv)
        except DataError as err:
            str(err).encode("utf-8")
            return
        _check_dataset(ds)
        scanned = scan_images(ds.samples, cache=False, workers=1)  # the files: missing, odd names, never raises
        assert len(scanned.unreadable) == len(ds.samples) - len(scanned)


@settings(max_examples=20, deadline=None)
@given(data=st.binary(max_size=300))
@example(data="path,label\nx.jpg,caf\xe9\n".encode("latin-1"))  # a CSV saved as Latin-1
def test_any_csv_bytes_give_a_dataset_or_a_data_error(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        csv = Path(tmp) / "labels.csv"
        csv.write_bytes(data)
        try:
            _check_dataset(load_dataset(csv))
        except DataError:
            pass


def test_a_csv_with_a_field_larger_than_the_csv_module_takes_is_a_data_error(tmp_path: Path) -> None:
    (tmp_path / "labels.csv").write_text("path,label\n" + "x" * 200_000 + ".jpg,cat\n")
    with pytest.raises(DataError, match=r"labels\.csv"):
        load_dataset(tmp_path / "labels.csv")


# --- the split ------------------------------------------------------------------------------------------


@st.composite
def labelled(draw: st.DrawFn) -> tuple[list[str], list[int] | None]:
    """Labels of 1 to 5 classes of 1 to 25 images, shuffled; and sometimes duplicate groups.

    Groups join images of one class (copies of a photo) and, now and then, of two classes (one photo
    filed under both, a label conflict).
    """
    counts = draw(st.lists(st.integers(1, 25), min_size=1, max_size=5))
    labels = [f"c{k}" for k, n in enumerate(counts) for _ in range(n)]
    order = draw(st.permutations(range(len(labels))))
    labels = [labels[i] for i in order]
    if not draw(st.booleans()):
        return labels, None
    n_groups = draw(st.integers(1, len(labels)))
    groups = [draw(st.integers(0, n_groups - 1)) if draw(st.booleans()) else 1000 + i for i in range(len(labels))]
    if draw(st.booleans()):  # groups within a class only
        groups = [g if g >= 1000 else g + 100 * int(label[1:]) for g, label in zip(groups, labels, strict=True)]
    return labels, groups


fracs = st.floats(0.0, 0.45, allow_nan=False)
SPLIT = settings(max_examples=200, deadline=None)


@SPLIT
@given(data=labelled(), val_frac=fracs, test_frac=fracs, seed=st.integers(0, 2**32 - 1))
def test_split_is_a_partition_kept_by_groups_and_by_seed(
    data: tuple[list[str], list[int] | None], val_frac: float, test_frac: float, seed: int
) -> None:
    labels, groups = data
    split = stratified_split(labels, val_frac=val_frac, test_frac=test_frac, seed=seed, groups=groups)
    parts = split.parts()
    everything = np.concatenate(list(parts.values()))
    assert sorted(everything.tolist()) == list(range(len(labels)))  # each image in exactly one part
    for ix in parts.values():
        assert ix.tolist() == sorted(ix.tolist())
    if groups is not None:  # no leakage: copies of one photo never straddle two parts
        part_of = {int(i): p for p, ix in parts.items() for i in ix}
        by_group: dict[int, set[str]] = {}
        for i, g in enumerate(groups):
            by_group.setdefault(g, set()).add(part_of[i])
        assert all(len(ps) == 1 for ps in by_group.values())
    again = stratified_split(labels, val_frac=val_frac, test_frac=test_frac, seed=seed, groups=groups)
    assert all(np.array_equal(a, b) for a, b in zip(parts.values(), again.parts().values(), strict=True))
    # The test images depend on the seed and test_frac only, so runs with and without validation compare.
    other_val = stratified_split(labels, val_frac=0.0, test_frac=test_frac, seed=seed, groups=groups)
    assert np.array_equal(other_val.test, split.test)


@SPLIT
@given(data=labelled(), val_frac=fracs, test_frac=fracs, seed=st.integers(0, 2**32 - 1))
def test_split_without_duplicates_is_stratified_and_trains_on_every_class(
    data: tuple[list[str], list[int] | None], val_frac: float, test_frac: float, seed: int
) -> None:
    labels, _ = data
    split = stratified_split(labels, val_frac=val_frac, test_frac=test_frac, seed=seed)
    counts = Counter(labels)
    for part, frac in (("train", None), ("val", val_frac), ("test", test_frac)):
        got = Counter(labels[i] for i in split.parts()[part])
        for cls, n in counts.items():
            if part == "train":
                assert got[cls] >= 1  # every class is trained on
            elif n >= 3 and frac and frac > 0:
                assert got[cls] >= 1  # each part whose fraction is above zero sees every class of 3 or more
                assert abs(got[cls] - n * frac) <= 1.0  # and its share, give or take the rounding
            elif not frac:
                assert got[cls] == 0


@SPLIT
@given(data=labelled(), val_frac=fracs, test_frac=fracs, seed=st.integers(0, 2**32 - 1))
@example(data=(["c0", "c0", "c1", "c1", "c1"], [9, 9, 1, 2, 3]), val_frac=0.0, test_frac=0.2, seed=0)
def test_split_with_duplicates_trains_on_every_class(
    data: tuple[list[str], list[int] | None], val_frac: float, test_frac: float, seed: int
) -> None:
    labels, groups = data
    assume(groups is not None)
    split = stratified_split(labels, val_frac=val_frac, test_frac=test_frac, seed=seed, groups=groups)
    owners: dict[int, str] = {}
    for label, g in zip(labels, groups or [], strict=True):
        owners.setdefault(g, label)  # a group goes with its first image's class
    trained = {labels[i] for i in split.train}
    assert set(owners.values()) <= trained


@pytest.mark.parametrize("fracs", [(1.0, 0.0), (0.0, -0.1), (0.5, 0.5), (float("nan"), 0.1)])
def test_split_fractions_out_of_range_are_a_config_error(fracs: tuple[float, float]) -> None:
    with pytest.raises(ConfigError):
        stratified_split(["a", "b", "a", "b"], val_frac=fracs[0], test_frac=fracs[1])


# --- image decoding -------------------------------------------------------------------------------------


def _encoded(fmt: str, mode: str, size: tuple[int, int] = (7, 5), **kwargs: object) -> bytes:
    rng = np.random.default_rng(0)
    if mode == "I;16":
        img = Image.fromarray(rng.integers(0, 65535, size[::-1], dtype=np.uint16))
    else:
        channels = {"L": 1, "RGB": 3, "RGBA": 4, "P": 1, "CMYK": 4, "LA": 2}[mode]
        arr = rng.integers(0, 255, (*size[::-1], channels), dtype=np.uint8)
        img = Image.fromarray(arr[..., 0] if channels == 1 else arr, "L" if channels == 1 else None)
        img = img.convert(mode) if img.mode != mode else img
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


SEEDS = [
    _encoded("PNG", "RGB"),
    _encoded("PNG", "RGBA"),
    _encoded("PNG", "P"),
    _encoded("PNG", "I;16"),
    _encoded("JPEG", "RGB", (40, 24)),
    _encoded("JPEG", "CMYK"),
    _encoded("JPEG", "L", progressive=True),
    _encoded("GIF", "P"),
    _encoded("BMP", "RGB"),
    _encoded("TIFF", "RGB"),
    _encoded("TIFF", "LA"),
    _encoded("WEBP", "RGBA"),
    _encoded("ICO", "RGBA"),
    _encoded("PPM", "RGB"),
]


# TIFFs with a byte or two changed, on which Pillow's TIFF plugin fails with other exceptions than
# OSError (found by fuzzing decode_image; rare enough that Hypothesis alone seldom meets them). One of
# these in a dataset stopped `tlearn check` and `tlearn train` with "Unexpected error".
PILLOW_CRASHES = {
    "TypeError: 'float' object cannot be interpreted as an integer": bytes.fromhex(
        "49492a00080000000a000001040001000000070000000101040001000000050000000201030003000000860000000301"
        "0300010000000100000006010300010000000200000011010c00010000008c0000001501030001000000030000001601"
        "040001000000050000001701040001007600510000001c0103000100000001000000000000000800080008005e81c1d8"
        "ceea0ea220d6d881f7bc0f44b7e7cc4dba3c7c091cef4112b5263a033a50dd2b777931984d1b3fa57858a9e87eb1ec7f"
        "707a4b9a449981f75e48bfb9be7edba0e6002a8aecbe558e06e75fee4b36464cc6dacfaf8fbdaa6777b2eff4e563bed7"
        "7dda1e94e6"
    ),
    "TypeError: 'bytes' object cannot be interpreted as an integer": bytes.fromhex(
        "49492a00080000000a000001040001000000070000000101040001000000050000000201030003000000860000000301"
        "0300010000000100000006010300010000000200000011010700010000008c0000001501030001000000030000001601"
        "040001000000050000001701040001000000690000001c0103000100000001000000000000000800080008005e81c1d8"
        "ceea0ea220d6d881f7bc0f44b7e7cc4da83c7c091cef4112b5263a033a50dd2b777931cf4d1b3fa57858a9e87eb1ec7f"
        "707a"
    ),
    "TypeError: 'IFDRational' object cannot be interpreted as an i": bytes.fromhex(
        "49492a00080000000a000001040001000000070000000101040001000000050000000201030003000000860000000301"
        "0300010000000100000006010300010000000200000011010a00010000008c0000001501030001000000030000001601"
        "040001000000050000001701040001000000690000001c0103000100000001000000000000000800080008005e81c1d8"
        "ceea0ea220d6d881f7bc0f44b7e7cc4da83c7c091cef4112b5263a033a50dd2b777931cf4d1b3fa57858a9e87eb1ec7f"
        "707a4b9a449981f75e48bfb9be7edba0e6002a8aecbe558e06e75fee4b36464cc6dacfaf8fbdaa677780eff4e563bed7"
        "7dda1e94e6"
    ),
    "OverflowError: Python int too large to convert to C ssize_t": bytes.fromhex(
        "49492a00080000000b000001040001000000070000000101040001000000050000000201030002000000080008000301"
        "030001000000010000000601030001000000010000001101100001000000920000001501030001000000020000001601"
        "0400010000aa050000001701040001000000460000001c01030001000000010000005201030001000000020000000000"
        "00005e81c1d8ceea0ea220d6d881f7bc0f44b7e7cc4da83c7c091c8d4112b5263a033a50dd2b777931544d1b3fa57858"
        "a9e87ecaec7f707a4b9a449981f75e48bfb9be7edba0e600"
    ),
}


@st.composite
def image_bytes(draw: st.DrawFn) -> bytes:
    """Bytes near a real image (a valid file with some bytes changed and maybe cut short), or any bytes:
    random bytes alone rarely get past the format check, where the decoders' own parsing begins."""
    if draw(st.integers(0, 4)) == 0:
        return draw(st.binary(max_size=200))
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(0, 6))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return bytes(data)


@pytest.mark.filterwarnings("ignore::UserWarning:PIL")  # Pillow warns of the corrupt EXIF it skips
@settings(max_examples=1000, deadline=None)
@given(data=image_bytes(), short_side=st.sampled_from([None, 3, 16]))
@example(data=PILLOW_CRASHES["TypeError: 'float' object cannot be interpreted as an integer"], short_side=None)
@example(data=PILLOW_CRASHES["TypeError: 'bytes' object cannot be interpreted as an integer"], short_side=None)
@example(data=PILLOW_CRASHES["TypeError: 'IFDRational' object cannot be interpreted as an i"], short_side=16)
@example(data=PILLOW_CRASHES["OverflowError: Python int too large to convert to C ssize_t"], short_side=None)
def test_decoding_any_bytes_gives_an_image_or_an_image_error(data: bytes, short_side: int | None) -> None:
    # A smaller pixel limit than the default keeps each example fast: a mutated header can declare a
    # large image, which the decoder would allocate before finding the data cut short.
    try:
        img = decode_image(data, short_side=short_side, max_pixels=1_000_000)
    except ImageError as err:
        str(err).encode("utf-8")
        return
    h, w, c = img.pixels.shape
    assert img.pixels.dtype == np.uint8 and c == 3 and h >= 1 and w >= 1
    if short_side is not None:
        assert min(h, w) <= max(short_side, min(img.size))
