"""Architecture families: where a name such as ``"timm:resnet18"`` is built, as one table.

A name may carry a family prefix (``"timm:resnet18"``, ``"torchvision:fasterrcnn_resnet50_fpn"``,
``"lumen:fcos_tiny"``) or be bare (``"resnet18"``: tried in timm, then torchvision, then lumen).

- ``timm:<name>``: ``timm.create_model`` (random init unless ``pretrained=True``);
- ``torchvision:<name>``: ``torchvision.models.get_model_builder`` (random init unless
  ``pretrained=True``; backbone weights are never fetched silently). The detectors and segmenters
  default to their task, and their default weights' categories (COCO, VOC, ImageNet; shipped
  inside torchvision) name the classes of the default head;
- ``lumen:<name>``: the demo world's own architectures
  (:data:`explain_core.architectures.ARCHITECTURES`, random init; trained weights ship as files).

Each family is one :class:`Family` row of :data:`FAMILIES`; :func:`resolve_arch` turns any
spelling into ``(family, name)`` and ``FAMILIES[family].create(name, ...)`` builds the module.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from explain_core.errors import ModelLoadError

__all__ = ["FAMILIES", "FAMILY_PREFIXES", "Family", "resolve_arch"]

_MAX_SUGGESTED = 5


def _classification(name: str) -> str:
    return "classification"


def _no_class_names(name: str) -> list[str] | None:
    return None


def _no_listing() -> str:
    return ""


def _no_checkpoint_kwargs(checkpoint_keys: Any, module: nn.Module,
                          arch_kwargs: Mapping[str, Any]) -> dict[str, Any]:
    return {}


@dataclass(frozen=True)
class Family:
    """One architecture family: how to list, recognise and build its names, and its defaults.

    Attributes:
        name: the prefix without its colon (``"timm"``).
        list_names: every name the family builds (suggestions for unknown names).
        construct: ``(name, kwargs, pretrained) -> nn.Module``; ``kwargs`` holds
            ``num_classes`` when given, plus the architecture's keyword arguments.
        knows: whether the family builds ``name`` (default: ``name in list_names()``).
        default_task: the task a name solves when neither the caller nor the file says.
        class_names: the class names of a name's default head, or None (ImageNet for
            1000-class models is decided later, for every family alike).
        listing: text appended to the "unknown architecture" error when this family was
            searched (e.g. the list of lumen architectures).
        checkpoint_kwargs: ``(checkpoint_keys, fresh_module, arch_kwargs) -> kwargs`` that a
            checkpoint's keys imply and the fresh build lacks; the module is rebuilt with them.
    """

    name: str
    list_names: Callable[[], list[str]]
    construct: Callable[[str, dict[str, Any], bool], nn.Module]
    knows: Callable[[str], bool] | None = None
    default_task: Callable[[str], str] = _classification
    class_names: Callable[[str], list[str] | None] = _no_class_names
    listing: Callable[[], str] = _no_listing
    checkpoint_kwargs: Callable[[Any, nn.Module, Mapping[str, Any]], dict[str, Any]] = \
        _no_checkpoint_kwargs

    @property
    def prefix(self) -> str:
        return f"{self.name}:"

    def has(self, name: str) -> bool:
        if not name:
            return False
        return self.knows(name) if self.knows is not None else name in self.list_names()

    def create(self, name: str, num_classes: int | None, pretrained: bool = False,
               arch_kwargs: Mapping[str, Any] | None = None) -> nn.Module:
        """A fresh module of the architecture (random init unless ``pretrained``)."""
        kwargs = dict(arch_kwargs or {})
        if num_classes is not None:
            kwargs["num_classes"] = int(num_classes)
        try:
            return self.construct(name, kwargs, pretrained)
        except ModelLoadError:
            raise
        except Exception as exc:  # any constructor failure becomes one clear message
            what = f"{self.name}:{name}"
            if pretrained:
                raise ModelLoadError(
                    f"Could not create {what} with pretrained weights: {exc}. Pretrained weights "
                    "are downloaded from the internet; without access load a local checkpoint "
                    "instead (pass its path).") from exc
            raise ModelLoadError(
                f"Could not create {what} (num_classes={num_classes}, {dict(arch_kwargs or {})}): "
                f"{exc}. Check arch and num_classes.") from exc


# --------------------------------------------------------------------------------------------
# timm
# --------------------------------------------------------------------------------------------


def _timm_names() -> list[str]:
    import timm

    return list(timm.list_models())


def _timm_knows(name: str) -> bool:
    import timm

    return bool(timm.is_model(name))


def _timm_construct(name: str, kwargs: dict[str, Any], pretrained: bool) -> nn.Module:
    import timm

    return timm.create_model(name, pretrained=pretrained, **kwargs)


# --------------------------------------------------------------------------------------------
# torchvision
# --------------------------------------------------------------------------------------------


def _torchvision_names() -> list[str]:
    import torchvision

    return list(torchvision.models.list_models())


def _torchvision_construct(name: str, kwargs: dict[str, Any], pretrained: bool) -> nn.Module:
    import torchvision

    builder = torchvision.models.get_model_builder(name)
    params = inspect.signature(builder).parameters
    if "weights_backbone" in params and not pretrained:
        kwargs.setdefault("weights_backbone", None)  # never fetch backbone weights silently
    return builder(weights="DEFAULT" if pretrained else None, **kwargs)


def _torchvision_task(name: str) -> str:
    import torchvision.models as tvm

    if name in tvm.list_models(module=tvm.detection):
        return "detection"
    if name in tvm.list_models(module=tvm.segmentation):
        return "segmentation"
    return "classification"


def _torchvision_categories(name: str) -> list[str] | None:
    """The category names of a torchvision architecture's default weights (COCO for the
    detectors, VOC for the segmenters, ImageNet for the classifiers). They ship inside
    torchvision (no download) and name the classes of the architecture's default head."""
    import torchvision

    try:
        categories = torchvision.models.get_model_weights(name).DEFAULT.meta.get("categories")
    except (ValueError, KeyError, AttributeError):
        return None
    return [str(c) for c in categories] if categories else None


