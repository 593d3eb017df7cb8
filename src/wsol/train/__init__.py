"""Training the classifier and the localization heads from image-level labels."""

from wsol.train.loop import (
    STAGES,
    TrainConfig,
    TrainData,
    TrainingError,
    TrainProgress,
    TrainResult,
    train,
)
from wsol.train.reuse import RoundCache

__all__ = [
    "STAGES",
    "RoundCache",
    "TrainConfig",
    "TrainData",
    "TrainProgress",
    "TrainResult",
    "TrainingError",
    "train",
]
