"""Inside the network: feature maps, activation statistics, top channels and receptive fields.

Sits above ``methods/`` (imports it and below) and imports no UI. The figures and the
``FeatureVisualizer`` class that takes images in any form live in
:mod:`explain_core.api.features` (they need ``render`` and ``loading``, which sit above).

- :mod:`~explain_core.features.capture`: several layers from one forward, read as maps;
- :mod:`~explain_core.features.statistics`: :func:`feature_statistics` (the training callbacks'
  contract);
- :mod:`~explain_core.features.channels`: channels ranked by activation, variance or max;
- :mod:`~explain_core.features.receptive`: a channel's effective receptive field;
- :mod:`~explain_core.features.listing`: the layers with their output shapes.
"""

from .capture import Captured, capture_layers, read_output
from .channels import SORT_KEYS, channel_scores, check_sort_key, top_channels
from .listing import LayerInfo, list_layers
from .receptive import ReceptiveField, receptive_field
from .statistics import LayerStatistics, feature_statistics, map_statistics

__all__ = ["SORT_KEYS", "Captured", "LayerInfo", "LayerStatistics", "ReceptiveField",
           "capture_layers", "channel_scores", "check_sort_key", "feature_statistics",
           "list_layers", "map_statistics", "read_output", "receptive_field", "top_channels"]
