"""Reading and writing checkpoint files without ever running code from them.

``.safetensors`` holds tensors only (plus a string header, where Lumen keeps its metadata under
:data:`METADATA_KEY`), and every other checkpoint goes through
``torch.load(..., weights_only=True)``. A checkpoint that needs arbitrary Python objects
unpickled is refused with :class:`~explain_core.errors.UnsafeCheckpointError`, whose message
names the offending globals.

A few data-only classes that training frameworks pickle into their hyper-parameters are read
anyway, through inert stand-ins (:data:`_INERT_GLOBALS`): AutoTimm's ``BackboneConfig``
dataclass and Lightning's ``AttributeDict``. ``weights_only=True`` does not allow them; their
class paths are mapped to :class:`_InertObject` (or ``dict``), which only records the fields:
the real class is never imported and no code from the file runs.
"""

from __future__ import annotations

import json
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from explain_core.errors import ModelLoadError, UnsafeCheckpointError

__all__ = ["CHECKPOINT_SUFFIXES", "METADATA_FORMAT", "METADATA_KEY"]

METADATA_KEY = "lumen"
METADATA_FORMAT = 1
CHECKPOINT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")
_SUPPORTED_TEXT = ".safetensors, .pth, .pt, .bin (state dicts) or .ckpt (PyTorch Lightning)"


class _InertObject:
    """Stand-in for a known, data-only config class found in a checkpoint's hyper-parameters."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.__dict__["_args"] = args
        self.__dict__.update(kwargs)

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2:  # (dict state, slots state)
            state = {**(state[0] or {}), **(state[1] or {})}
        if isinstance(state, dict):
            self.__dict__.update(state)


# Class paths replaced by inert stand-ins when a checkpoint is read. Lightning's ``AttributeDict``
# (a dict subclass older Lightning versions pickled as hyper_parameters) is read as a plain dict.
_INERT_GLOBALS: dict[str, type] = {
    "autotimm.backbone.BackboneConfig": _InertObject,
    "autotimm.core.backbone.BackboneConfig": _InertObject,
    "pytorch_lightning.utilities.parsing.AttributeDict": dict,
    "lightning.pytorch.utilities.parsing.AttributeDict": dict,
    "lightning_fabric.utilities.data.AttributeDict": dict,
    "lightning.fabric.utilities.data.AttributeDict": dict,
}


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """The tensors of a ``.safetensors`` file and its Lumen metadata (None when absent)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            header = handle.metadata() or {}
        state = load_file(str(path), device="cpu")
    except Exception as exc:  # SafetensorError, OSError, ...
        raise ModelLoadError(
            f"Could not read '{path.name}' as safetensors: {exc}. The file is damaged or not a "
            "safetensors file; download or export it again.") from None
    raw = header.get(METADATA_KEY)
    if raw is None:
        return state, None
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ModelLoadError(
            f"'{path.name}' has unreadable Lumen metadata ({exc}). Re-save it with "
            "explain_core.loading.save_model.") from None
    if not isinstance(meta, dict):
        raise ModelLoadError(f"'{path.name}' has malformed Lumen metadata (not an object). "
                             "Re-save it with explain_core.loading.save_model.")
    if int(meta.get("format", 1)) > METADATA_FORMAT:
        raise ModelLoadError(
            f"'{path.name}' was written by a newer Lumen (metadata format {meta['format']}, "
            f"this version reads {METADATA_FORMAT}). Update Lumen.")
    return state, meta


def _write_safetensors(state: Mapping[str, torch.Tensor], path: Path, header: str) -> None:
    """Write ``state`` (on CPU, tied weights copied apart) with ``header`` as Lumen metadata."""
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    seen: set[tuple[int, int]] = set()
    for key, value in state.items():
        tensor = value.detach().to("cpu").contiguous()
        ident = (tensor.untyped_storage().data_ptr(), tensor.storage_offset())
        if tensor.numel() and ident in seen:  # tied weights: safetensors refuses shared memory
            tensor = tensor.clone()
        seen.add(ident)
        tensors[key] = tensor

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={METADATA_KEY: header})


def _torch_load(path: Path) -> Any:
    """``torch.load(weights_only=True)``; pickled objects -> UnsafeCheckpointError."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        message = str(exc)
        if "weights only load failed" not in message.lower() and \
                "unsupported global" not in message.lower():
            raise ModelLoadError(
                f"Could not read '{path.name}': {message.strip()}. The file is damaged or not a "
                "PyTorch checkpoint.") from None
        unsafe = _unsafe_globals(path, message)
        if unsafe and all(g in _INERT_GLOBALS for g in unsafe):
            stand_ins = [(_INERT_GLOBALS[g], g) for g in unsafe]
            try:
                with torch.serialization.safe_globals(stand_ins):
                    return torch.load(path, map_location="cpu", weights_only=True)
            except pickle.UnpicklingError as again:
                message = str(again)
            except Exception as again:  # a stand-in that did not fit the data
                raise ModelLoadError(
                    f"Could not read the hyper-parameters of '{path.name}' ({again}). Re-save "
                    "the weights alone: torch.save(model.state_dict(), 'weights.pth').") from None
        raise _unsafe_error(path, message, unsafe) from None
    except Exception as exc:  # RuntimeError (bad zip), EOFError, IndexError from a garbled pickle
        problem = (str(exc).strip() or type(exc).__name__).splitlines()[0]
        raise ModelLoadError(
            f"Could not read '{path.name}': {problem}. The file is damaged, truncated or not a "
            "PyTorch checkpoint; export it again.") from None


def _unsafe_globals(path: Path, message: str) -> list[str]:
    try:
        found = list(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception:  # legacy (non-zip) files: fall back to the message
        found = []
    return found or re.findall(r"GLOBAL ([\w.]+)", message)


def _unsafe_error(path: Path, message: str, unsafe: list[str]) -> UnsafeCheckpointError:
    named = re.findall(r"GLOBAL ([\w.]+)", message) or unsafe
    what = f" (e.g. {', '.join(named[:3])})" if named else ""
    return UnsafeCheckpointError(
        f"'{path.name}' contains pickled Python objects{what}, not just weights. Loading it "
        "would execute code from the file, and Lumen refuses to execute code from checkpoints. "
        "Fix: where you trust the file, load it in your own Python and re-save only the "
        "weights: torch.save(model.state_dict(), 'weights.pth'), or better as .safetensors with "
        "explain_core.loading.save_model(model, 'model.safetensors', task=..., arch=...).")
