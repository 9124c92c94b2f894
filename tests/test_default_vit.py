"""The default backbone, DINOv2 ViT-S/14, through every method: the one network users get online.

Its weights cannot be downloaded here, so the tests build its architecture with random weights and
save them as a user with downloaded weights would pass them (`--weights FILE` with a sidecar naming
the architecture; position embeddings for 518 px, as the hub's file has them). Random LayerScale
starts at 1e-5, which makes every block nearly the identity: a cut in the wrong place would still
"agree" with the whole network. The file sets it to 1, so each block changes its input.

Most runs use 28 px (2 x 2 patches of 14 px): the same network (the position embeddings are resampled
to the grid, as at 224), some thirty times cheaper than 224. One test builds it at 224.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from safetensors.torch import load_file, save_file

import tlearn
from conftest import assert_predicts_as_its_run
from tlearn.data.synthetic import make_sample_dataset
from tlearn.infer.predictor import Predictor
from tlearn.models.backbones import DEFAULT_BACKBONE, Backbone, create_backbone
from tlearn.models.classifier import FeatureTrunk
from tlearn.models.cut import cut_trunk
from tlearn.training import auto
from tlearn.training.config import FinetuneConfig, TrainConfig
from tlearn.training.feature_method import feature_trunk, for_features

SIZE = 28
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
QUICK = FinetuneConfig(head_epochs=1, epochs=1)


@pytest.fixture(scope="module")
def vit_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Random DINOv2 ViT-S/14 weights laid out as the hub's file, with a sidecar as a user would write it."""
    torch.manual_seed(0)
    model = timm.create_model("vit_small_patch14_dinov2", pretrained=False, num_classes=0)  # 518 px, as published
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith((".ls1.gamma", ".ls2.gamma")):
                p.fill_(1.0)
    path = tmp_path_factory.mktemp("weights") / "dinov2_vits14.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    sidecar = {"architecture": DEFAULT_BACKBONE, "pretrained_cfg": {"mean": IMAGENET[0], "std": IMAGENET[1]}}
    path.with_suffix(".json").write_text(json.dumps(sidecar))
    return path


@pytest.fixture(scope="module")
def vit(vit_file: Path) -> Backbone:
    return create_backbone(weights=vit_file, input_size=SIZE)


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_sample_dataset(tmp_path_factory.mktemp("vit-data") / "shapes", classes=3, per_class=12, seed=0)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("vit-cache")


