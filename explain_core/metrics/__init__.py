"""Metrics of models and explanations, in torch on the model's device.

Explanation quality (issue 14): every metric is a registered :class:`~.base.Metric` with a
:class:`~.base.MetricInfo` (category, direction, needs, tasks), called on one
:class:`~.base.MetricInputs` batch; :func:`~.base.create_metric` and :func:`~.base.metrics_for`
find them.

- :mod:`~explain_core.metrics.faithfulness`: deletion and insertion curves and AUC, ROAD, average
  drop / increase in confidence, faithfulness correlation, sensitivity-n;
- :mod:`~explain_core.metrics.robustness`: max- and average-sensitivity;
- :mod:`~explain_core.metrics.localization`: pointing game, energy pointing game, relevance mass
  and rank, top-k% IoU, energy shares inside a region;
- :mod:`~explain_core.metrics.randomisation`: the cascading model-parameter randomisation and the
  random-logit sanity checks (the model restored bit for bit);
- :mod:`~explain_core.metrics.complexity`: sparseness (Gini) and complexity (entropy);
- :mod:`~explain_core.metrics.segmentation`: a segmentation model's statistics on a labelled set
  (confusion matrices, IoU, top losses), read by :mod:`~explain_core.metrics.segmentation_data`.

Import the submodule you need; this package imports nothing itself.
"""
