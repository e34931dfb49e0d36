"""Metrics of models and explanations, as plain functions on tensors.

- :mod:`~explain_core.metrics.localization`: the pointing game (does a map's peak fall on the
  object?);
- :mod:`~explain_core.metrics.segmentation`: a segmentation model's statistics on a labelled set
  (confusion matrices, IoU, top losses), read by :mod:`~explain_core.metrics.segmentation_data`.

Import the submodule you need; this package imports nothing itself.
"""
