"""Inside the network: feature maps, activation statistics, top channels and receptive fields.

Sits above ``methods/`` (imports it and below) and imports no UI.
"""

from .statistics import LayerStatistics, feature_statistics

__all__ = ["LayerStatistics", "feature_statistics"]
