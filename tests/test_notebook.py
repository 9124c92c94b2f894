"""Jupyter: results show as small escaped HTML tables, and tlearn.train draws tqdm bars inside a kernel only."""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import tlearn
import tlearn.training.run as run_module
from tlearn.artifacts.details import Epochs, MethodDetails
from tlearn.artifacts.metrics import compute_metrics
from tlearn.core import notebook
from tlearn.core.notebook import NotebookProgress, in_notebook
from tlearn.core.progress import no_progress
from tlearn.data.checks import DatasetReport
from tlearn.infer.evaluate import Evaluation
from tlearn.infer.results import Failure, Prediction, Predictions, Scored
from tlearn.training.run import TrainResult

ODD = '<b>cat</b> & "dog"'  # a class name that would be markup if it were not escaped
ODD_HTML = "&lt;b&gt;cat&lt;/b&gt; &amp; &quot;dog&quot;"
CLASSES = (ODD, "fox")


class FakeBar:
    """What NotebookProgress uses of tqdm: total, n, update, close."""

    made: list[FakeBar]

    def __init__(self, *, total: int, desc: str) -> None:
        self.total, self.desc, self.n, self.closed = total, desc, 0, False
        FakeBar.made.append(self)

    def update(self, k: int) -> None:
        assert not self.closed
        self.n += k

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def bars() -> list[FakeBar]:
    FakeBar.made = []
    return FakeBar.made


def metrics() -> Any:
    y = np.array([0, 0, 1, 1])
    proba = np.array([[0.9, 0.1], [0.3, 0.7], [0.2, 0.8], [0.4, 0.6]])
    return compute_metrics(y, proba, CLASSES)


def test_progress_advances_one_bar_per_stage_and_closes_it(bars: list[FakeBar]) -> None:
    progress = NotebookProgress(FakeBar)
    for done in (0, 3, 7, 10):
        progress("decode", done, 10)
    progress("decode", 10, 10)  # a repeated final report draws no second bar
    progress("views", 0, 0)  # nothing to do: no bar
    progress("features", 4, 8)
    assert [(b.desc, b.total, b.n, b.closed) for b in bars] == [("decode", 10, 10, True), ("features", 8, 4, False)]
    progress("features", 1, 8)  # the stage starts again: a new bar
    progress("features", 8, 8)
    assert [(b.n, b.closed) for b in bars[1:]] == [(4, True), (8, True)]


def test_in_notebook_only_inside_a_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "IPython", raising=False)
    assert not in_notebook()  # and IPython was not imported to find out
    assert "IPython" not in sys.modules
    fake = types.ModuleType("IPython")
    shell: Any = types.SimpleNamespace(kernel=None)
    fake.get_ipython = lambda: shell  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "IPython", fake)
    assert not in_notebook()  # a terminal IPython
    shell.kernel = object()
    assert in_notebook()


@pytest.mark.parametrize("kernel", [True, False])
def test_train_uses_a_notebook_bar_only_in_a_kernel(monkeypatch: pytest.MonkeyPatch, kernel: bool) -> None:
    seen: dict[str, Any] = {}
    drawn = NotebookProgress(FakeBar)
    monkeypatch.setattr(notebook, "in_notebook", lambda: kernel)
    monkeypatch.setattr(notebook, "notebook_progress", lambda: drawn)
    monkeypatch.setattr(run_module, "run", lambda cfg, *, progress: seen.update(cfg=cfg, progress=progress))
    tlearn.train("photos", method="features")
    assert seen["progress"] is (drawn if kernel else no_progress)
    assert seen["cfg"].data == Path("photos")


def test_notebook_progress_is_tqdm_auto() -> None:
    from tqdm.auto import tqdm

    progress = notebook.notebook_progress()
    assert isinstance(progress, NotebookProgress) and progress._make is tqdm


def test_metrics_html_escapes_class_names() -> None:
    html = metrics()._repr_html_()
    assert ODD not in html and ODD_HTML in html and "fox" in html
    assert "75.0%" in html  # accuracy: 3 of 4
    assert html.count("<table>") == 2


def test_predictions_html_top_k_and_failures() -> None:
    items = (
        Prediction("a/<1>.jpg", (Scored(ODD, 0.9), Scored("fox", 0.1))),
        Prediction("b.jpg", (Scored("fox", 0.6), Scored(ODD, 0.4))),
    )
    html = Predictions(items, (Failure("notes.jpg", "not an image <text>"),), 0.25)._repr_html_()
    assert "2 images, 1 failed" in html
    assert f"{ODD_HTML} (90.0%)" in html and "fox (60.0%)" in html and "a/&lt;1&gt;.jpg" in html
    assert "top 2" in html and "not an image &lt;text&gt;" in html and ODD not in html


def test_predictions_html_shows_a_count_instead_of_ten_thousand_rows() -> None:
    items = tuple(Prediction(f"{i}.jpg", (Scored("fox", 1.0),)) for i in range(10_000))
    html = Predictions(items, (), 1.0)._repr_html_()
    assert html.count("<tr>") == notebook.MAX_ROWS + 2  # header, rows, "and N more"
    assert "9,950 more" in html


def test_evaluation_html(tmp_path: Path) -> None:
    m = metrics()
    evaluation = Evaluation(
        bundle=tmp_path / "bundle",
        data=tmp_path / "photos",
        split="test",
        source="the test part of <photos>",
        classes=CLASSES,
        paths=tuple(tmp_path / "photos" / f"{i}.jpg" for i in range(4)),
        y_true=np.array([0, 0, 1, 1]),
        proba=np.array([[0.9, 0.1], [0.3, 0.7], [0.2, 0.8], [0.4, 0.6]]),
        metrics=m,
        tta=False,
        unknown={"wolf": 3},
    )
    html = evaluation._repr_html_()
    assert "Evaluation on test" in html and "the test part of &lt;photos&gt;" in html
    assert ODD_HTML in html and ODD not in html and "wolf (3)" in html
    assert "1.jpg" in html and "70.0%" in html  # its one mistake, with its confidence


def test_train_result_html(tmp_path: Path) -> None:
    dataset = DatasetReport(
        root=tmp_path / "photos", kind="folders", classes=CLASSES, counts={ODD: 10, "fox": 10}, split_counts={},
        unreadable=(), ignored=(), empty_classes=(), small_classes=(), min_per_class=10, imbalance=1.0,
        width_range=(64, 64), height_range=(64, 64), modes={"RGB": 20}, duplicates=(), problems=(), warnings=(),
    )  # fmt: skip
    result = TrainResult(
        out=tmp_path / "runs" / "photos",
        method="finetune",
        classes=CLASSES,
        metrics={"val": metrics(), "test": metrics()},
        timings={"fit": 2.0, "report": 0.5},
        dataset=dataset,
        split_counts={"train": 12, "val": 4, "test": 4},
        details=MethodDetails("finetune", epochs=Epochs(summary="head linear, then unfroze blocks.6")),
    )
    html = result._repr_html_()
    assert "tlearn run: finetune on photos" in html and "head linear, then unfroze blocks.6" in html
    assert str(tmp_path / "runs" / "photos") in html and "train 12, val 4, test 4" in html
    assert ODD_HTML in html and ODD not in html
    assert ">val<" in html and ">test<" in html and "Per class, on test" in html
