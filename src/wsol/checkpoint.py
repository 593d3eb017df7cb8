"""Checkpoints: safetensors weights with the model config in the file's metadata.

Loading never unpickles: safetensors holds raw tensors and a JSON header only.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from wsol.atomic import atomic_path
from wsol.config import ModelConfig
from wsol.errors import CheckpointError, require_file
from wsol.model import WSOLModel

CONFIG_KEY = "wsol_config"
FORMAT_KEY = "wsol_format"
FORMAT_VERSION = "1"


def model_fingerprint(model: WSOLModel) -> str:
    """Hash of the model's config and weights: what a resumed job must start from."""
    digest = hashlib.sha1(model.config.to_json().encode())
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor_bytes(tensor))
    return digest.hexdigest()


def tensor_bytes(tensor: torch.Tensor) -> bytes:
    """A tensor's raw bytes (any dtype or device), for hashing."""
    return tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def save_model(model: WSOLModel, path: str | Path, half: bool = False) -> Path:
    """Save ``model`` to ``path`` (``.safetensors``), atomically.

    ``half`` stores floating-point tensors as float16 (half the size, for shipping a
    model); loading casts them back to the model's float32 parameters.
    """
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"{path}: checkpoints are written as .safetensors files")
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    if half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    metadata = {CONFIG_KEY: model.config.to_json(), FORMAT_KEY: FORMAT_VERSION}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=metadata)
    return path


def read_config(path: str | Path) -> ModelConfig:
    """Read only the model config of a checkpoint (cheap: the JSON header)."""
    path = require_file(Path(path), "checkpoint", CheckpointError)
    try:
        with safe_open(str(path), framework="pt") as fh:
            metadata = fh.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from exc
    if CONFIG_KEY not in metadata:
        raise CheckpointError(
            f"{path}: safetensors file without napari-wsol metadata ('{CONFIG_KEY}'); "
            "is it a plain timm/backbone weights file? Pass it as pretrained= instead."
        )
    try:
        return ModelConfig.from_json(metadata[CONFIG_KEY])
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: invalid model config: {exc}") from exc


def load_model(path: str | Path, device: str | torch.device | None = None) -> WSOLModel:
    """Load a :class:`WSOLModel` saved by :meth:`WSOLModel.save`, in eval mode.

    Parameters
    ----------
    path : path
        A ``.safetensors`` checkpoint.
    device : str or torch.device, optional
        Where to put the model; default CPU.
    """
    path = Path(path)
    config = read_config(path)
    model = WSOLModel(config, pretrained=False)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            state = {k: fh.get_tensor(k) for k in fh.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: damaged weights ({exc})") from exc
    _check_tensors(path, config, model.state_dict(), state)
    model.load_state_dict(state)
    return model.to(device or "cpu").eval()


def _check_tensors(
    path: Path,
    config: ModelConfig,
    expected: dict[str, torch.Tensor],
    found: dict[str, torch.Tensor],
) -> None:
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    reshaped = [k for k in expected if k in found and found[k].shape != expected[k].shape]
    if not (missing or unexpected or reshaped):
        return
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing (first: {missing[0]})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected (first: {unexpected[0]})")
    if reshaped:
        k = reshaped[0]
        problems.append(
            f"{len(reshaped)} of another shape (first: {k} is {list(found[k].shape)}, "
            f"expected {list(expected[k].shape)})"
        )
    raise CheckpointError(
        f"{path}: tensors do not match its own config ({config.backbone}, "
        f"{config.num_classes} classes): {'; '.join(problems)}"
    )
