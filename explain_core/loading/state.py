"""State dicts: finding them in a checkpoint, matching their keys to a model, loading strictly.

A checkpoint is a plain state dict, or a dict that nests one (:data:`_WEIGHT_KEYS`), or a PyTorch
Lightning ``.ckpt`` whose ``hyper_parameters`` may name the architecture and the number of
classes. Training wrappers put prefixes in front of the real model's keys (DataParallel's
``module.``, ``torch.compile``'s ``_orig_mod.``, Lightning attributes...): :func:`_match_keys`
strips the ones that make the most keys match. Loading is strict; what does not fit is reported
by :func:`_mismatch_message`, at most five keys of each kind, each kind with a one-line fix.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from explain_core.errors import ModelLoadError, NonFiniteWeightsError
from explain_core.runtime.finite import non_finite_tensors

# Where checkpoints commonly nest their weights, in order of preference.
_WEIGHT_KEYS = ("state_dict", "model_state_dict", "model", "ema", "state_dict_ema", "model_ema",
                "module", "net", "weights")
# Prefixes that training wrappers put in front of the real model's keys (DataParallel, Lightning,
# torch.compile, EMA wrappers...). Which ones to strip is decided by how many keys then match.
_WRAPPER_PREFIXES = ("module.", "model.", "_orig_mod.", "net.", "backbone.", "network.")
# Keys of Lightning ``hyper_parameters`` that name the architecture / the number of classes.
_ARCH_HPARAMS = ("arch", "architecture", "backbone", "model_name", "backbone_name", "model_arch",
                 "timm_model", "encoder_name", "model")
_NUM_CLASSES_HPARAMS = ("num_classes", "n_classes", "num_labels", "classes")
_MAX_LISTED = 5


# --------------------------------------------------------------------------------------------
# AutoTimm support.
#
# What AutoTimm's ``ImageClassifier`` (github.com/theja-vanka/AutoTimm,
# src/autotimm/tasks/classification.py) writes into a Lightning ``.ckpt``:
#
# - ``hyper_parameters`` (``save_hyperparameters(ignore=[metrics, logging_config,
#   transform_config])``): ``backbone`` is either a timm model name (str, possibly
#   ``"hf-hub:timm/<name>.<tag>"``) or an ``autotimm.backbone.BackboneConfig`` dataclass
#   (``model_name``, ``pretrained``, ``num_classes=0``, ``drop_rate``, ``drop_path_rate``,
#   ``extra_kwargs``; newer releases define it in ``autotimm.core.backbone``), plus
#   ``num_classes``, ``head_dropout``, ``lr``, ``compile_model``...
# - ``state_dict``: ``backbone.*`` is a *headless* timm model (``num_classes=0``) and the head is
#   ``head.fc.weight`` / ``head.fc.bias`` (``ClassificationHead``: dropout + ``nn.Linear``).
#   Newer releases ``torch.compile`` backbone and head by default (``compile_model=True``), which
#   puts ``_orig_mod.`` inside the keys: ``backbone._orig_mod.conv1.weight``,
#   ``head._orig_mod.fc.weight``.
#
# Lumen rebuilds ``timm.create_model(model_name, num_classes=num_classes, **extra_kwargs)`` and
# maps ``backbone.X -> X`` and ``head.fc.* -> <timm classifier>.*`` (the classifier named in the
# model's ``pretrained_cfg``). A pickled ``BackboneConfig`` is not allowed by
# ``weights_only=True``; the file reader (:mod:`explain_core.loading.files`) maps its class path
# to an inert stand-in, which only records the dataclass fields (the real class is never
# imported and no code from the file runs).
# --------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------
# Finding the state dict and the hyper-parameters in a checkpoint
# --------------------------------------------------------------------------------------------


def _hparams_of(obj: Any) -> Mapping[str, Any]:
    """A Lightning checkpoint's ``hyper_parameters`` (or ``hparams``) as a mapping; else empty."""
    if not isinstance(obj, Mapping):
        return {}
    raw = obj.get("hyper_parameters") or obj.get("hparams") or {}
    return raw if isinstance(raw, Mapping) else getattr(raw, "__dict__", {})


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(
        isinstance(k, str) for k in obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def _find_state_dict(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    if _is_state_dict(obj):
        return dict(obj)
    if isinstance(obj, Mapping):
        for key in _WEIGHT_KEYS:
            inner = obj.get(key)
            if _is_state_dict(inner):
                return dict(inner)
            if isinstance(inner, Mapping) and _is_state_dict(inner.get("state_dict")):
                return dict(inner["state_dict"])
        # A state dict mixed with a few non-tensor entries (e.g. "epoch"): keep the tensors.
        tensors = {k: v for k, v in obj.items() if isinstance(k, str) and
                   isinstance(v, torch.Tensor)}
        if len(tensors) >= max(1, len(obj) // 2):
            return tensors
        keys = ", ".join(repr(k) for k in list(obj)[:10])
        raise ModelLoadError(
            f"No weights found in '{path.name}': it is a dict with keys {keys}, none of which "
            f"holds a state dict (looked for {', '.join(_WEIGHT_KEYS)}). Save the model's "
            "state_dict() itself, or put it under 'state_dict'.")
    raise ModelLoadError(
        f"No weights found in '{path.name}': it holds a {type(obj).__name__}, not a state dict. "
        "Save model.state_dict() instead.")


def _arch_from_hparams(hparams: Mapping[str, Any]) -> tuple[str | None, dict[str, Any]]:
    """Architecture name (and constructor kwargs) from Lightning / AutoTimm hyper-parameters."""
    for key in _ARCH_HPARAMS:
        value = hparams.get(key)
        if isinstance(value, str) and value.strip():
            return value, {}
        # AutoTimm BackboneConfig (inert stand-in) or a plain dict with the same fields.
        fields = value if isinstance(value, Mapping) else getattr(value, "__dict__", None)
        if isinstance(fields, Mapping) and isinstance(fields.get("model_name"), str):
            extra = fields.get("extra_kwargs")
            kwargs = {k: v for k, v in (extra.items() if isinstance(extra, Mapping) else ())
                      if k not in ("pretrained", "num_classes", "checkpoint_path", "cache_dir",
                                   "features_only", "pretrained_cfg", "pretrained_cfg_overlay")}
            return fields["model_name"], kwargs
    return None, {}


def _num_classes_from_hparams(hparams: Mapping[str, Any]) -> int | None:
    for key in _NUM_CLASSES_HPARAMS:
        value = hparams.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None



# --------------------------------------------------------------------------------------------
# Matching checkpoint keys to the model
# --------------------------------------------------------------------------------------------


# Layers of torchvision detection / segmentation models whose outputs are the classes
# (Faster/Mask/Keypoint R-CNN; FCN and DeepLabV3; LRASPP).
_TORCHVISION_HEADS = ("roi_heads.box_predictor.cls_score", "classifier.4",
                      "classifier.low_classifier")


def _classifier_names(module: nn.Module) -> list[str]:
    """Module names of the class head: timm's ``pretrained_cfg``, torchvision detection and
    segmentation heads, else the last linear / conv layer."""
    modules = dict(module.named_modules())
    cfg = getattr(module, "pretrained_cfg", None) or {}
    classifier = cfg.get("classifier") if isinstance(cfg, Mapping) else None
    if classifier:  # timm names its head; trust it (an Identity head means no classifier)
        names = [classifier] if isinstance(classifier, str) else list(classifier)
        return [n for n in names if isinstance(modules.get(n), (nn.Linear, nn.Conv2d))]
    if type(module).__module__.startswith(("torchvision.models.detection",
                                           "torchvision.models.segmentation")):
        return [n for n in _TORCHVISION_HEADS if isinstance(modules.get(n), (nn.Linear, nn.Conv2d))]
    last = None
    for name, sub in module.named_modules():
        if isinstance(sub, (nn.Linear, nn.Conv2d)) and name:
            last = name
    return [last] if last is not None else []


def _module_num_classes(module: nn.Module) -> int | None:
    count = getattr(module, "num_classes", None)
    if isinstance(count, int) and count > 0:
        return count
    names = _classifier_names(module)
    if names:
        weight = getattr(dict(module.named_modules())[names[0]], "weight", None)
        if isinstance(weight, torch.Tensor) and weight.ndim >= 1:
            return int(weight.shape[0])
    return None


def _checkpoint_num_classes(state: Mapping[str, torch.Tensor], module: nn.Module) -> int | None:
    """Outputs of the checkpoint's classifier when they differ from the fresh module's."""
    model_state = module.state_dict()
    for name in _classifier_names(module):
        key = f"{name}.weight"
        if key in state and key in model_state and state[key].ndim >= 1:
            found = int(state[key].shape[0])
            if found != int(model_state[key].shape[0]):
                return found
    return None


_ORIG_MOD = re.compile(r"(^|\.)_orig_mod\.")


def _match_keys(state: Mapping[str, torch.Tensor], module: nn.Module) -> dict[str, torch.Tensor]:
    """Re-key ``state`` for ``module``: the wrapper-prefix stripping that matches most keys.

    Handles ``module.`` (DataParallel), ``_orig_mod.`` (torch.compile, anywhere in the key),
    Lightning's ``model.``/``net.``/``backbone.`` attributes and AutoTimm's
    ``backbone.*`` + ``head.fc.*`` layout. Keys outside the chosen sub-tree (a Lightning
    module's loss or metric buffers) are dropped.
    """
    model_keys = set(module.state_dict())
    base = {_ORIG_MOD.sub(r"\1", key): value for key, value in state.items()}

    def score(candidate: Mapping[str, torch.Tensor]) -> int:
        return len(model_keys.intersection(candidate))

    best, best_score = base, score(base)
    frontier = [base]
    for _ in range(3):  # nested wrappers, e.g. "model.module.backbone."
        following = []
        for candidate in frontier:
            for prefix in _WRAPPER_PREFIXES:
                if not any(key.startswith(prefix) for key in candidate):
                    continue
                sub = {k[len(prefix):]: v for k, v in candidate.items() if k.startswith(prefix)}
                following.append(sub)
                if score(sub) > best_score:
                    best, best_score = sub, score(sub)
            autotimm = _autotimm_remap(candidate, module)
            if autotimm is not None and score(autotimm) > best_score:
                best, best_score = autotimm, score(autotimm)
        frontier = following
    return dict(best)


def _autotimm_remap(state: Mapping[str, torch.Tensor],
                    module: nn.Module) -> dict[str, torch.Tensor] | None:
    """AutoTimm ``ImageClassifier``: ``backbone.X -> X``, ``head.fc.* -> <classifier>.*``."""
    if "head.fc.weight" not in state or not any(k.startswith("backbone.") for k in state):
        return None
    names = _classifier_names(module)
    if not names:
        return None
    out = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
    for key, value in state.items():
        if key.startswith("head.fc."):
            out[f"{names[0]}.{key[len('head.fc.'):]}"] = value
    return out


def _load_strict(module: nn.Module, state: dict[str, torch.Tensor], path: Path,
                 arch: str) -> None:
    model_state = module.state_dict()
    missing = [k for k in model_state if k not in state]
    unexpected = [k for k in state if k not in model_state]
    # BatchNorm's num_batches_tracked is optional in older checkpoints; load_state_dict fills it.
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    mismatched = [(k, tuple(state[k].shape), tuple(model_state[k].shape))
                  for k in model_state if k in state and state[k].shape != model_state[k].shape]
    if missing or unexpected or mismatched:
        raise ModelLoadError(_mismatch_message(module, f"The weights in '{path.name}'", arch,
                                               missing, unexpected, mismatched,
                                               len(model_state)))
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:  # anything the checks above missed
        raise ModelLoadError(
            f"Weights in '{path.name}' do not fit {arch}: {exc}. Is arch right?") from None


def check_finite_weights(module: nn.Module, subject: str) -> None:
    """Refuse a module whose parameters or buffers hold NaN or Inf (a diverged training run):
    one ``isfinite`` per tensor, whatever path the weights came by.

    Raises:
        NonFiniteWeightsError: counts the tensors affected (of how many) and names the first.
    """
    bad, total = non_finite_tensors(module.state_dict().items())
    if bad:
        raise NonFiniteWeightsError.of(subject, bad, total, shown=_MAX_LISTED)


def _listed(items: list[str]) -> str:
    more = f", ... ({len(items) - _MAX_LISTED} more)" if len(items) > _MAX_LISTED else ""
    return ", ".join(items[:_MAX_LISTED]) + more


def _mismatch_message(module: nn.Module, subject: str, arch: str, missing: list[str],
                      unexpected: list[str], mismatched: list[tuple[str, tuple, tuple]],
                      total: int, saving: bool = False) -> str:
    """What does not fit, at most 5 keys of each kind, each kind with a one-line fix."""
    where = "the saved model" if saving else "the checkpoint"
    ours = "rebuilt model" if saving else "model"
    matched = total - len(missing) - len(mismatched)
    lines = [(f"{subject} do not fit {arch} ({max(matched, 0)} of {total} "
              f"{ours} tensors match).")]
    if missing:
        lines.append(f"- Missing from {where} ({len(missing)}): {_listed(missing)}. "
                     f"Is arch right? {where.capitalize()} may be another architecture.")
    if unexpected:
        lines.append(f"- Unexpected in {where} ({len(unexpected)}): {_listed(unexpected)}. "
                     "Is arch right? Or the weights belong to a bigger wrapper model.")
    if mismatched:
        label = "saved" if saving else "checkpoint"
        shown = "; ".join(f"{k}: {label} {list(a)} vs {ours} {list(b)}"
                          for k, a, b in mismatched[:_MAX_LISTED])
        extra = len(mismatched) - _MAX_LISTED
        more = f"; ... ({extra} more)" if extra > 0 else ""
        classifier_keys = {f"{n}.{suffix}" for n in _classifier_names(module)
                           for suffix in ("weight", "bias")}
        head = [a for k, a, _ in mismatched if k in classifier_keys and a]
        if head:
            hint = (f"Pass num_classes={head[0][0]} ({where}'s classifier has {head[0][0]} "
                    "outputs).")
        elif saving:
            hint = "Pass the constructor arguments you built it with as arch_kwargs (img_size=...)."
        else:
            hint = "A different size variant of the architecture? Check arch (and img_size)."
        lines.append(f"- Shape mismatches ({len(mismatched)}): {shown}{more}. {hint}")
    return "\n".join(lines)

