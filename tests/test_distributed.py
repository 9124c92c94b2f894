"""Several processes, one run: torchrun-style jobs of 2 CPU processes (gloo) against the single process.

Each job starts its ranks as torchrun does (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT in
the environment); `launch` gives each rank its own working folder and cache, as on two machines
without a shared disk, so anything a non-main rank writes shows. One test goes through torchrun itself.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import tlearn
from tlearn.artifacts.bundle import load_bundle
from tlearn.core import distributed
from tlearn.core.distributed import share_of
from tlearn.training.epoch import loss_denominator, share_loss
from tlearn.training.features import FeatureCache, extract_features

JOB_TIMEOUT_S = 240  # a job that hangs fails the test instead of hanging it
# The same global batch in one process and in two: dropout 0 so that no random mask differs.
FAST = [
    "--backbone", "test_efficientnet", "--weights", "none", "--input-size", "64", "--views", "1",
    "--head-epochs", "3", "--epochs", "2", "--patience", "0", "--head-lr", "0.05", "--lr", "0.01",
    "--dropout", "0", "--batch-size", "25", "--seed", "3",
]  # fmt: skip
FAST_OPTIONS = {
    "backbone": "test_efficientnet", "weights": "none", "input_size": 64, "views": 1, "seed": 3, "batch_size": 25,
}  # fmt: skip
FAST_FINETUNE = {"head_epochs": 3, "epochs": 2, "patience": 0, "head_lr": 0.05, "lr": 0.01, "dropout": 0.0}

# What each rank runs: the CLI, with `FAIL_RANK` failing in its second phase-2 training step.
CLI = """
import os, sys
from tlearn.training import top_phase as finetune
from tlearn.cli import main

if os.environ.get("FAIL_RANK") == os.environ["RANK"]:
    real, calls = finetune._TopAndHead.forward, []

    def failing(self, a):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("simulated failure in a training step")
        return real(self, a)

    finetune._TopAndHead.forward = failing
sys.argv = ["tlearn", *sys.argv[1:]]
main()
"""

# Features of 13 random images by a seeded network, gathered every 3 rows per rank; saved to argv[1].
EXTRACT = """
import sys
from functools import partial
import numpy as np, torch
from tlearn.core import distributed
from tlearn.training import features
from tlearn.training.features import FeatureCache, extract_features
sys.path.insert(0, sys.argv[2])
from test_distributed import N_IMAGES, image, network

features.FLUSH_EVERY = 3
with distributed.session("cpu"):
    rows = extract_features(
        network(), [partial(image, i) for i in range(N_IMAGES)], keys=[f"img{i}" for i in range(N_IMAGES)],
        cache=FeatureCache({"net": 1}), batch_size=2, engine="torch",
    )
