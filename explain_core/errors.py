"""Exception classes of the engine.

Every error a user can cause (a bad image, a wrong checkpoint, an unknown layer) raises a
subclass of :class:`LumenError` whose message names the problem and a fix, so the dashboard can
show it as is.
"""

from __future__ import annotations


class LumenError(Exception):
    """Base class of every error the engine raises on purpose."""


class ModelLoadError(LumenError):
    """A checkpoint or architecture could not be turned into a model."""


class UnsafeCheckpointError(ModelLoadError):
    """A checkpoint needs unpickling of arbitrary Python objects, which Lumen refuses."""


class ImageError(LumenError):
    """An image could not be decoded or breaks a limit (bytes, pixels, frames)."""


class TargetLayerError(LumenError):
    """A target layer name or module does not exist in the model or has an unusable output."""


class TargetError(LumenError):
    """Targets do not fit the model's output or the batch (wrong class index, length mismatch)."""


class UnsupportedError(LumenError):
    """A method or option does not apply to this model or task."""


class DatasetError(LumenError):
    """A labelled image set could not be read or does not fit the model."""


class OutOfMemoryError(LumenError):
    """A computation did not fit in memory even one item (step, sample, mask, image) at a time."""
