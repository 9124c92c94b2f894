"""Backbones: timm names, local weights files, offline behaviour, stages and the BatchNorm rule."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

from shared_data import FLOWERS, IMAGENET_LABELS, MOBILENET, needs
from tlearn.core.errors import BackboneError, OfflineError
from tlearn.models import backbones as bb
from tlearn.models.backbones import BUILTIN_NAME, create_backbone, set_train_mode_frozen_bn
from tlearn.models.weights_file import read_state_dict


def saved_weights(
    tmp_path: Path, arch: str = "test_resnet", *, suffix: str, head: bool, wrap: bool = False
) -> tuple[Path, dict]:
    torch.manual_seed(123)
    source = timm.create_model(arch, num_classes=7 if head else 0)
    state = source.state_dict()
    path = tmp_path / f"w{suffix}"
    if suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}} if wrap else state, path)
    return path, state


def test_shapes_and_stages_of_a_tiny_model() -> None:
    b = create_backbone("test_resnet", weights="none", input_size=64)
    assert b.preprocessing.input_size == (64, 64)
    out = b.model(torch.rand(2, 3, 64, 64))
    assert out.shape == (2, b.num_features)
    assert len(b.stages) >= 4
    names = [p for s in b.stages for p in s.params]
    assert sorted(names) == sorted(n for n, _ in b.model.named_parameters())
    assert b.stages[0].params[0].startswith("conv1")  # input side first


def test_vit_input_size_is_rebuilt_not_just_relabelled() -> None:
    b = create_backbone("test_vit", weights="none", input_size=64)
    assert b.create_kwargs["img_size"] == 64
    assert b.model(torch.rand(1, 3, 64, 64)).shape == (1, b.num_features)


@pytest.mark.parametrize(
    ("suffix", "head", "wrap"), [(".safetensors", True, False), (".pth", False, False), (".pt", True, True)]
)
def test_local_weights_load_with_or_without_head_and_wrapper(
    tmp_path: Path, suffix: str, head: bool, wrap: bool
) -> None:
    path, state = saved_weights(tmp_path, suffix=suffix, head=head, wrap=wrap)
    b = create_backbone("test_resnet", weights=path)
    loaded = b.model.state_dict()
    for k, v in loaded.items():
        assert torch.equal(v, state[k]), k
    assert b.weights == f"file:{path}" and b.weights_id.startswith("sha256:")


def test_weights_for_another_architecture_say_what_disagrees(tmp_path: Path) -> None:
    path, _ = saved_weights(tmp_path, "test_efficientnet", suffix=".safetensors", head=False)
    with pytest.raises(BackboneError, match=r"do not fit test_resnet: .*missing keys") as info:
        create_backbone("test_resnet", weights=path)
    assert "unexpected keys" in info.value.message


def test_sidecar_gives_architecture_and_preprocessing(tmp_path: Path) -> None:
    path, _ = saved_weights(tmp_path, suffix=".safetensors", head=True)
    path.with_suffix(".json").write_text(
        json.dumps(
            {
                "architecture": "test_resnet",
                "pretrained_cfg": {"mean": [0.5] * 3, "std": [0.25] * 3, "input_size": [3, 96, 96]},
            }
        )
    )
    b = create_backbone(weights=path)
    assert b.architecture == "test_resnet"
    assert b.preprocessing.mean == (0.5, 0.5, 0.5) and b.preprocessing.std == (0.25, 0.25, 0.25)
    assert b.preprocessing.input_size == (96, 96)
    with pytest.raises(BackboneError, match=r"is for test_resnet .* not test_vit"):
        create_backbone("test_vit", weights=path)


def test_weights_file_without_architecture_asks_for_backbone(tmp_path: Path) -> None:
    path, _ = saved_weights(tmp_path, suffix=".pth", head=False)
    with pytest.raises(BackboneError, match="does not say which architecture") as info:
        create_backbone(weights=path)
    assert "--backbone" in (info.value.hint or "")


def test_missing_weights_file(tmp_path: Path) -> None:
    with pytest.raises(BackboneError, match="Weights file not found"):
        create_backbone("test_resnet", weights=tmp_path / "nope.safetensors")


def test_unknown_name_gets_close_matches() -> None:
    with pytest.raises(BackboneError, match="Unknown backbone 'resnet5'") as info:
        create_backbone("resnet5")
    assert "resnet50" in (info.value.hint or "") and "tlearn backbones --filter" in (info.value.hint or "")


def test_unknown_tag_lists_the_tags() -> None:
    with pytest.raises(BackboneError, match="no pretrained weights tagged 'nope'") as info:
        create_backbone("resnet18.nope")
    assert "a1_in1k" in (info.value.hint or "")


def test_offline_env_fails_at_once_without_touching_the_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("the network was asked")

    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    bb.hub_reachable.cache_clear()
    with pytest.raises(OfflineError, match="not in the local cache") as info:
        create_backbone("resnet18")
    assert "--weights PATH" in (info.value.hint or "")
    assert f"--backbone {BUILTIN_NAME}" in (info.value.hint or "")  # the way out that needs no download


def test_unreachable_hub_is_detected_by_one_short_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def refuse(address: tuple[str, int], timeout: float) -> None:
        calls.append((address, timeout))
        raise OSError("unreachable")

    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    monkeypatch.setattr(socket, "create_connection", refuse)
    bb.hub_reachable.cache_clear()
    try:
        with pytest.raises(OfflineError, match="cannot be reached \\(offline\\)"):
            create_backbone("resnet18")
    finally:
        bb.hub_reachable.cache_clear()
    assert len(calls) == 1 and calls[0][1] <= 2.0


def test_frozen_batchnorm_keeps_running_statistics_through_training() -> None:
    b = create_backbone("test_resnet", weights="none", input_size=64)
    model = set_train_mode_frozen_bn(b.model)
    bns = bb.batchnorm_layers(model)
    assert bns and not any(m.training for m in bns)
    before = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    weights_before = next(model.parameters()).detach().clone()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(2):
        opt.zero_grad()
        model(torch.rand(4, 3, 64, 64) * 3).sum().backward()
        opt.step()
    after = model.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in before.items())
    assert not torch.equal(weights_before, next(model.parameters()))


def test_plain_train_mode_would_move_them() -> None:
    """The failure the helper prevents: in plain training mode BatchNorm rewrites its statistics."""
    b = create_backbone("test_resnet", weights="none", input_size=64)
    b.model.train()
    key = next(k for k in b.model.state_dict() if k.endswith("running_mean"))
    before = b.model.state_dict()[key].clone()
    b.model(torch.rand(4, 3, 64, 64) * 3)
    assert not torch.equal(before, b.model.state_dict()[key])


def test_listing_filters_and_counts() -> None:
    rows, total = bb.list_backbones("mobilenetv2_1", pretrained=True, limit=2)
    assert total >= 3 and len(rows) == 2
    assert all(r.name.startswith("mobilenetv2_1") and "." in r.name for r in rows)
    assert rows[0].params_m and rows[0].input_size == (224, 224)


def test_listing_puts_the_builtin_backbone_first_even_when_nothing_is_cached() -> None:
    for kwargs in ({}, {"pretrained": True}, {"cached_only": True}):
        rows, _ = bb.list_backbones("mobilenet", limit=5, **kwargs)  # type: ignore[arg-type]
        assert rows[0].name == BUILTIN_NAME and rows[0].builtin and rows[0].cached
        assert not any(r.builtin for r in rows[1:])
    first = bb.list_backbones("mobilenet", cached_only=True)[0][0]
    assert round(first.params_m or 0, 2) == 3.50 and first.license == "apache-2.0"
    rows, _ = bb.list_backbones("resnet18", pretrained=True)
    assert BUILTIN_NAME not in [r.name for r in rows]


def test_backbones_command(run_cli) -> None:  # type: ignore[no-untyped-def]
    res = run_cli("backbones", "--filter", "resnet18", "--pretrained")
    assert res.code == 0
    assert "resnet18.a1_in1k" in res.out and "apache-2.0" in res.out


def test_backbones_command_marks_the_builtin_backbone(run_cli) -> None:  # type: ignore[no-untyped-def]
    for args in (("--filter", "mobilenet"), ("--cached",)):
        res = run_cli("backbones", *args)
        assert res.code == 0
        line = next(line for line in res.out.splitlines() if BUILTIN_NAME in line)
        assert "(built in)" in line and "apache-2.0" in line
    assert "falls back" in res.out  # how the default is chosen


def test_unknown_tag_of_the_builtin_architecture_lists_the_builtin_tag() -> None:
    with pytest.raises(BackboneError, match="no pretrained weights tagged 'nope'") as info:
        create_backbone("mobilenetv2_100.nope")
    assert "tf_in1k" in (info.value.hint or "") and "ra_in1k" in (info.value.hint or "")


@pytest.mark.parametrize("wrapper", ["model_state_dict", "state_dict_ema", "model", "module"])
def test_checkpoints_wrapped_by_training_scripts_are_unwrapped(tmp_path: Path, wrapper: str) -> None:
    torch.manual_seed(7)
    state = timm.create_model("test_resnet", num_classes=0).state_dict()
    path = tmp_path / "ckpt.pth"
    torch.save({wrapper: {f"module.{k}": v for k, v in state.items()}, "epoch": 3}, path)
    loaded = read_state_dict(path)
    assert loaded.keys() == state.keys() and all(torch.equal(loaded[k], v) for k, v in state.items())


def test_an_unreadable_weights_file_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.safetensors"
    path.write_bytes(b"not a safetensors file\n" * 20)
    with pytest.raises(BackboneError, match="Cannot read weights from") as info:
        create_backbone("test_resnet", weights=path)
    assert "\n" not in info.value.message
    torch.save({"epoch": 3, "lr": 0.1}, tmp_path / "no_tensors.pth")
    with pytest.raises(BackboneError, match="does not hold a state dict of tensors"):
        read_state_dict(tmp_path / "no_tensors.pth")


def test_a_whole_pickled_model_is_refused_with_how_to_save_its_weights(tmp_path: Path) -> None:
    path = tmp_path / "model.pth"
    torch.save(timm.create_model("test_resnet", num_classes=0), path)  # the model object, not its state dict
    with pytest.raises(BackboneError, match=r"holds a whole pickled model, not its weights alone") as info:
        create_backbone("test_resnet", weights=path)
    assert "torch.save(model.state_dict(), 'weights.pth')" in str(info.value.hint)
    assert "Unsupported globals" not in info.value.message  # not torch's list of classes


@pytest.mark.real_data
@needs(MOBILENET, IMAGENET_LABELS, FLOWERS)
def test_shared_mobilenet_classifies_flowers_as_imagenet_would() -> None:
    from tlearn.data.images import decode_image

    b = create_backbone(weights=MOBILENET)
    assert b.preprocessing.mean == (0.5, 0.5, 0.5)  # from the sidecar, not ImageNet statistics
    head = read_state_dict(MOBILENET)
    labels = IMAGENET_LABELS.read_text().splitlines()[1:]
    hits = 0
    for cls, expected in (("Daisy", "daisy"), ("Sunflower", "daisy")):
        for f in sorted((FLOWERS / cls).iterdir())[:4]:
            px = decode_image(f, short_side=256).pixels
            top, left = (px.shape[0] - 224) // 2, (px.shape[1] - 224) // 2
            x = torch.from_numpy(px[top : top + 224, left : left + 224].copy()).permute(2, 0, 1)[None].float() / 255
            with torch.no_grad():
                feats = b.model((x - 0.5) / 0.5)
            logits = feats @ head["classifier.weight"].T + head["classifier.bias"]
            top5 = [labels[i] for i in logits.topk(5).indices[0]]
            hits += any(expected in name for name in top5)
    assert hits >= 7
