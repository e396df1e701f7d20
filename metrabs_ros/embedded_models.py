"""Locations of the models that ship inside the package (defaults of the API, CLI and node)."""

from __future__ import annotations

import os
from pathlib import Path

MODELS_DIR = Path(__file__).resolve().parent / 'models'
DEFAULT_POSE_MODEL = MODELS_DIR / 'metrabs_default.onnx'
DEFAULT_DETECTOR = MODELS_DIR / 'detector_default.onnx'
DEFAULT_ACAE = MODELS_DIR / 'acae_default.npz'   # docs/acae.md; its formats are attached to the pose model
POSE_MODEL_ENV = 'METRABS_ROS_MODEL'
DETECTOR_ENV = 'METRABS_ROS_DETECTOR'


def default_pose_model_path() -> Path:
    """``$METRABS_ROS_MODEL`` if set, else the embedded default pose model."""
    return Path(os.environ.get(POSE_MODEL_ENV) or DEFAULT_POSE_MODEL)


def default_detector_path() -> Path:
    """``$METRABS_ROS_DETECTOR`` if set, else the embedded default person detector."""
    return Path(os.environ.get(DETECTOR_ENV) or DEFAULT_DETECTOR)
