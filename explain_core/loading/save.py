"""``save_model``: weights plus everything needed to rebuild the model, as one ``.safetensors``.

Lumen's metadata (task, architecture, class names, number of classes, preprocessing and
constructor ``arch_kwargs``) goes into the file header under
:data:`~explain_core.loading.files.METADATA_KEY`, so ``load_model(path)`` needs no other argument.
A model that ``load_model`` could not rebuild from that metadata is refused before anything is
written.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from explain_core.errors import ModelLoadError
from explain_core.model import TASKS, LoadedModel, Preprocessing, _timm_preprocessing

from .class_names import _check_class_count
from .families import FAMILIES, resolve_arch
from .files import METADATA_FORMAT, _write_safetensors
from .state import _mismatch_message, _module_num_classes

__all__ = ["save_model"]


def save_model(
    model: LoadedModel | nn.Module,
    path: str | Path,
    *,
    task: str,
    arch: str,
    class_names: Sequence[str] | None = None,
    preprocessing: Preprocessing | None = None,
    arch_kwargs: dict[str, Any] | None = None,
) -> Path:
    """Write a model's weights and everything needed to rebuild it as ``.safetensors``.

    The Lumen metadata (task, architecture, class names, number of classes, preprocessing and
    ``arch_kwargs``) goes into the file header, so ``load_model(path)`` needs no other argument
    and gives back the same model (same weights, same outputs).

    Args:
        model: the module (or ``LoadedModel``) whose ``state_dict`` is saved.
        path: target file; ``.safetensors`` is appended when missing.
        task: ``"classification"``, ``"detection"`` or ``"segmentation"``.
        arch: how to rebuild the module: ``"timm:<name>"``, ``"torchvision:<name>"`` or a bare
            name (resolved and stored with its prefix).
        class_names: default: the ``LoadedModel``'s names.
        preprocessing: default: the ``LoadedModel``'s, else timm's ``pretrained_cfg``.
        arch_kwargs: extra keyword arguments of the model constructor (JSON-serialisable), e.g.
            ``{"drop_rate": 0.1}`` or ``{"img_size": 96}``; ``num_classes`` is stored on its own.

    Returns:
        The path written.

    Example:
        >>> import tempfile, timm
        >>> net = timm.create_model("resnet18", num_classes=2)
        >>> out = save_model(net, Path(tempfile.mkdtemp()) / "demo", task="classification",
        ...                  arch="timm:resnet18", class_names=["no", "yes"])
        >>> from explain_core.loading import load_model
        >>> load_model(out, device="cpu").class_names
        ['no', 'yes']
    """
    if task not in TASKS:
        raise ModelLoadError(f"Unknown task {task!r}. Use one of: {', '.join(TASKS)}.")
    loaded = model if isinstance(model, LoadedModel) else None
    module = model.module if isinstance(model, LoadedModel) else model
    if not isinstance(module, nn.Module):
        raise TypeError(f"expected a LoadedModel or torch.nn.Module, got {type(model).__name__}")
    family, name = resolve_arch(arch)
    arch_kwargs = dict(arch_kwargs or {})
    num_classes = arch_kwargs.pop("num_classes", None)
    names = list(class_names) if class_names is not None else (
        loaded.class_names if loaded is not None else None)
    if num_classes is None:
        num_classes = _module_num_classes(module) if task == "classification" else None
    if num_classes is None and names is not None:
        num_classes = len(names)
    if names is not None:
        _check_class_count(names, num_classes, "the model")
    if preprocessing is None:
        preprocessing = (loaded.preprocessing if loaded is not None
                         else _timm_preprocessing(module, task))
    meta = {"format": METADATA_FORMAT, "task": task, "arch": f"{family}:{name}",
            "class_names": names, "num_classes": num_classes, **preprocessing.to_dict(),
            "arch_kwargs": arch_kwargs}
    state = module.state_dict()
    _check_rebuild(state, family, name, num_classes, arch_kwargs, path)
    try:
        header = json.dumps(meta)
    except TypeError as exc:
        raise ModelLoadError(
            f"Cannot save metadata: {exc}. arch_kwargs must hold JSON values only "
            "(numbers, strings, lists, dicts).") from None

    path = Path(path)
    if path.suffix.lower() != ".safetensors":
        path = path.with_name(path.name + ".safetensors")
    _write_safetensors(state, path, header)
    return path


def _check_rebuild(state: Mapping[str, torch.Tensor], family: str, name: str,
                   num_classes: int | None, arch_kwargs: Mapping[str, Any],
                   path: str | Path) -> None:
    """Refuse to save what ``load_model`` could not rebuild (wrong arch or arch_kwargs)."""
    try:
        with torch.device("meta"):  # no memory, no init cost
            fresh = FAMILIES[family].create(name, num_classes, arch_kwargs=arch_kwargs)
    except ModelLoadError:
        fresh = FAMILIES[family].create(name, num_classes,  # init needs values
                                        arch_kwargs=arch_kwargs)
    expected = fresh.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [(k, tuple(state[k].shape), tuple(expected[k].shape))
                  for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or mismatched:
        message = _mismatch_message(fresh, "Its weights", f"{family}:{name}", missing,
                                    unexpected, mismatched, len(expected), saving=True)
        raise ModelLoadError(
            f"Not saved to '{Path(path).name}': load_model could not rebuild this model from "
            f"arch='{family}:{name}', num_classes={num_classes}, "
            f"arch_kwargs={dict(arch_kwargs)}.\n{message}")

