"""Shared fixtures: synthetic datasets a model can learn, broken files, and running the CLI in-process."""

from __future__ import annotations

import io
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

# A Hugging Face cache of the tests' own, empty, set before huggingface_hub is imported (it reads the
# path once): a model cached on a developer's machine cannot change what a test sees.
os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="tlearn-tests-hf-")
os.environ["HF_HUB_OFFLINE"] = "1"

from tlearn.data.synthetic import make_sample_dataset

SHARED = Path(__file__).resolve().parents[2] / "shared"
FLOWERS = SHARED / "datasets" / "flowers17"
MOBILENET = SHARED / "weights" / "mobilenetv2_100.tf_in1k.safetensors"


@pytest.fixture(autouse=True)
def _isolated_caches(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test has its own empty cache, never the user's; the hub is never asked."""
    monkeypatch.setenv("TLEARN_CACHE_DIR", str(tmp_path_factory.mktemp("tlearn-cache")))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def shapes_master(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_sample_dataset(tmp_path_factory.mktemp("shapes") / "shapes", classes=4, per_class=24, seed=0)


@pytest.fixture(scope="session")
def tiny_bundle(shapes_master: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle trained once per session on `shapes_master` (tiny backbone, 64 px, fixed C). Do not change it."""
    import tlearn

    out = tmp_path_factory.mktemp("tiny-bundle") / "bundle"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TLEARN_CACHE_DIR", str(tmp_path_factory.mktemp("tiny-bundle-cache")))
        mp.setenv("HF_HUB_OFFLINE", "1")
        tlearn.train(
            shapes_master, method="features", backbone="test_efficientnet", weights="none", input_size=64, out=out,
            C=1.0,
        )  # fmt: skip
    return out


@pytest.fixture
def shapes(shapes_master: Path, tmp_path: Path) -> Path:
    """A private copy of a 4-class synthetic dataset (24 images per class) that a test may change."""
    return Path(shutil.copytree(shapes_master, tmp_path / "shapes"))


def assert_predicts_as_its_run(bundle: Path, photos: Path) -> None:
    """The reloaded bundle gives each scored image the class and confidence its run wrote in predictions.csv."""
    import tlearn
    from tlearn.artifacts.predictions import PREDICTIONS_FILE, read_predictions

    rows = read_predictions(bundle / PREDICTIONS_FILE)
    clf = tlearn.load(bundle)
    proba = clf.predict_proba([photos / r.path for r in rows])
    assert [clf.classes[i] for i in proba.argmax(axis=1)] == [r.predicted for r in rows]
    np.testing.assert_allclose(proba.max(axis=1), [r.confidence for r in rows], atol=1e-3)


def jpeg_bytes(img: Image.Image, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", **kwargs)
    return buf.getvalue()


def solid(rgb: tuple[int, int, int], size: tuple[int, int] = (40, 30)) -> Image.Image:
    return Image.new("RGB", size, rgb)


def add_broken_files(root: Path, cls: str) -> dict[str, str]:
    """Put the classic broken files into class folder `cls`; returns file name -> expected reason."""
    folder = root / cls
    good = (np.random.default_rng(1).random((64, 64, 3)) * 255).astype(np.uint8)
    data = jpeg_bytes(Image.fromarray(good))
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.jpg").write_text("this is not a picture\n")
    return {"truncated.jpg": "truncated", "empty.jpg": "empty", "notes.jpg": "not an image"}


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """Run `tlearn ARGS...` through the real entry point, in this process."""
    from tlearn.cli import main

    def run(*args: str | Path) -> CliResult:
        monkeypatch.setattr(sys, "argv", ["tlearn", *map(str, args)])
        monkeypatch.setenv("COLUMNS", "200")
        capsys.readouterr()
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run
