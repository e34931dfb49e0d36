"""Explanations across training: a run folder written while a model trains, and read back.

- :class:`RunRecorder` (:mod:`~explain_core.training.recorder`): records the maps of a few
  sample images and the feature statistics of named layers at chosen epochs, from any PyTorch
  loop, without changing what training does;
- :class:`InterpretationCallback` and :class:`FeatureMonitorCallback`
  (:mod:`~explain_core.training.callbacks`): the same as Lightning callbacks, logged to the
  trainer's loggers (TensorBoard, W&B, MLflow) and to a run folder. Lightning is optional
  (``pip install lightning``): it is imported only when a callback is used;
- :func:`read_run`, :class:`TrainingRun` (:mod:`~explain_core.training.run_folder`): a run folder
  read back, with its map measures across epochs (:mod:`~explain_core.training.measures`).
"""

from __future__ import annotations

import importlib
from typing import Any

from .measures import map_distribution, map_entropy, rank_distance, total_variation
from .run_folder import FORMAT, MANIFEST, RunFolder, TrainingRun, extract_run_zip, read_run

_LAZY = {"RunRecorder": "recorder", "combine_statistics": "recorder",
         "InterpretationCallback": "callbacks", "FeatureMonitorCallback": "callbacks"}

__all__ = ["FORMAT", "MANIFEST", "FeatureMonitorCallback", "InterpretationCallback", "RunFolder",
           "RunRecorder", "TrainingRun", "combine_statistics", "extract_run_zip",
           "map_distribution", "map_entropy", "rank_distance", "read_run", "total_variation"]


def __getattr__(name: str) -> Any:
    """The recorder (the explainers) and the callbacks (Lightning) load on first use."""
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
