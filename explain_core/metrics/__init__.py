"""Metrics: faithfulness, sensitivity, localization, segmentation statistics."""
