"""napari-wsol's engine: weakly supervised object localization with timm encoders.

No Qt, no napari: everything here runs headless (CLI, scripts, notebooks, servers).
"""

from wsol.checkpoint import load_model, read_config
from wsol.config import ModelConfig
from wsol.errors import CheckpointError, InputError, PretrainedWeightsError, WSOLError
from wsol.model import HeadOutputs, WSOLModel, create_model

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "HeadOutputs",
    "InputError",
    "ModelConfig",
    "PretrainedWeightsError",
    "WSOLError",
    "WSOLModel",
    "__version__",
    "create_model",
    "load_model",
    "read_config",
]
