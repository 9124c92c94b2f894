"""Feature extraction: computed once per image and view, reused from the disk cache."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from torch import nn

from tlearn.core import onnx
from tlearn.core.errors import ExtraMissingError
from tlearn.training import features
from tlearn.training.features import FeatureCache, extract_features


class Counting(nn.Module):
    """Mean colour of each image, counting how many images it saw."""

    def __init__(self) -> None:
        super().__init__()
        self.seen = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen += len(x)
        return x.mean(dim=(2, 3))


def inputs(n: int) -> list:  # type: ignore[type-arg]
    return [lambda i=i: torch.full((3, 8, 8), i / n) for i in range(n)]


def test_second_extraction_reads_the_cache_and_computes_nothing(tmp_path: Path) -> None:
    keys = [f"img{i}" for i in range(10)]
    first_model, second_model = Counting(), Counting()
    first = extract_features(first_model, inputs(10), keys=keys, cache=FeatureCache({"m": 1}, tmp_path), batch_size=4)
    second = extract_features(second_model, inputs(10), keys=keys, cache=FeatureCache({"m": 1}, tmp_path), batch_size=4)
    assert first_model.seen == 10 and second_model.seen == 0
    np.testing.assert_array_equal(first, second)
    assert first.shape == (10, 3) and np.isclose(first[3, 0], 0.3)


def test_only_new_keys_are_computed(tmp_path: Path) -> None:
    extract_features(Counting(), inputs(6), keys=[f"k{i}" for i in range(6)], cache=FeatureCache({"m": 1}, tmp_path))
    model = Counting()
    extract_features(model, inputs(8), keys=[f"k{i}" for i in range(8)], cache=FeatureCache({"m": 1}, tmp_path))
    assert model.seen == 2


def test_another_network_does_not_read_these_features(tmp_path: Path) -> None:
    keys = ["a", "b"]
    extract_features(Counting(), inputs(2), keys=keys, cache=FeatureCache({"weights": "one"}, tmp_path))
    model = Counting()
    extract_features(model, inputs(2), keys=keys, cache=FeatureCache({"weights": "two"}, tmp_path))
    assert model.seen == 2


def test_interrupted_extraction_keeps_what_it_computed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(features, "FLUSH_EVERY", 4)

    class CtrlC(Counting):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if self.seen >= 8:
                raise KeyboardInterrupt  # the user presses Ctrl-C during the third batch
            return super().forward(x)

    keys = [f"k{i}" for i in range(12)]
    with pytest.raises(KeyboardInterrupt):
        extract_features(CtrlC(), inputs(12), keys=keys, cache=FeatureCache({"m": 1}, tmp_path), batch_size=4)
    model = Counting()
    extract_features(model, inputs(12), keys=keys, cache=FeatureCache({"m": 1}, tmp_path), batch_size=4)
    assert model.seen == 4  # the first two batches were saved; only the third is computed again


# --- ONNX Runtime ------------------------------------------------------------------------------------


class Watched(nn.Module):
    """A tiny timm network (pooled features), counting the images its PyTorch forward pass saw."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = timm.create_model("test_efficientnet", pretrained=False, num_classes=0)
        self.seen = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen += len(x)
        return self.net(x)


class NotExportable(Watched):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.onnx.is_in_onnx_export():
            raise RuntimeError("this network cannot be traced")
        return super().forward(x)


def images(n: int) -> list:  # type: ignore[type-arg]
    pixels = torch.rand(n, 3, 48, 48, generator=torch.Generator().manual_seed(0))
    return [lambda i=i: pixels[i] for i in range(n)]


