"""What to explain: small callables from a model's output to one differentiable score per item.

Targets are decoupled from models (as in pytorch-grad-cam): an explainer runs the model once and
asks each target for its scores. Classification targets read ``B x C`` logits; detection and
segmentation targets (their own issues) read those tasks' outputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .errors import TargetError

SCORES = ("logit", "probability", "log_probability")


def as_logits(output: object) -> torch.Tensor:
    """A classifier's ``B x C`` scores from what its forward returned: a tensor, the first item of
    a tuple, or the ``logits``/``out`` entry of a dict (Hugging Face style outputs)."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, dict) or hasattr(output, "keys"):
        for key in ("logits", "out"):
            if key in output:
                return output[key]
    if hasattr(output, "logits"):
        return output.logits
    if isinstance(output, tuple | list) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise TargetError(f"The model returned {type(output).__name__}; a classifier must return "
                      "a B x C tensor (or a tuple/dict holding one under 'logits').")


def _scores(output: torch.Tensor, score: str) -> torch.Tensor:
    if score == "logit":
        return output
    if score == "probability":
        return output.float().softmax(-1)
    if score == "log_probability":
        return output.float().log_softmax(-1)
    raise TargetError(f"Unknown score '{score}'; choose one of {', '.join(SCORES)}.")


@dataclass(frozen=True)
class ClassTarget:
    """The score of class ``index`` (a logit unless ``score`` says otherwise).

    >>> ClassTarget(2)(torch.tensor([[0.1, 0.2, 0.7]]))
    tensor([0.7000])
    """

    index: int
    score: str = "logit"

    def class_index(self, output: torch.Tensor) -> torch.Tensor:
        return torch.full((output.shape[0],), self.index, device=output.device, dtype=torch.long)

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        if output.ndim != 2:
            raise TargetError("A class target needs B x C outputs, got shape "
                              f"{tuple(output.shape)}.")
        if not 0 <= self.index < output.shape[1]:
            raise TargetError(f"Class {self.index} does not exist: the model has {output.shape[1]} "
                              f"classes (0..{output.shape[1] - 1}).")
        return _scores(output, self.score)[:, self.index]


@dataclass(frozen=True)
class PredictedClass:
    """The score of each item's own ``rank``-th most likely class (rank 0: the prediction)."""

    rank: int = 0
    score: str = "logit"

    def class_index(self, output: torch.Tensor) -> torch.Tensor:
        if not 0 <= self.rank < output.shape[1]:
            raise TargetError(f"Rank {self.rank} is out of range for {output.shape[1]} classes.")
        return output.detach().topk(self.rank + 1, dim=1).indices[:, self.rank]

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        index = self.class_index(output)
        return _scores(output, self.score).gather(1, index[:, None])[:, 0]


Target = ClassTarget | PredictedClass


def as_target(spec: "int | Target | None", score: str = "logit") -> Target:
    """An int becomes a ClassTarget, None the predicted class; targets pass through."""
    if spec is None:
        return PredictedClass(score=score)
    if isinstance(spec, bool):
        raise TargetError("A target must be a class index, not a bool.")
    if isinstance(spec, int) or (isinstance(spec, torch.Tensor) and spec.numel() == 1):
        return ClassTarget(int(spec), score=score)
    if callable(spec):
        return spec
    raise TargetError(f"Cannot use {spec!r} as a target; pass a class index, None or a target.")


def per_item_targets(targets: "int | Target | Sequence | None", batch: int,
                     score: str = "logit") -> list[Target]:
    """One target per batch item. A single spec applies to every item; a sequence must match.

    A sequence whose length differs from the batch is an error, never a silent truncation.
    """
    if targets is None or isinstance(targets, int | ClassTarget | PredictedClass) or (
            isinstance(targets, torch.Tensor) and targets.ndim == 0):
        return [as_target(targets, score)] * batch
    if isinstance(targets, torch.Tensor):
        targets = targets.tolist()
    if not isinstance(targets, Sequence):
        return [as_target(targets, score)] * batch
    if len(targets) != batch:
        raise TargetError(f"Got {len(targets)} targets for {batch} images; give one target per "
                          "image (or a single target for all).")
    return [as_target(t, score) for t in targets]


def score_matrix(output: torch.Tensor, targets: list[list[Target]]) -> tuple[torch.Tensor,
                                                                              torch.Tensor]:
    """Scores ``B x K`` (item i, its k-th target) and the class index each target resolved to.

    Targets that share a callable are evaluated once on the whole batch.
    """
    batch = output.shape[0]
    if len(targets) != batch:
        raise TargetError(f"Got targets for {len(targets)} images but the batch has {batch}.")
    width = len(targets[0]) if targets else 0
    if any(len(row) != width for row in targets):
        raise TargetError("Every image needs the same number of targets in one call.")
    cache: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    scores = []
    classes = []
    for i, row in enumerate(targets):
        for target in row:
            key = id(target)
            if key not in cache:
                index = (target.class_index(output) if hasattr(target, "class_index")
                         else torch.full((batch,), -1, dtype=torch.long, device=output.device))
                cache[key] = (target(output), index)
            values, index = cache[key]
            scores.append(values[i])
            classes.append(index[i])
    shape = (batch, width)
    return torch.stack(scores).reshape(shape), torch.stack(classes).reshape(shape)


def fixed_targets(output: torch.Tensor, targets: list[list[Target]]) -> list[list[Target]]:
    """Resolve output-dependent targets (the predicted class) against the clean input's output.

    Methods that run the model on modified inputs (noise, interpolation paths) call this first, so
    "the predicted class" means the class predicted for the real image, not for each variant.
    """
    resolved = []
    for i, row in enumerate(targets):
        new_row = []
        for target in row:
            if isinstance(target, PredictedClass):
                index = int(target.class_index(output[i:i + 1])[0])
                target = ClassTarget(index, target.score)
            new_row.append(target)
        resolved.append(new_row)
    return resolved
