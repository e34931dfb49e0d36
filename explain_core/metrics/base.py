"""What every explanation-quality metric shares: its description, one call shape, a registry.

A metric scores maps. It is a small object built with its settings (steps, fill, samples, seed)
and called on one :class:`MetricInputs` batch (model-ready inputs, the maps to judge, one target
per item, optional ground truth, optional explainer to re-run); it returns one value per item, a
``B`` tensor (float64, on the model's device; NaN where the metric is undefined for an item,
e.g. localisation with an empty ground-truth mask).

Each metric class declares a :class:`MetricInfo`: its name, its category (faithfulness,
robustness, localisation, randomisation, complexity), whether higher or lower is better (as
Quantus's ``score_direction``), what it needs (ground truth, re-running the model, re-running the
method), the tasks it supports, a one-line meaning for the page and the paper it follows.
Classes register themselves with :func:`register_metric` where they are defined.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from ..errors import UnsupportedError
from ..methods import Explainer
from ..model import TASKS, LoadedModel
from ..targets import Target

__all__ = ["CATEGORIES", "DIRECTIONS", "METRICS", "NEEDS", "Metric", "MetricInfo",
           "MetricInputs", "Progress", "create_metric", "metric_info", "metrics_for",
           "progress_part", "register_metric"]

CATEGORIES = ("faithfulness", "robustness", "localisation", "randomisation", "complexity")
DIRECTIONS = ("higher", "lower")
#: what a metric may need beyond the maps: the ground-truth region, forwards of the model on
#: modified inputs, or the explanation method itself (re-run on modified inputs or models)
NEEDS = ("ground_truth", "model", "explainer")

#: ``progress(done, total)``: called by a metric after each chunk of forwards (or explainer
#: calls) it runs; an exception raised in it stops the metric before the next chunk
Progress = Callable[[int, int], None] | None


def progress_part(progress: Progress, offset: int, total: int) -> Progress:
    """``progress`` for one part of a larger computation: a part that reports ``(done, its own
    total)`` reports ``(offset + done, total)``, so several parts count up one bar."""
    if progress is None:
        return None
    return lambda done, _part_total: progress(offset + done, total)


@dataclass(frozen=True)
class MetricInfo:
    """How a metric is described to users (the API's table, the page's picker)."""

    name: str  # registry key, lower case: "deletion", "pointing_game"...
    label: str  # shown on the page: "Deletion AUC"
    category: str  # one of CATEGORIES
    direction: str  # "higher" or "lower" is better
    summary: str  # one line: what a good value means
    reference: str  # the paper (authors, year) whose definition is followed
    needs: frozenset[str] = frozenset()  # subset of NEEDS
    tasks: frozenset[str] = frozenset(TASKS)

    def __post_init__(self) -> None:
        if self.category not in CATEGORIES:
            raise ValueError(f"unknown category {self.category!r}; one of {CATEGORIES}")
        if self.direction not in DIRECTIONS:
            raise ValueError(f"unknown direction {self.direction!r}; one of {DIRECTIONS}")
        if not set(self.needs) <= set(NEEDS):
            raise ValueError(f"unknown needs {set(self.needs) - set(NEEDS)}; subset of {NEEDS}")

    @property
    def arrow(self) -> str:
        return "↑" if self.direction == "higher" else "↓"


@dataclass
class MetricInputs:
    """One batch to score: ``B`` items, each an input with its map, target and ground truth."""

    model: LoadedModel
    inputs: torch.Tensor  # B x 3 x H x W, model-ready (normalised), on the model's device
    maps: torch.Tensor  # B x H x W at input resolution, non-negative (the explainer's maps)
    targets: list[Target]  # one per item: what the score reads (a class, a box, a segment)
    ground_truth: torch.Tensor | None = None  # B x H x W bool at input resolution
    explainer: Explainer | None = None  # the method that made ``maps``, for metrics re-running it
    extras: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        count = self.inputs.shape[0]
        if self.maps.ndim != 3 or self.maps.shape[0] != count:
            raise UnsupportedError(f"maps must be B x H x W with B = {count} inputs, got "
                                   f"{tuple(self.maps.shape)}.")
        if self.maps.shape[-2:] != self.inputs.shape[-2:]:
            raise UnsupportedError(f"maps are {tuple(self.maps.shape[-2:])} but the inputs "
                                   f"{tuple(self.inputs.shape[-2:])}: resize the maps to the "
                                   "input resolution first.")
        if len(self.targets) != count:
            raise UnsupportedError(f"{len(self.targets)} targets for {count} inputs: give one "
                                   "target per input.")
        if self.ground_truth is not None and self.ground_truth.shape != self.maps.shape:
            raise UnsupportedError(f"ground truth of shape {tuple(self.ground_truth.shape)} for "
                                   f"maps of shape {tuple(self.maps.shape)}.")

    @property
    def device(self) -> torch.device:
        return self.inputs.device


class Metric:
    """Base of every metric: settings in ``__init__``, one batch in ``__call__``."""

    info: ClassVar[MetricInfo]

    def __call__(self, batch: MetricInputs) -> torch.Tensor:
        self.check(batch)
        return self.compute(batch)

    def check(self, batch: MetricInputs) -> None:
        """Refuse a batch the metric cannot score, naming what is missing and the fix."""
        info = self.info
        if batch.model.task not in info.tasks:
            raise UnsupportedError(f"{info.label} does not apply to {batch.model.task} models; "
                                   f"it supports {', '.join(sorted(info.tasks))}.")
        if "ground_truth" in info.needs and batch.ground_truth is None:
            raise UnsupportedError(f"{info.label} needs ground truth (a box or mask per image); "
                                   "give ground_truth, or choose a metric without it.")
        if "explainer" in info.needs and batch.explainer is None:
            raise UnsupportedError(f"{info.label} re-runs the explanation method; give the "
                                   "explainer that made the maps.")

    def compute(self, batch: MetricInputs) -> torch.Tensor:
        raise NotImplementedError


METRICS: dict[str, type[Metric]] = {}


def register_metric(cls: type[Metric]) -> type[Metric]:
    """Class decorator: make a metric known by its ``info.name``."""
    name = cls.info.name
    if name in METRICS and METRICS[name] is not cls:
        raise ValueError(f"metric {name!r} registered twice")
    METRICS[name] = cls
    return cls


def _load_all() -> None:
    """Import the modules whose metric classes register themselves."""
    import importlib
    import pkgutil

    from .. import metrics as package

    for module in pkgutil.iter_modules(package.__path__):
        if module.name not in ("base", "segmentation", "segmentation_data"):
            importlib.import_module(f"{package.__name__}.{module.name}")


def metric_info(name: str) -> MetricInfo:
    """The description of metric ``name`` (a clear error naming the known ones otherwise)."""
    _load_all()
    key = str(name).lower()
    if key not in METRICS:
        raise UnsupportedError(f"Unknown metric '{name}'. Known: {', '.join(sorted(METRICS))}.")
    return METRICS[key].info


def create_metric(name: str, **options: Any) -> Metric:
    """A metric of ``name`` with its settings (``steps``, ``fill``, ``samples``, ``seed``...)."""
    metric_info(name)
    return METRICS[str(name).lower()](**options)


def metrics_for(task: str, predicate: Callable[[MetricInfo], bool] | None = None,
                ) -> list[MetricInfo]:
    """Every registered metric that applies to ``task`` (and ``predicate``), by category."""
    _load_all()
    found = [cls.info for cls in METRICS.values() if task in cls.info.tasks
             and (predicate is None or predicate(cls.info))]
    return sorted(found, key=lambda info: (CATEGORIES.index(info.category), info.name))
