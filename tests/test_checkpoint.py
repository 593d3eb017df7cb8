from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

import wsol
from wsol.errors import CheckpointError, PretrainedWeightsError


def test_save_load_round_trip_reproduces_every_head(tmp_path: Path) -> None:
    model = wsol.create_model("resnet18", 3, class_names=["a", "b", "c"], mpp=0.25, pixel_hidden=32)
    path = model.save(tmp_path / "model.safetensors")
    loaded = wsol.load_model(path)
    assert loaded.config == model.config
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        a, b = model.forward_heads(x), loaded.forward_heads(x)
    for name in ("logits", "fcam", "pixel"):
        torch.testing.assert_close(getattr(a, name), getattr(b, name))
    assert wsol.read_config(path).mpp == 0.25
    assert not loaded.training


def test_checkpoint_is_plain_safetensors_without_pickle(tmp_path: Path) -> None:
    path = wsol.create_model("resnet18", 2).save(tmp_path / "m.safetensors")
    header_len = int.from_bytes(path.read_bytes()[:8], "little")
    header = path.read_bytes()[8 : 8 + header_len]
    assert b"wsol_config" in header
    # no pickle opcodes anywhere near the start of the file
    assert not path.read_bytes().startswith(b"\x80")


def test_save_is_atomic_and_keeps_the_old_file_on_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = wsol.create_model("resnet18", 2)
    path = model.save(tmp_path / "m.safetensors")
    before = path.read_bytes()

    def boom(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("wsol.checkpoint.save_file", boom)
    with pytest.raises(OSError, match="disk full"):
        model.save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]  # no temp file left


def test_save_requires_safetensors_suffix(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\.safetensors"):
        wsol.create_model("resnet18", 2).save(tmp_path / "m.pt")


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda p: None, "checkpoint not found"),
        (lambda p: p.mkdir(), "is a directory"),
        (lambda p: p.write_bytes(b""), "empty file"),
        (
            lambda p: p.write_bytes(b"\x80\x04garbage that is not safetensors"),
            "not a readable safetensors",
        ),
        (lambda p: save_file({"w": torch.zeros(2)}, str(p)), "without napari-wsol metadata"),
    ],
)
def test_bad_checkpoints_name_the_file(tmp_path: Path, setup, message: str) -> None:
    path = tmp_path / "bad.safetensors"
    setup(path)
    with pytest.raises(CheckpointError, match=message) as info:
        wsol.load_model(path)
    assert str(path) in str(info.value)


def test_truncated_checkpoint_is_reported(tmp_path: Path) -> None:
    path = wsol.create_model("resnet18", 2).save(tmp_path / "m.safetensors")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=str(path)):
        wsol.load_model(path)


def test_weights_of_another_architecture_are_rejected(tmp_path: Path) -> None:
    path = wsol.create_model("resnet18", 2).save(tmp_path / "m.safetensors")
    # Same file, but its config claims another backbone.
    from safetensors import safe_open

    with safe_open(str(path), "pt") as fh:
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
        meta = fh.metadata()
    meta["wsol_config"] = meta["wsol_config"].replace('"resnet18"', '"resnet50"')
    save_file(tensors, str(path), metadata=meta)
    with pytest.raises(CheckpointError, match="resnet50"):
        wsol.load_model(path)


def test_local_pretrained_weights_file_initialises_the_encoder(tmp_path: Path) -> None:
    reference = timm.create_model("resnet18")
    weights = tmp_path / "resnet18.safetensors"
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(weights))
    model = wsol.create_model("resnet18", 2, pretrained=weights)
    torch.testing.assert_close(model.encoder.conv1.weight, reference.conv1.weight)
    torch.testing.assert_close(
        model.encoder.layer4[1].bn2.running_var, reference.layer4[1].bn2.running_var
    )
    # A backbone whose features-only encoder renames its modules ("stages_0") loads too.
    reference = timm.create_model("convnext_atto")
    weights = tmp_path / "convnext_atto.safetensors"
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(weights))
    model = wsol.create_model("convnext_atto", 2, pretrained=weights)
    torch.testing.assert_close(model.encoder.stem_0.weight, reference.stem[0].weight)


def test_a_weights_file_of_another_model_is_refused_not_ignored(tmp_path: Path) -> None:
    """timm loads local files leniently: keys it does not know leave the encoder random."""
    foreign = tmp_path / "other.safetensors"
    save_file({"a": torch.zeros(3)}, str(foreign))
    with pytest.raises(PretrainedWeightsError, match=r"other\.safetensors: fills 0 of the"):
        wsol.create_model("resnet18", 2, pretrained=foreign)
    ours = wsol.create_model("resnet18", 2).save(tmp_path / "ours.safetensors")
    with pytest.raises(PretrainedWeightsError, match=r"ours\.safetensors"):
        wsol.create_model("resnet18", 2, pretrained=ours)  # a whole model, keys "encoder.*"
    wrong = tmp_path / "resnet34.safetensors"
    save_file(
        {k: v.contiguous() for k, v in timm.create_model("resnet34").state_dict().items()},
        str(wrong),
    )
    with pytest.raises(PretrainedWeightsError, match="resnet18"):
        wsol.create_model("resnet18", 2, pretrained=wrong)


def test_missing_local_weights_file(tmp_path: Path) -> None:
    with pytest.raises(PretrainedWeightsError, match="not found"):
        wsol.create_model("resnet18", 2, pretrained=tmp_path / "nope.safetensors")


def test_pretrained_download_fails_offline_with_a_clear_message() -> None:
    code = (
        "import wsol\n"
        "try:\n"
        "    wsol.create_model('resnet18', 2, pretrained=True)\n"
        "except wsol.PretrainedWeightsError as e:\n"
        "    print('CLEAR:', e)\n"
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert "CLEAR: could not fetch pretrained weights for 'resnet18'" in out.stdout, out.stderr
    assert "pretrained='weights.safetensors'" in out.stdout
