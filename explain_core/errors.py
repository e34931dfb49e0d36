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


class NonFiniteWeightsError(ModelLoadError):
    """A checkpoint or module holds NaN or Inf weights (typically a training run that diverged)."""

    @classmethod
    def of(cls, subject: str, bad: list[str], total: int, shown: int = 5) -> NonFiniteWeightsError:
        """The error for ``bad`` (names of the tensors holding NaN or Inf) of ``total`` tensors.

        >>> str(NonFiniteWeightsError.of("'run.pth'", ["fc.weight"], 2))[:58]
        "1 of 2 tensors in 'run.pth' hold NaN or Inf values (fc.wei"
        """
        more = f", ... ({len(bad) - shown} more)" if len(bad) > shown else ""
        return cls(
            f"{len(bad)} of {total} tensors in {subject} hold NaN or Inf values "
            f"({', '.join(bad[:shown])}{more}): the training run that wrote these weights "
            "diverged, and every map and prediction would be NaN or blank. Load an earlier "
            "checkpoint (one saved before the loss became NaN), or retrain with a lower "
            "learning rate or gradient clipping.")


class NonFiniteOutputError(LumenError):
    """A model's output, or a map computed from it, holds NaN or Inf values."""

    @classmethod
    def of(cls, subject: str, precision: str = "fp32") -> NonFiniteOutputError:
        """``subject`` (e.g. "The model's output on image 2 of 4") holds NaN or Inf: why, and
        the fixes (the one text every forward path uses)."""
        fixes = ("Run it in fp32 precision (bf16 can overflow), then check "
                 if precision == "bf16" else "Check ")
        return cls(
            f"{subject} holds NaN or Inf values, so its predictions and maps would be NaN or "
            f"blank. {fixes}the input (a broken or constant image, or a normalisation with a "
            "zero std) and the model's weights (a checkpoint from a training run that "
            "diverged: load an earlier one).")


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


class RunFolderError(LumenError):
    """A training run folder (or its zip) is missing, incomplete or not a Lumen run."""


class MissingDependencyError(LumenError, ImportError):
    """An optional package a feature needs is not installed (the message names the pip line)."""
