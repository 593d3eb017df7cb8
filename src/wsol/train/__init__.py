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

__all__ = [
    "STAGES",
    "TrainConfig",
    "TrainData",
    "TrainProgress",
    "TrainResult",
    "TrainingError",
    "train",
]
