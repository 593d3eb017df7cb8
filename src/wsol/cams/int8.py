"""An int8 copy of a model for Score-CAM's masked forwards on the CPU.

Score-CAM scores one masked image per channel, so on a CPU its cost is that of the
model's convolutions (docs/BENCHMARKS.md, issue 2). oneDNN / FBGEMM run int8
convolutions about twice as fast as bfloat16 ones where the CPU has VNNI. Only the
*scores* of the masked images are computed in int8; which images are scored, and the
formulas that turn scores into a map, stay as Score-CAM defines them, in float32.

The copy is made by PyTorch's FX graph-mode post-training quantization (static int8
activations calibrated by min / max on the images being explained, per-channel
symmetric int8 weights). That API is deprecated upstream in favour of torchao, but it
ships with torch and needs no compiler; where it is missing or the model cannot be
traced (ViT token reshapes), :func:`int8_scorer` returns None and Score-CAM runs the
float model.
"""

from __future__ import annotations

import copy
import logging
import warnings
from collections.abc import Callable

import torch

from wsol.model import WSOLModel

log = logging.getLogger(__name__)

Scorer = Callable[[torch.Tensor], torch.Tensor]


def _qconfig_mapping():
    from torch.ao.quantization import QConfig, QConfigMapping
    from torch.ao.quantization.observer import MinMaxObserver, PerChannelMinMaxObserver

    # Min / max rather than the default histogram observer: calibration is part of every
    # call, and min / max takes a tenth of the time with the same map fidelity.
    qconfig = QConfig(
        activation=MinMaxObserver.with_args(dtype=torch.quint8),
        weight=PerChannelMinMaxObserver.with_args(
            dtype=torch.qint8, qscheme=torch.per_channel_symmetric
        ),
    )
    return QConfigMapping().set_global(qconfig).set_module_name("classifier", None)


@torch.no_grad()
def int8_scorer(model: WSOLModel, calibration: torch.Tensor) -> Scorer | None:
    """A function ``x -> logits`` running an int8 copy of ``model``, or None.

    Parameters
    ----------
    model
        The model to copy; it is not modified.
    calibration
        Normalized images ``[B, 3, H, W]`` on the CPU whose activations set the int8
        ranges: the images whose masked copies will be scored.

    Returns
    -------
    callable or None
        None when the model is not on the CPU, no quantized engine is available, or the
        model cannot be quantized; the caller then scores with the float model.
    """
    if calibration.device.type != "cpu" or model.device.type != "cpu":
        return None
    if torch.backends.quantized.engine not in ("x86", "fbgemm", "onednn"):
        return None
    try:
        from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

        with warnings.catch_warnings(), torch.autocast("cpu", enabled=False):
            warnings.simplefilter("ignore")  # the API's deprecation notices, every call
            copied = copy.deepcopy(model).eval()
            prepared = prepare_fx(copied, _qconfig_mapping(), (calibration[:1].float(),))
            prepared(calibration.float())
            quantized = convert_fx(prepared)
    except Exception as error:
        # FX tracing and lowering fail in many ways (control flow on traced values,
        # unsupported modules); each only means this model is scored in float.
        log.info(
            "Score-CAM stays in float: %s does not quantize (%s)", model.config.backbone, error
        )
        return None

    def score(x: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", enabled=False):
            return quantized(x.float())

    return score
