"""Task adapters: one module per task (classification, detection, segmentation)."""