def train(photos: Path, out: Path, vit_file: Path, cache: Path, **options: object) -> tlearn.TrainResult:
    """One tlearn.train run on the ViT file at 28 px, one augmented view, the module's feature cache."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TLEARN_CACHE_DIR", str(cache))
        return tlearn.train(photos, out=out, weights=vit_file, input_size=SIZE, views=1, C=1.0, **options)


@pytest.fixture(scope="module")
def finetuned(photos: Path, vit_file: Path, cache_dir: Path, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    out = tmp_path_factory.mktemp("vit-finetune") / "bundle"
    return train(photos, out, vit_file, cache_dir, method="finetune", finetune=QUICK)


@pytest.fixture(scope="module")
def two_levels(photos: Path, vit_file: Path, cache_dir: Path, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    out = tmp_path_factory.mktemp("vit-levels") / "bundle"
    return train(photos, out, vit_file, cache_dir, method="features", feature_layer="6,-1")


def test_the_default_at_224_is_vit_s14_and_its_cut_reproduces_it(vit_file: Path) -> None:
    b = create_backbone(weights=vit_file)  # the architecture from the sidecar, 224 px as tlearn runs it
    assert (b.name, b.architecture) == (DEFAULT_BACKBONE, "vit_small_patch14_dinov2")
    assert b.create_kwargs == {"img_size": 224}
    p = b.preprocessing
    assert (p.input_size, (p.mean, p.std), p.interpolation, p.crop_pct) == ((224, 224), IMAGENET, "bicubic", 1.0)
    assert b.num_features == 384 and not b.any_input_size
    assert [s.name for s in b.stages[-2:]] == ["blocks.10", "blocks.11+norm"] and len(b.stages) == 13
    assert [(lv.module, lv.channels, lv.reduction) for lv in b.levels] == [(f"blocks.{i}", 384, 14) for i in range(12)]
    # the file's weights are in, its 37 x 37 position embeddings resampled to 16 x 16 (plus the class token)
    state = load_file(str(vit_file))
    assert torch.equal(b.model.state_dict()["blocks.3.mlp.fc1.weight"], state["blocks.3.mlp.fc1.weight"])
    assert tuple(b.model.pos_embed.shape) == (1, 257, 384) and tuple(state["pos_embed"].shape) == (1, 1370, 384)
    # No FixRes for a transformer: the feature method runs it at the size its position embeddings are for.
    assert for_features(b, TrainConfig(data=Path("."))).preprocessing.input_size == (224, 224)
    # Fine-tuning the last two blocks caches the tokens entering blocks.10: cut_trunk gives None unless
    # bottom then top computes what the whole network does (checked on two random 224 px images).
    cut = cut_trunk(FeatureTrunk(b.model), b.stages[-2:], input_size=(224, 224))
    assert cut is not None and cut.boundary == "blocks.10"
    with torch.inference_mode():
        assert tuple(cut.bottom(torch.rand(1, 3, 224, 224)).shape) == (1, 257, 384)  # class token + 16 x 16 patches


def test_every_cut_of_the_vit_is_where_its_stages_say(vit: Backbone) -> None:
    trunk = FeatureTrunk(vit.model)
    for n, boundary in ((1, "blocks.11"), (3, "blocks.9"), (11, "blocks.1")):
        cut = cut_trunk(trunk, vit.stages[-n:], input_size=(SIZE, SIZE))
        assert cut is not None and cut.boundary == boundary
    for n in (12, 13):  # below blocks.0 there is only the patch embedding to cache; all: it trains too
        assert cut_trunk(trunk, vit.stages[-n:], input_size=(SIZE, SIZE)) is None


def test_a_vit_level_is_the_mean_of_its_patch_tokens(vit: Backbone) -> None:
    shell = feature_trunk(vit, "6,-1")
    assert len(shell.trunk.backbone.blocks) == 12 and len(feature_trunk(vit, "6").trunk.backbone.blocks) == 7
    x = torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    model = vit.model
    with torch.inference_mode():
        tokens = model.norm_pre(model._pos_embed(model.patch_embed((x - shell.mean) / shell.std)))
        means = []
        for i, block in enumerate(model.blocks):
            tokens = block(tokens)
            if i in (6, 11):
                means.append(tokens[:, 1:].mean(dim=1))  # the patch tokens, without the class token
        torch.testing.assert_close(shell.features(x), torch.cat(means, dim=1), rtol=1e-4, atol=1e-5)


def test_feature_method_on_two_vit_levels_predicts_the_same_after_loading(two_levels, photos: Path) -> None:  # type: ignore[no-untyped-def]
    linear = two_levels.details.linear
    assert linear.feature_layer == "6,-1" and linear.feature_dim == 2 * 384
    clf = tlearn.load(two_levels.out)
    assert isinstance(clf, Predictor) and len(clf.classifier.trunk.backbone.blocks) == 12
    assert two_levels.metrics["test"].accuracy > 1 / 3  # colours tell these classes apart even at random weights
    assert_predicts_as_its_run(two_levels.out, photos)


def test_cli_names_the_vit_levels_when_one_is_out_of_range(run_cli, photos: Path, vit_file: Path, tmp_path: Path):  # type: ignore[no-untyped-def]
    res = run_cli(
        "train", photos, "--method", "features", "--weights", vit_file, "--input-size", SIZE, "--feature-layer", "12",
        "--out", tmp_path / "run",
    )  # fmt: skip
    assert res.code == 1
    assert "--feature-layer 12 is out of range: this backbone has levels 0 to 11" in res.err + res.out


def test_finetuning_a_vit_trains_its_last_two_blocks_on_cached_tokens(finetuned, vit_file: Path) -> None:  # type: ignore[no-untyped-def]
    epochs = finetuned.details.epochs
    assert epochs.unfrozen == ("blocks.10", "blocks.11+norm") and epochs.cached_below == "blocks.10"
    assert epochs.finetune_epochs_run == 1
    start = load_file(str(vit_file))
    tuned = tlearn.load(finetuned.out).classifier.trunk.backbone.state_dict()
    for frozen in ("patch_embed.proj.weight", "cls_token", "blocks.0.attn.qkv.weight", "blocks.9.mlp.fc2.weight"):
        assert torch.equal(tuned[frozen], start[frozen]), frozen
    for trained in ("blocks.10.attn.qkv.weight", "blocks.11.mlp.fc2.weight", "norm.weight"):
        assert not torch.equal(tuned[trained], start[trained]), trained


@pytest.mark.slow
def test_finetuning_all_of_a_vit_runs_end_to_end(photos: Path, vit_file: Path, cache_dir: Path, tmp_path: Path) -> None:
    ft = FinetuneConfig(head_epochs=1, epochs=1, unfreeze="all")
    result = train(photos, tmp_path / "all", vit_file, cache_dir, method="finetune", finetune=ft)
    assert result.details.epochs.cached_below is None and len(result.details.epochs.unfrozen) == 13
    tuned = tlearn.load(result.out).classifier.trunk.backbone.state_dict()
    assert not torch.equal(tuned["patch_embed.proj.weight"], load_file(str(vit_file))["patch_embed.proj.weight"])


def test_a_features_run_after_fine_tuning_the_vit_predicts_as_its_run(  # type: ignore[no-untyped-def]
    finetuned, photos: Path, vit_file: Path, cache_dir: Path, tmp_path: Path
) -> None:
    # The same feature cache as the fine-tuning run, whose label check cached the features of the
    # network it left behind: fine-tuning must have trained a copy (0.909 against 0.8945 when it did not).
    result = train(photos, tmp_path / "features", vit_file, cache_dir, method="features")
    assert_predicts_as_its_run(result.out, photos)


@pytest.mark.slow
def test_auto_on_the_vit_probes_its_levels_and_times_its_cuts(
    photos: Path, vit_file: Path, cache_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fine-tuning timed even where it could not show (six validation images), then the features kept."""
    # so that the timing runs on data this small, whose validation split could not show a gain
    monkeypatch.setattr(auto, "fine_tuning_can_show", lambda *args: True)
    result = train(photos, tmp_path / "auto", vit_file, cache_dir, method="auto", finetune=QUICK)
    record = result.details.auto
    assert record is not None and "Linear probe: last layer" in record.explanation
    probes = record.evidence["probes"]
    assert [p["layer"] for p in probes] == ["6", "8", "11", "last"]
    assert probes[0]["description"] == "level 6: blocks.6, 384 channels, stride 14"
    estimates = record.evidence["finetune_estimates"]
    assert set(estimates) == {"1", "2", "3", "all"} and all(math.isfinite(v) and v > 0 for v in estimates.values())
    # Each cut was timed on its own (without a cut, every estimate would be the whole network's), and an
    # epoch training one block on cached tokens is cheaper than one training all twelve on pixels. (The totals
    # of this one-epoch run are mostly the cached views' forward passes, which a cut does not make cheaper:
    # "1" came out above "all" there once, 0.62 against 0.52 s, on a loaded machine.)
    epochs = record.evidence["epoch_seconds"]
    assert len(set(estimates.values())) == 4 and epochs["1"] < epochs["all"]
    # the chosen level's features came from auto's one probing pass: the bundle computes the same
    assert_predicts_as_its_run(result.out, photos)
    if record.decision["method"] == "features":  # what six validation images usually leave it
        assert result.details.linear.feature_layer == record.decision["feature_layer"]