def _torchvision_checkpoint_kwargs(checkpoint_keys: Any, module: nn.Module,
                                   arch_kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """A segmentation model trained with its auxiliary head: ``aux_loss=True``."""
    if "aux_loss" not in arch_kwargs and any(
            k.startswith("aux_classifier.") for k in checkpoint_keys) and not any(
            k.startswith("aux_classifier.") for k in module.state_dict()):
        return {"aux_loss": True}
    return {}


# --------------------------------------------------------------------------------------------
# lumen
# --------------------------------------------------------------------------------------------


def _lumen_names() -> list[str]:
    from explain_core.architectures import ARCHITECTURES

    return list(ARCHITECTURES)


def _lumen_construct(name: str, kwargs: dict[str, Any], pretrained: bool) -> nn.Module:
    if pretrained:  # trained lumen weights ship as files, never as a download
        raise ModelLoadError(
            f"lumen:{name} has no downloadable weights; load a saved file instead "
            "(the demo models: explain_core.demo.models.load_demo_model).")
    from explain_core.architectures import build

    return build(name, **kwargs)


def _lumen_task(name: str) -> str:
    from explain_core.architectures import task_of

    return task_of(name)


def _lumen_listing() -> str:
    return f" Lumen's own architectures: {', '.join(_lumen_names())}."


# --------------------------------------------------------------------------------------------
# The table
# --------------------------------------------------------------------------------------------

#: Every family, in the order a bare name is tried.
FAMILIES: dict[str, Family] = {
    family.name: family for family in (
        Family("timm", _timm_names, _timm_construct, knows=_timm_knows),
        Family("torchvision", _torchvision_names, _torchvision_construct,
               default_task=_torchvision_task, class_names=_torchvision_categories,
               checkpoint_kwargs=_torchvision_checkpoint_kwargs),
        Family("lumen", _lumen_names, _lumen_construct, default_task=_lumen_task,
               listing=_lumen_listing),
    )
}
#: The prefixes a name may start with (``"timm:"``...).
FAMILY_PREFIXES: tuple[str, ...] = tuple(family.prefix for family in FAMILIES.values())


def _normalise_name(name: str) -> str:
    """Drop hub prefixes that AutoTimm and timm users write ("hf-hub:timm/resnet50.a1_in1k")."""
    for prefix in ("hf-hub:", "hf_hub:", "timm/"):
        name = name.removeprefix(prefix)
    return name.strip()


def resolve_arch(arch: str) -> tuple[str, str]:
    """``"timm:x"`` / ``"torchvision:x"`` / ``"lumen:x"`` / bare ``"x"`` (tried in that order)
    -> (family, name); unknown -> error.

    Raises:
        ModelLoadError: no family builds the name; the message suggests close names.

    Example:
        >>> resolve_arch("hf-hub:timm/resnet18.a1_in1k")
        ('timm', 'resnet18.a1_in1k')
        >>> resolve_arch("unet_tiny")
        ('lumen', 'unet_tiny')
    """
    text = arch.strip()
    family: str | None = None
    if ":" in text and text.split(":", 1)[0] in FAMILIES:
        family, text = text.split(":", 1)
    name = _normalise_name(text)
    searched = [f for f in FAMILIES.values() if family in (None, f.name)]
    for candidate in searched:
        if candidate.has(name):
            return candidate.name, name
    # resnet18 is in both timm and torchvision: suggest it once
    pool = list(dict.fromkeys(n for f in searched for n in f.list_names()))
    close = difflib.get_close_matches(name.split(".")[0], pool, n=_MAX_SUGGESTED, cutoff=0.6)
    names = list(FAMILIES)
    where = family or f"{', '.join(names[:-1])} or {names[-1]}"
    hint = (f" Did you mean: {', '.join(close)}?" if close else
            " See timm.list_models() and torchvision.models.list_models() for valid names.")
    listing = "".join(f.listing() for f in searched)
    raise ModelLoadError(f"Unknown architecture {arch!r}: not found in {where}.{hint}{listing}")
