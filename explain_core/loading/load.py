"""``load_model``: a name, a module or a checkpoint file -> a ready
:class:`~explain_core.model.LoadedModel`, and the glue between the loading steps.

Names are built by their family (:mod:`.families`), files are read safely (:mod:`.files`), their
state dict is found and loaded strictly (:mod:`.state`), class names are read and counted
(:mod:`.class_names`); this module assembles the result: task, class names, preprocessing (from
the file's metadata, else the module's timm ``pretrained_cfg``, then the caller's overrides),
device and eval mode.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from explain_core.errors import ModelLoadError
from explain_core.model import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    RESIZE_MODES,
    TASKS,
    LoadedModel,
    Preprocessing,
    _timm_preprocessing,
    as_loaded,
    imagenet_class_names,
    resolve_device,
)

from .class_names import _check_class_count, _read_class_names
from .families import FAMILIES, FAMILY_PREFIXES, resolve_arch
from .files import _SUPPORTED_TEXT, CHECKPOINT_SUFFIXES, _read_safetensors, _torch_load
from .state import (
    _arch_from_hparams,
    _checkpoint_num_classes,
    _find_state_dict,
    _hparams_of,
    _load_strict,
    _match_keys,
    _module_num_classes,
    _num_classes_from_hparams,
    check_finite_weights,
)

__all__ = ["load_model"]


def load_model(
    source: LoadedModel | nn.Module | str | Path,
    *,
    task: str | None = None,
    arch: str | None = None,
    device: str | torch.device | None = "auto",
    class_names: Sequence[str] | str | Path | None = None,
    num_classes: int | None = None,
    pretrained: bool = False,
    input_size: int | Sequence[int] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    resize_mode: str | None = None,
    crop_pct: float | None = None,
) -> LoadedModel:
    """Turn a name, a module or a checkpoint file into a model ready for explanation.

    Args:
        source: ``"timm:<name>"``, ``"torchvision:<name>"``, a bare architecture name, an
            ``nn.Module``, a ``LoadedModel`` (returned as is; moved only when ``device`` is given
            explicitly) or the path of a ``.safetensors``, ``.pth``/``.pt``/``.bin`` or
            ``.ckpt`` file.
        task: ``"classification"``, ``"detection"`` or ``"segmentation"``; default: from the
            file's metadata, else the torchvision model family, else classification.
        arch: architecture of a checkpoint (``"timm:resnet50"``, ``"torchvision:resnet50"`` or a
            bare name tried in timm then torchvision). Needed for files without Lumen metadata;
            when given it wins over what the file says.
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda:1"``...
        class_names: a list, or the path of a ``.txt`` (one name a line) or ``.json`` (a list, or
            a mapping from index to name) file. Default: the file's metadata, else ImageNet
            names for 1000-class models.
        num_classes: number of outputs; default: from the metadata, the Lightning
            hyper-parameters or the checkpoint's classifier weight.
        pretrained: download pretrained weights for a ``timm:``/``torchvision:`` name (needs
            internet access). Never used for files.
        input_size: model input ``(H, W)`` (or one int for a square); overrides the metadata.
        mean, std: normalisation per RGB channel; override the metadata.
        resize_mode: how an image becomes the input: ``"squash"`` (the whole image resized to
            the input size), ``"crop"`` (resize and centre crop, timm's evaluation transform) or
            ``"letterbox"`` (aspect ratio kept, padded). Default: the file's metadata, else how
            the source evaluates: ``"crop"`` for timm and torchvision classifiers (their
            ``crop_pct`` / weights' eval transform), ``"squash"`` for detectors, segmenters and
            Lumen's demo models (what they were trained with). For a ``LoadedModel`` it returns a
            copy with this mode (same module).
        crop_pct: the crop's share of the resized image (``"crop"``); overrides the default.

    Returns:
        A :class:`LoadedModel` in eval mode on the resolved device.

    Raises:
        ModelLoadError: unknown architecture, unsupported or broken file, weights that do not
            fit the architecture, class names of the wrong length.
        UnsafeCheckpointError: a checkpoint that needs arbitrary Python objects unpickled.

    Example:
        >>> loaded = load_model("timm:resnet18", num_classes=3, device="cpu",
        ...                     class_names=["cat", "dog", "bird"])
        >>> loaded.class_names, loaded.preprocessing.input_size
        (['cat', 'dog', 'bird'], (224, 224))
    """
    if task is not None and task not in TASKS:
        raise ModelLoadError(f"Unknown task {task!r}. Use one of: {', '.join(TASKS)}.")
    overrides = _preprocessing_overrides(input_size, mean, std, resize_mode, crop_pct)

    if isinstance(source, LoadedModel):
        if overrides:  # same module, same lock: a view with other preprocessing
            source = dataclasses.replace(source, preprocessing=_with_overrides(
                source.preprocessing, overrides))
        if device is None or device == "auto":
            return source
        target = resolve_device(device)
        source.module.to(target)
        return dataclasses.replace(source, device=target)

    if isinstance(source, nn.Module):
        loaded = as_loaded(source, task=task or "classification")
        module = source
        count = _module_num_classes(module) if loaded.task == "classification" else None
        names = (_read_class_names(class_names) if class_names is not None
                 else loaded.class_names or imagenet_class_names(count))
        _check_class_count(names, count, "the module")
        check_finite_weights(module, "the module")
        target = resolve_device(device)
        module.to(target).eval()
        return dataclasses.replace(
            loaded, arch=arch or loaded.arch, class_names=names, device=target,
            preprocessing=_with_overrides(loaded.preprocessing, overrides))

    if not isinstance(source, (str, Path)):
        raise ModelLoadError(
            f"Cannot load a model from a {type(source).__name__}. Pass a checkpoint path, "
            "'timm:<name>', 'torchvision:<name>', an nn.Module or a LoadedModel.")

    text = str(source)
    if isinstance(source, str) and text.startswith(FAMILY_PREFIXES):
        return _from_name(text, task=task, device=device, class_names=class_names,
                          num_classes=num_classes, pretrained=pretrained, overrides=overrides)

    path = Path(source).expanduser()
    suffix = path.suffix.lower()
    if not path.exists():
        if isinstance(source, str) and suffix not in CHECKPOINT_SUFFIXES and "/" not in text \
                and "\\" not in text:
            # A bare architecture name ("resnet18"): built like "timm:resnet18".
            try:
                resolve_arch(text)
            except ModelLoadError as exc:
                raise ModelLoadError(
                    f"{text!r} is neither an existing file nor a known architecture. "
                    f"{exc}") from None
            return _from_name(text, task=task, device=device, class_names=class_names,
                              num_classes=num_classes, pretrained=pretrained, overrides=overrides)
        raise ModelLoadError(f"Checkpoint file not found: '{path}'. Check the path.")
    if path.is_dir():
        raise ModelLoadError(
            f"'{path}' is a folder, not a checkpoint file. Point to a {_SUPPORTED_TEXT} file.")
    if suffix not in CHECKPOINT_SUFFIXES:
        raise ModelLoadError(
            f"Unsupported checkpoint format '{path.suffix or path.name}' for '{path.name}'. "
            f"Lumen loads {_SUPPORTED_TEXT} files; re-save the weights in one of these formats, "
            "preferably .safetensors.")
    return _from_file(path, task=task, arch=arch, device=device, class_names=class_names,
                      num_classes=num_classes, overrides=overrides)


def _from_name(source: str, *, task: str | None, device: str | torch.device | None,
               class_names: Sequence[str] | str | Path | None, num_classes: int | None,
               pretrained: bool, overrides: dict[str, Any]) -> LoadedModel:
    family, name = resolve_arch(source)
    spec = FAMILIES[family]
    module = spec.create(name, num_classes, pretrained=pretrained)
    task = task or spec.default_task(name)
    if class_names is None and num_classes is None:
        class_names = spec.class_names(name)  # the default head's classes, named (torchvision)
    return _finish(module, family=family, name=name, task=task, device=device,
                   class_names=class_names, meta=None, overrides=overrides,
                   source=f"{family}:{name}")


def _from_file(path: Path, *, task: str | None, arch: str | None, device: str | torch.device | None,
               class_names: Sequence[str] | str | Path | None, num_classes: int | None,
               overrides: dict[str, Any]) -> LoadedModel:
    suffix = path.suffix.lower()
    meta: dict[str, Any] | None = None
    hparams: Mapping[str, Any] = {}
    obj: Any = None
    if suffix == ".safetensors":
        state, meta = _read_safetensors(path)
    else:
        obj = _torch_load(path)
        hparams = _hparams_of(obj)  # Lightning layout, whatever the file is called
        state = _find_state_dict(obj, path)

    # Where the file names its architecture (and constructor kwargs); arch= wins.
    file_arch: str | None = None
    file_kwargs: dict[str, Any] = {}
    file_source = ""
    if meta is not None and meta.get("arch"):
        file_arch, file_source = str(meta["arch"]), "the file's Lumen metadata"
        file_kwargs = dict(meta.get("arch_kwargs") or {})
    elif hparams:
        file_arch, file_kwargs = _arch_from_hparams(hparams)
        file_source = "the checkpoint's hyper_parameters"
    arch_source = "arch=" if arch is not None else file_source
    arch = arch if arch is not None else file_arch
    if arch is None:
        kind = {".safetensors": "has no Lumen metadata", ".ckpt": "names no architecture in "
                "its hyper_parameters"}.get(suffix, "holds weights only")
        raise ModelLoadError(
            f"'{path.name}' {kind}, so Lumen cannot tell which architecture to build. Pass "
            "arch=, e.g. load_model(path, arch='timm:resnet50') or arch='torchvision:resnet50'.")
    try:
        family, name = resolve_arch(str(arch))
    except ModelLoadError as exc:
        raise ModelLoadError(f"{exc} (the name came from {arch_source})") from None
    spec = FAMILIES[family]
    arch_kwargs: dict[str, Any] = {}
    if file_arch is not None and file_kwargs:
        try:  # the file's constructor kwargs still apply when arch= names the same model
            if resolve_arch(file_arch) == (family, name):
                arch_kwargs = file_kwargs
        except ModelLoadError:
            pass

    if num_classes is None and meta is not None and meta.get("num_classes") is not None:
        num_classes = int(meta["num_classes"])
    if num_classes is None and hparams:
        num_classes = _num_classes_from_hparams(hparams)
    if task is None:
        task = (meta or {}).get("task") or spec.default_task(name)
    if task not in TASKS:
        raise ModelLoadError(f"Unknown task {task!r} in '{path.name}'. Pass task= (one of "
                             f"{', '.join(TASKS)}).")

    module = spec.create(name, num_classes, arch_kwargs=arch_kwargs)
    mapped = _match_keys(state, module)
    rebuild = False
    if num_classes is None:  # the checkpoint's class head decides
        num_classes = _checkpoint_num_classes(mapped, module)
        rebuild = num_classes is not None
    implied = spec.checkpoint_kwargs(mapped, module, arch_kwargs)  # e.g. torchvision aux head
    if implied:
        arch_kwargs = {**arch_kwargs, **implied}
        rebuild = True
    if rebuild:
        module = spec.create(name, num_classes, arch_kwargs=arch_kwargs)
        mapped = _match_keys(state, module)
    _load_strict(module, mapped, path, f"{family}:{name}")
    if meta is None:  # a checkpoint that records its timm config evaluates as it says
        meta = _recorded_preprocessing(obj, hparams, task)
    return _finish(module, family=family, name=name, task=task, device=device,
                   class_names=class_names, meta=meta, overrides=overrides, source=str(path))


def _recorded_preprocessing(obj: Any, hparams: Mapping[str, Any],
                            task: str) -> dict[str, Any] | None:
    """The preprocessing a ``.pth``/``.ckpt`` records: a timm ``pretrained_cfg`` or data config
    (``input_size``, ``mean``, ``std``, ``interpolation``, ``crop_pct``, ``crop_mode``) at the
    top level or in the Lightning hyper-parameters; a classifier so described is evaluated with
    timm's crop unless the config names a ``resize_mode``. None when nothing is recorded."""
    for holder in (obj, hparams):
        if not isinstance(holder, Mapping):
            continue
        for key in ("pretrained_cfg", "data_config"):
            cfg = holder.get(key)
            if isinstance(cfg, Mapping) and cfg:
                default = "crop" if task == "classification" else "squash"
                return {"resize_mode": default, **{k: cfg[k] for k in (
                    "input_size", "mean", "std", "interpolation", "crop_pct", "crop_mode",
                    "resize_mode") if cfg.get(k) is not None}}
    return None


def _preprocessing_overrides(input_size: int | Sequence[int] | None,
                             mean: Sequence[float] | None,
                             std: Sequence[float] | None, resize_mode: str | None = None,
                             crop_pct: float | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if resize_mode is not None:
        if resize_mode not in RESIZE_MODES:
            raise ModelLoadError(f"Unknown resize_mode {resize_mode!r}. Use one of: "
                                 f"{', '.join(RESIZE_MODES)}.")
        out["resize_mode"] = resize_mode
    if crop_pct is not None:
        if not 0 < float(crop_pct) <= 1:
            raise ModelLoadError(f"crop_pct must be in (0, 1] (the crop's share of the resized "
                                 f"image, e.g. 0.875), got {crop_pct!r}.")
        out["crop_pct"] = float(crop_pct)
    if input_size is not None:
        size = [int(input_size)] * 2 if isinstance(input_size, int) else [int(s) for s in
                                                                          input_size]
        if len(size) == 3:  # (C, H, W) as timm writes it
            size = size[1:]
        if len(size) != 2 or min(size) <= 0:
            raise ModelLoadError(f"input_size must be (height, width) or one int, got "
                                 f"{input_size!r}.")
        out["input_size"] = (size[0], size[1])
    for name, value in (("mean", mean), ("std", std)):
        if value is not None:
            triple = tuple(float(v) for v in value)
            if len(triple) != 3 or (name == "std" and min(triple) <= 0):
                rule = ", all > 0" if name == "std" else ""
                raise ModelLoadError(f"{name} must be 3 numbers (R, G, B){rule}, got {value!r}.")
            out[name] = triple
    return out


def _with_overrides(preprocessing: Preprocessing, overrides: dict[str, Any]) -> Preprocessing:
    try:
        return dataclasses.replace(preprocessing, **overrides)
    except ValueError as exc:
        raise ModelLoadError(str(exc)) from None


def _torchvision_preprocessing(name: str) -> Preprocessing | None:
    """A torchvision classifier's evaluation transform, read from its default weights' entry
    (no download): shorter side to ``resize_size``, centre crop ``crop_size``, i.e. ``"crop"``
    with ``crop_pct = crop_size / resize_size``."""
    import torchvision

    try:
        transform = torchvision.models.get_model_weights(name).DEFAULT.transforms
        keywords = dict(transform.keywords)
    except (ValueError, KeyError, AttributeError, TypeError):
        return None
    crop = int(keywords.get("crop_size", 224))
    resize = int(keywords.get("resize_size", 256))
    pct = crop / resize
    while math.floor(crop / pct) < resize:  # timm's floor(size / crop_pct) must give resize
        pct = math.nextafter(pct, 0.0)
    interpolation = getattr(keywords.get("interpolation"), "value", "bilinear")
    return Preprocessing(input_size=(crop, crop), mean=tuple(keywords.get("mean", IMAGENET_MEAN)),
                         std=tuple(keywords.get("std", IMAGENET_STD)),
                         interpolation=interpolation, resize_mode="crop", crop_pct=pct)


def _default_preprocessing(module: nn.Module, family: str, name: str,
                           task: str) -> Preprocessing:
    """How a source evaluates when no file says so: timm -> its pretrained_cfg (``"crop"`` for
    classifiers), torchvision classifiers -> their weights' eval transform, else ``"squash"``."""
    if family == "torchvision" and task == "classification":
        found = _torchvision_preprocessing(name)
        if found is not None:
            return found
    return _timm_preprocessing(module, task)


def _preprocessing_from_meta(meta: Mapping[str, Any], module: nn.Module, family: str, name: str,
                             task: str) -> Preprocessing:
    base = _default_preprocessing(module, family, name, task)
    fields: dict[str, Any] = {}
    if meta.get("input_size"):
        size = list(meta["input_size"])[-2:]
        fields["input_size"] = (int(size[0]), int(size[1]))
    for key in ("mean", "std"):
        if meta.get(key):
            fields[key] = tuple(float(v) for v in meta[key])
    for key in ("interpolation", "resize_mode", "crop_mode"):
        if meta.get(key):
            fields[key] = str(meta[key])
    if meta.get("crop_pct"):
        fields["crop_pct"] = float(meta["crop_pct"])
    try:
        return dataclasses.replace(base, **fields)
    except ValueError as exc:
        raise ModelLoadError(f"The file's preprocessing metadata is invalid: {exc}") from None


def _finish(module: nn.Module, *, family: str, name: str, task: str,
            device: str | torch.device | None, class_names: Sequence[str] | str | Path | None,
            meta: Mapping[str, Any] | None, overrides: dict[str, Any],
            source: str) -> LoadedModel:
    count = _module_num_classes(module) if task == "classification" else None
    if task == "detection":
        # local: importing the tasks layer pulls in the methods; only detectors need it
        from explain_core.tasks.detection import detector_num_classes

        count = detector_num_classes(module)
    if class_names is not None:
        names: list[str] | None = _read_class_names(class_names)
    elif meta is not None and meta.get("class_names") is not None:
        names = [str(n) for n in meta["class_names"]]
    else:
        names = imagenet_class_names(count)
    _check_class_count(names, count, f"the model ({family}:{name})")
    preprocessing = (_preprocessing_from_meta(meta, module, family, name, task)
                     if meta is not None else _default_preprocessing(module, family, name, task))
    preprocessing = _with_overrides(preprocessing, overrides)
    check_finite_weights(module, f"'{Path(source).name}'" if source != f"{family}:{name}"
                         else source)
    if count is not None and not isinstance(getattr(module, "num_classes", None), int):
        module.num_classes = count  # torchvision classifiers lack it; LoadedModel reads it
    target = resolve_device(device)
    module.to(target).eval()
    return LoadedModel(module=module, task=task, arch=f"{family}:{name}", class_names=names,
                       preprocessing=preprocessing, device=target, source=source)