@pytest.mark.slow
def test_onnx_export_of_a_vit_on_two_levels_computes_what_pytorch_does(two_levels, photos: Path) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("onnxruntime")
    from tlearn.infer.export import export_bundle

    files = sorted(photos.glob("*/*.jpg"))[::4]
    check = export_bundle(two_levels.out).check  # forward_intermediates of a pruned ViT, traced
    assert check.random_diff < 1e-4 and check.real_diff < 1e-4
    onnx, torch_clf = tlearn.load(two_levels.out / "model.onnx"), tlearn.load(two_levels.out)
    np.testing.assert_allclose(onnx.predict_proba(files), torch_clf.predict_proba(files), atol=1e-5)


@pytest.mark.slow
def test_serve_on_onnx_answers_as_the_fine_tuned_vit(finetuned, photos: Path) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("fastapi")
    pytest.importorskip("onnxruntime")
    from fastapi.testclient import TestClient

    from tlearn.serve.app import create_app

    clf = tlearn.load(finetuned.out)
    served = tlearn.load(finetuned.out, engine="onnx")  # the class token's path, exported in memory
    photo = sorted(photos.glob("*/*.jpg"))[0].read_bytes()
    res = TestClient(create_app(served)).post("/predict", content=photo, headers={"content-type": "image/jpeg"})
    assert res.status_code == 200 and res.json()["predictions"]
    expected = clf.predict_proba(photo)[0]
    got = {p["class"]: p["probability"] for p in res.json()["predictions"]}
    assert set(got) == set(clf.classes)
    np.testing.assert_allclose([got[c] for c in clf.classes], expected, atol=1e-5)