@pytest.fixture
def onnx_from_4_images(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("onnxruntime")
    monkeypatch.setattr(features, "onnx_pays", lambda passes, size: passes >= 4)


def test_onnx_runtime_gives_the_features_pytorch_gives(onnx_from_4_images: None) -> None:
    eager, exported = Watched(), Watched()
    reference = extract_features(eager, images(10), batch_size=4, engine="torch")
    assert eager.seen == 10
    for engine in ("auto", "onnx"):
        exported.seen = 0
        got = extract_features(exported, images(10), batch_size=4, engine=engine)
        assert exported.seen < 4, engine  # traced once for the export; ONNX Runtime ran the batches (4, 4, 2)
        assert got.shape == reference.shape == (10, exported.net.num_features)
        np.testing.assert_allclose(got, reference, rtol=1e-5, atol=1e-5)


def test_a_named_network_is_exported_once_for_every_later_extraction(onnx_from_4_images: None) -> None:
    """With `network` (what identifies it: a feature namespace), the export is kept in the cache folder:
    the next extraction (a second dataset, another process) traces nothing and gets the same features;
    another name, or another input size, is exported anew."""
    first, second, other = Watched(), Watched(), Watched()
    reference = extract_features(first, images(10), batch_size=4, engine="onnx", network={"weights": "a"})
    assert 0 < first.seen < 4  # traced for the export
    again = extract_features(second, images(10), batch_size=4, engine="onnx", network={"weights": "a"})
    assert second.seen == 0
    np.testing.assert_array_equal(again, reference)
    extract_features(other, images(10), batch_size=4, engine="onnx", network={"weights": "b"})
    assert other.seen > 0
    larger = [lambda: torch.rand(3, 64, 64)] * 4
    other.seen = 0
    extract_features(other, larger, batch_size=4, engine="onnx", network={"weights": "b"})
    assert other.seen > 0


def test_few_images_run_in_pytorch_without_an_export(onnx_from_4_images: None) -> None:
    model = Watched()
    extract_features(model, images(3), batch_size=4, engine="auto")
    assert model.seen == 3


def test_the_quick_starts_pass_runs_in_onnx_runtime_as_the_pixels_repay_the_export() -> None:
    from tlearn.models.backbones import create_backbone
    from tlearn.models.builtin import BUILTIN_NAME
    from tlearn.training.config import TrainConfig
    from tlearn.training.feature_method import for_features

    # `tlearn train demo`: auto's probe pass (the feature method's features) over every image and its mirror
    size = for_features(create_backbone(BUILTIN_NAME), TrainConfig(data=Path("demo"))).preprocessing.input_size
    assert size == (288, 288)
    assert onnx.onnx_pays(2 * 120, size)  # `tlearn sample-data demo` writes 120 images
    # The rule counts pixels: the export costs about 25 eager passes at 224 px and ONNX Runtime saves
    # 1 - 1/3.5 of every pass after it.
    assert [onnx.onnx_pays(n, (288, 288)) for n in (21, 22)] == [False, True]
    assert [onnx.onnx_pays(n, (224, 224)) for n in (35, 36)] == [False, True]
    assert [onnx.onnx_pays(n, (64, 64)) for n in (428, 429)] == [False, True]


def test_auto_exports_where_the_rule_says_it_pays_and_only_there() -> None:
    pytest.importorskip("onnxruntime")
    big = torch.rand(3, 288, 288)
    many, few = Watched(), Watched()
    extract_features(many, [lambda: big] * 22, batch_size=8, engine="auto")
    assert many.seen < 8  # traced once for the export: ONNX Runtime ran the batches
    extract_features(few, [lambda: big] * 21, batch_size=8, engine="auto")
    assert few.seen == 21  # every batch in PyTorch, no export
    small = Watched()
    extract_features(small, images(40), batch_size=8, engine="auto")  # 48 px: little work per pass
    assert small.seen == 40


def test_onnx_features_go_to_the_same_cache(onnx_from_4_images: None, tmp_path: Path) -> None:
    keys = [f"k{i}" for i in range(8)]
    first = extract_features(Watched(), images(8), keys=keys, cache=FeatureCache({"m": 1}, tmp_path), engine="onnx")
    again = Watched()
    second = extract_features(again, images(8), keys=keys, cache=FeatureCache({"m": 1}, tmp_path), engine="torch")
    assert again.seen == 0
    np.testing.assert_array_equal(first, second)


def test_a_failed_export_falls_back_on_pytorch_unless_onnx_was_asked_for(
    onnx_from_4_images: None, caplog: pytest.LogCaptureFixture
) -> None:
    reference = extract_features(Watched(), images(8), batch_size=4, engine="torch")
    model = NotExportable()
    with caplog.at_level(logging.INFO, logger=features.__name__):
        got = extract_features(model, images(8), batch_size=4, engine="auto")
    np.testing.assert_allclose(got, reference, rtol=1e-6, atol=1e-6)
    assert model.seen == 8  # every batch in PyTorch
    assert "exporting to ONNX failed (this network cannot be traced)" in caplog.text
    with pytest.raises(RuntimeError, match="cannot be traced"):
        extract_features(NotExportable(), images(8), batch_size=4, engine="onnx")


def test_without_the_export_extra_auto_runs_pytorch_and_onnx_says_what_to_install(
    onnx_from_4_images: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "onnx", None)  # `import onnx` fails, as when it is not installed
    model = Watched()
    extract_features(model, images(8), batch_size=4, engine="auto")
    assert model.seen == 8
    with pytest.raises(ExtraMissingError, match=r"pip install 'tlearn\[export\]'"):
        extract_features(Watched(), images(8), batch_size=4, engine="onnx")


def test_onnx_runtime_gets_a_few_images_per_call_one_call_in_flight_per_core_and_the_rows_keep_their_order() -> None:
    from tlearn.core.onnx import ENGINE_BATCH, Sessions, physical_cores, run_session

    sizes: list[int] = []
    lock = threading.Lock()
    in_flight = [0, 0]  # now, most

    class Session:  # stands for an ONNX Runtime session: row sums as the "features", later rows answer sooner
        def run(self, _: object, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
            with lock:
                sizes.append(len(feed["input"]))
                in_flight[0] += 1
                in_flight[1] = max(in_flight)
            time.sleep(0.02 / len(sizes))
            with lock:
                in_flight[0] -= 1
            return [feed["input"].sum(axis=(1, 2, 3))[:, None]]

    x = np.random.default_rng(0).random((21, 3, 2, 2)).astype(np.float32)
    (out,) = run_session(Sessions(Session(), lone=Unused()), "input", x)
    assert max(sizes) <= ENGINE_BATCH < 21 and sum(sizes) == 21  # faster than one call of 21 on a CPU
    assert in_flight[1] == min(physical_cores(), len(sizes))  # the cores fill while one call waits
    np.testing.assert_allclose(out[:, 0], x.sum(axis=(1, 2, 3)), rtol=1e-6)


class Unused:
    def run(self, *_: object) -> list[np.ndarray]:
        raise AssertionError("this session should not run")


class Constant:
    def __init__(self, value: float) -> None:
        self.value = value

    def run(self, _: object, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        return [np.full((len(feed["input"]), 1), self.value, dtype=np.float32)]


def test_a_single_row_runs_on_the_lone_session_where_there_is_one_and_on_the_calls_session_otherwise() -> None:
    """A server's lone request gets every core (the `lone` session); passes of several rows never do."""
    from tlearn.core.onnx import Sessions, run_session

    one, two = np.zeros((1, 3), np.float32), np.zeros((2, 3), np.float32)
    assert run_session(Sessions(Constant(1.0), lone=Constant(2.0)), "input", one)[0].tolist() == [[2.0]]
    assert run_session(Sessions(Constant(1.0), lone=Constant(2.0)), "input", two)[0].tolist() == [[1.0], [1.0]]
    assert run_session(Sessions(Constant(1.0)), "input", one)[0].tolist() == [[1.0]]


def test_opened_sessions_run_one_thread_per_call_and_the_lone_one_a_thread_per_core() -> None:
    pytest.importorskip("onnxruntime")
    from tlearn.core.onnx import open_sessions, physical_cores, run_session, to_onnx

    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()
    model = to_onnx(net, torch.rand(1, 3, 8, 8))
    assert model is not None
    bulk, served = open_sessions(model), open_sessions(model, lone=True)
    assert bulk.lone is None
    assert int(bulk.calls.get_session_options().intra_op_num_threads) == 1
    if physical_cores() > 1:
        assert int(served.lone.get_session_options().intra_op_num_threads) == physical_cores()
    x = torch.rand(3, 3, 8, 8)
    with torch.no_grad():
        want = net(x).numpy()
    for sessions in (bulk, served):
        for rows in (x[:1], x):
            np.testing.assert_allclose(run_session(sessions, "input", rows.numpy())[0], want[: len(rows)], atol=1e-6)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX")
def test_onnx_calls_still_run_in_a_forked_child_after_the_parent_ran_some() -> None:
    """A DataLoader worker is a fork: it inherits the call pool without its threads, and used to wait forever."""
    from tlearn.core.onnx import Sessions, run_session

    class Session:
        def run(self, _: object, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
            return [feed["input"].sum(axis=1, keepdims=True)]

    x = np.ones((5, 3), dtype=np.float32)
    run_session(Sessions(Session()), "input", x)  # the parent's pool now has its threads
    pid = os.fork()
    if pid == 0:  # the child: exit 0 only if its calls came back right
        ok = np.array_equal(run_session(Sessions(Session()), "input", x)[0][:, 0], np.full(5, 3.0))
        os._exit(0 if ok else 1)
    deadline = time.monotonic() + 20
    while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    if done[0] == 0:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        pytest.fail("the forked child's ONNX calls never ran")
    assert os.waitstatus_to_exitcode(done[1]) == 0