np.save(sys.argv[1], rows)
"""
N_IMAGES = 13


def image(i: int) -> torch.Tensor:
    return torch.rand(3, 12, 12, generator=torch.Generator().manual_seed(i))


def network() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 5, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())


@dataclass
class Rank:
    code: int
    out: str
    err: str
    folder: Path  # its working folder
    cache: Path  # its TLEARN_CACHE_DIR


def launch(tmp: Path, code: str, *args: str | Path, ranks: int = 2, env: dict[str, str] | None = None) -> list[Rank]:
    """Run `python -c code args...` as `ranks` processes of one job, each in its own folder and cache."""
    port = _free_port()
    procs, folders = [], []
    for r in range(ranks):
        folder = tmp / f"rank{r}"
        (folder / "cwd").mkdir(parents=True)
        folders.append(folder)
        rank_env = {
            **os.environ, "RANK": str(r), "LOCAL_RANK": str(r), "WORLD_SIZE": str(ranks),
            "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "TLEARN_CACHE_DIR": str(folder / "cache"),
            "TLEARN_DIST_TIMEOUT": "60", "OMP_NUM_THREADS": "1", "COLUMNS": "200", **(env or {}),
        }  # fmt: skip
        command = [sys.executable, "-c", code, *map(str, args)]
        pipe = subprocess.PIPE
        procs.append(subprocess.Popen(command, cwd=folder / "cwd", env=rank_env, stdout=pipe, stderr=pipe, text=True))
    results = []
    try:
        for p, folder in zip(procs, folders, strict=True):
            out, err = p.communicate(timeout=JOB_TIMEOUT_S)
            results.append(Rank(p.returncode, out, err, folder / "cwd", folder / "cache"))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    return results


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def files_under(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def bundle_metrics(bundle: Path) -> dict[str, dict[str, float]]:
    metrics: dict[str, dict[str, float]] = json.loads((bundle / "tlearn.json").read_text())["metrics"]
    return metrics


def probabilities(bundle: Path) -> dict[str, float]:
    with (bundle / "predictions.csv").open() as fh:
        return {row["path"]: float(row["true_probability"]) for row in csv.DictReader(fh)}


def assert_same_run(two: Path, one: Path) -> None:
    """Same metrics, same probabilities, same history and weights, to float rounding."""
    a, b = bundle_metrics(two), bundle_metrics(one)
    assert a.keys() == b.keys() == {"val", "test"}
    for part in a:
        assert a[part]["accuracy"] == b[part]["accuracy"]
        assert a[part]["macro_f1"] == pytest.approx(b[part]["macro_f1"], abs=1e-9)
        assert a[part]["log_loss"] == pytest.approx(b[part]["log_loss"], rel=1e-3)
    pa, pb = probabilities(two), probabilities(one)
    assert pa.keys() == pb.keys() and all(abs(pa[k] - pb[k]) <= 2e-4 for k in pa)
    with (two / "history.csv").open() as fh2, (one / "history.csv").open() as fh1:
        h2, h1 = list(csv.DictReader(fh2)), list(csv.DictReader(fh1))
    assert [r["phase"] for r in h2] == [r["phase"] for r in h1]
    for r2, r1 in zip(h2, h1, strict=True):
        for col in ("train_loss", "train_acc", "val_loss", "val_acc"):
            assert float(r2[col]) == pytest.approx(float(r1[col]), rel=1e-3, abs=1e-5), (r2["epoch"], col)
    wa, wb = load_bundle(two)[0].state_dict(), load_bundle(one)[0].state_dict()
    for k in wb:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-3, atol=1e-4, msg=k)


def single_process_run(data: Path, out: Path, cache: Path, **finetune: object) -> Path:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TLEARN_CACHE_DIR", str(cache))
        tlearn.train(
            data, method="finetune", out=out, finetune=tlearn.FinetuneConfig(**{**FAST_FINETUNE, **finetune}),
            **FAST_OPTIONS,
        )  # fmt: skip
    return out


# --- sharing work: pure functions ------------------------------------------------------------------


@pytest.mark.parametrize(("n", "size"), [(1, 2), (5, 2), (13, 4), (8, 4), (3, 5)])
def test_shares_cover_every_item_once_with_even_padding(n: int, size: int) -> None:
    items = np.arange(100, 100 + n)
    shares = [share_of(items, r, size) for r in range(size)]
    assert len({len(s) for s in shares}) == 1 and len(shares[0]) == -(-n // size)  # same steps on every rank
    real = sorted(int(i) for s in shares for i in s.items[s.real])
    assert real == items.tolist()  # every item exactly once, once the padding is dropped
    padding = [int(i) for s in shares for i in s.items[~s.real]]
    assert set(padding) <= set(items.tolist()) and len(padding) == len(shares[0]) * size - n


def test_the_ranks_losses_add_up_to_the_single_process_loss() -> None:
    torch.manual_seed(0)
    logits, labels = torch.randn(7, 3), torch.tensor([0, 1, 2, 2, 1, 0, 2])
    weight = torch.tensor([0.5, 1.0, 2.0])
    whole = torch.nn.functional.cross_entropy(logits, labels, weight=weight, label_smoothing=0.1)
    parts = []
    for r in range(3):  # 7 images on 3 ranks: 3 each, two of them padding
        share = share_of(np.arange(7), r, 3)
        idx = torch.from_numpy(share.items)
        denominator = loss_denominator(labels, weight)  # of the whole batch: every rank knows it
        parts.append(
            share_loss(logits[idx], labels[idx], share, weight=weight, label_smoothing=0.1, denominator=denominator)
        )
    torch.testing.assert_close(sum(parts), whole)


def test_a_single_process_needs_no_process_group() -> None:
    with distributed.session("cpu") as world:
        assert (world.rank, world.size, world.device.type) == (0, 1, "cpu")
        assert not torch.distributed.is_initialized()
        assert distributed.is_main() and distributed.sum_across(2.0, 3) == (2.0, 3.0)
        assert distributed.from_main(lambda: "mine") == "mine"


def test_asking_for_cuda_without_a_gpu_says_so(
    run_cli: Any, shapes: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    res = run_cli("train", shapes, "--device", "cuda", "--out", tmp_path / "run")
    assert res.code == 1 and "--device cuda: PyTorch sees no CUDA GPU here" in res.err
    assert "Use --device cpu" in res.err


def test_compare_refuses_to_run_under_torchrun(run_cli: Any, shapes: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    res = run_cli("compare", shapes)
    assert res.code == 1 and "[rank 1] Error: tlearn compare runs in one process" in res.err


# --- jobs of two processes -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_rank_finetune(shapes_master: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Rank]:
    """`tlearn train --method finetune` (phase 2 on cached activations) as a job of 2 processes."""
    tmp = tmp_path_factory.mktemp("two-rank-finetune")
    return launch(tmp, CLI, "train", shapes_master, "--method", "finetune", *FAST)


def test_two_processes_fine_tune_to_the_single_process_result(
    two_rank_finetune: list[Rank], shapes_master: Path, tmp_path: Path
) -> None:
    assert [r.code for r in two_rank_finetune] == [0, 0], two_rank_finetune[1].err
    single = single_process_run(shapes_master, tmp_path / "single", tmp_path / "cache")
    assert_same_run(two_rank_finetune[0].folder / "runs" / "shapes", single)


def test_only_rank_zero_writes_files_and_prints(two_rank_finetune: list[Rank]) -> None:
    main, other = two_rank_finetune
    assert main.code == other.code == 0, other.err
    written = files_under(main.folder)
    assert {f.split("/")[1] for f in written} == {"shapes"}  # one bundle, under the default name
    assert {"runs/shapes/model.safetensors", "runs/shapes/tlearn.json", "runs/shapes/report.html"} <= set(written)
    assert files_under(main.cache)  # rank 0 keeps the caches
    assert files_under(other.folder) == [] and files_under(other.cache) == []
    assert main.out.count("Bundle: runs/shapes") == 1 and "finetune" in main.out
    assert other.out == ""
    assert "Random initial weights" in main.err and "Random initial weights" not in other.err


def test_features_extracted_by_two_ranks_equal_one_process_in_order(tmp_path: Path) -> None:
    inputs = [partial(image, i) for i in range(N_IMAGES)]
    keys = [f"img{i}" for i in range(N_IMAGES)]
    expected = extract_features(network(), inputs, batch_size=4, engine="torch")
    assert len(np.unique(expected.round(6), axis=0)) == N_IMAGES  # every row differs: order shows
    # Rank 0 has 4 of the rows cached already, rank 1 none: together they compute what either lacks.
    rank0_cache = tmp_path / "rank0" / "cache"
    extract_features(network(), inputs[:4], keys=keys[:4], cache=FeatureCache({"net": 1}, rank0_cache), engine="torch")

    ranks = launch(tmp_path, EXTRACT, "rows.npy", Path(__file__).parent)  # each rank saves in its own folder
    assert [r.code for r in ranks] == [0, 0], ranks[1].err
    rows = [np.load(r.folder / "rows.npy") for r in ranks]
    for got in rows:
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    cached = FeatureCache({"net": 1}, rank0_cache).lookup(keys)
    assert sorted(cached) == sorted(keys)  # rank 0 wrote the rows it lacked
    np.testing.assert_allclose(np.stack([cached[k] for k in keys]), expected, rtol=1e-5, atol=1e-6)
    assert files_under(ranks[1].cache) == []


def test_a_failing_rank_ends_the_job_with_a_clear_message(shapes_master: Path, tmp_path: Path) -> None:
    main, failing = launch(tmp_path, CLI, "train", shapes_master, "--method", "finetune", *FAST, env={"FAIL_RANK": "1"})
    assert failing.code != 0 and main.code != 0
    assert "[rank 1] Unexpected error: RuntimeError: simulated failure in a training step" in failing.err
    assert "[rank 0] Error: Lost contact with the other processes of the job" in main.err
    assert "Another rank failed or was stopped" in main.err
    assert not (main.folder / "runs" / "shapes" / "tlearn.json").exists()  # no bundle from a failed job
    assert "Traceback" not in main.err + failing.err


@pytest.mark.skipif(shutil.which("torchrun") is None and not Path(sys.executable).with_name("torchrun").exists(),
                    reason="torchrun is not installed")  # fmt: skip
def test_torchrun_trains_the_whole_network_like_one_process(shapes_master: Path, tmp_path: Path) -> None:
    """`torchrun --nproc-per-node 2 -m tlearn train`, phase 2 on images end to end (--unfreeze all)."""
    out = tmp_path / "two"
    env = {**os.environ, "TLEARN_CACHE_DIR": str(tmp_path / "cache2"), "TLEARN_DIST_TIMEOUT": "60", "COLUMNS": "200"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    done = subprocess.run(
        [*torchrun, "-m", "tlearn", "train", shapes_master, "--method", "finetune", "--unfreeze", "all", *FAST,
         "--out", out],
        env=env, capture_output=True, text=True, timeout=JOB_TIMEOUT_S,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count(f"Bundle: {out}") == 1  # one summary, from rank 0
    details = json.loads((out / "tlearn.json").read_text())["details"]
    assert details["cached_below"] is None  # trained on images, not on cached activations
    single = single_process_run(shapes_master, tmp_path / "one", tmp_path / "cache1", unfreeze="all")
    assert_same_run(out, single)
