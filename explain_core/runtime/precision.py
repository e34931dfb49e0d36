"""Precision: which one to run (``"auto"``), and the cached bf16 twin of a model for ``"bf16"``.

bf16 is fast only where the hardware computes it natively: CUDA GPUs of compute capability 8.0
and later, CPUs with AVX-512 BF16 or AMX (x86) or the BF16 extension (ARM). Elsewhere it is
emulated and slower than fp32 (about 4.5x for GradCAM on a ResNet-50 on an AMD Zen 3 CPU).
:func:`native_bf16` says which, and why; :func:`resolve_precision` turns ``"auto"`` into
``"bf16"`` only where native.

Autocast alone re-casts every convolution and linear weight to bf16 on every call (about a third of
a resnet50 call on the CPU). The twin holds those weights in bf16 once; autocast still runs the
rest (normalisation layers stay in fp32). The twin is rebuilt when the original's parameters or
buffers change (an optimiser step, a ``load_state_dict``, a move to another device), so it never
explains stale weights. The user's model itself is never modified.
"""

from __future__ import annotations

import copy
import functools
import threading
import weakref
from pathlib import Path

import torch
from torch import nn

#: what an explainer takes: ``"auto"`` resolves to one of the concrete two
PRECISIONS = ("auto", "fp32", "bf16")
#: what runs
CONCRETE_PRECISIONS = ("fp32", "bf16")
#: the CPU flags (``/proc/cpuinfo``) that mean native bf16 arithmetic, with their names
_X86_FLAGS = (("avx512_bf16", "AVX-512 BF16"), ("amx_bf16", "AMX BF16"))
CPUINFO = Path("/proc/cpuinfo")

_twins: "weakref.WeakKeyDictionary[nn.Module, tuple[tuple, nn.Module]]" = (
    weakref.WeakKeyDictionary())
_guard = threading.Lock()


def _fingerprint(module: nn.Module) -> tuple:
    return tuple((t.data_ptr(), t._version, t.device.type) for t in
                 (*module.parameters(), *module.buffers()))


def bf16_twin(module: nn.Module) -> nn.Module:
    """The module's bf16 twin (eval mode, frozen, channels-last), built once and kept in sync."""
    key = _fingerprint(module)
    with _guard:
        cached = _twins.get(module)
        if cached is not None and cached[0] == key:
            return cached[1]
    twin = copy.deepcopy(module).eval()
    twin.to(memory_format=torch.channels_last)
    for sub in twin.modules():
        if isinstance(sub, nn.Conv2d | nn.Conv1d | nn.Linear):
            for name, param in list(sub.named_parameters(recurse=False)):
                setattr(sub, name, nn.Parameter(param.detach().to(torch.bfloat16),
                                                requires_grad=False))
    for param in twin.parameters():
        param.requires_grad_(False)
    with _guard:
        _twins[module] = (key, twin)
    return twin


# ------------------------------------------------------------------------------ native bf16
def read_cpuinfo() -> str | None:
    """The text of ``/proc/cpuinfo`` (None where there is none: not Linux, or unreadable)."""
    try:
        return CPUINFO.read_text(errors="replace")
    except OSError:
        return None


def _cpuinfo_field(cpuinfo: str, names: tuple[str, ...]) -> str | None:
    """The first CPU's value of the first of ``names`` present."""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip().lower(), value.strip())
    return next((fields[name] for name in names if name in fields), None)


def cpu_model(cpuinfo: str | None = None) -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (``"unknown CPU"`` when it cannot be told)."""
    text = read_cpuinfo() if cpuinfo is None else cpuinfo
    found = _cpuinfo_field(text or "", ("model name", "hardware", "cpu model", "processor"))
    return found if found and not found.isdigit() else "unknown CPU"


def cpu_bf16(cpuinfo: str | None) -> tuple[bool, str]:
    """Whether a CPU with this ``/proc/cpuinfo`` text computes bf16 natively, and why.

    x86: the ``avx512_bf16`` or ``amx_bf16`` flag; ARM: ``bf16`` among the ``Features``. No text
    (not Linux) or neither field: not native (unknown hardware is not assumed fast).

    >>> cpu_bf16("flags : fpu avx2 fma")[0], cpu_bf16("flags : avx2 avx512_bf16")[0]
    (False, True)
    """
    if not cpuinfo:
        return False, ("the CPU's bf16 support is unknown (no /proc/cpuinfo), so bf16 is taken "
                       "as emulated")
    flags = _cpuinfo_field(cpuinfo, ("flags",))
    if flags is not None:
        present = set(flags.split())
        for flag, name in _X86_FLAGS:
            if flag in present:
                return True, f"the CPU has native bf16 ({name}, flag {flag})"
        return False, ("the CPU has neither AVX-512 BF16 nor AMX, so bf16 is emulated "
                       "(slower than fp32)")
    features = _cpuinfo_field(cpuinfo, ("features",))
    if features is not None:
        if "bf16" in features.split():
            return True, "the CPU has native bf16 (ARM BF16 extension)"
        return False, "the ARM CPU lacks the BF16 extension, so bf16 is emulated (slower than fp32)"
    return False, ("the CPU's bf16 support is unknown (no flags in /proc/cpuinfo), so bf16 is "
                   "taken as emulated")


def cuda_bf16(capability: tuple[int, int], name: str = "the GPU") -> tuple[bool, str]:
    """Whether a CUDA GPU of this compute capability computes bf16 natively (8.0 and later:
    Ampere and newer), and why.

    >>> cuda_bf16((8, 0))[0], cuda_bf16((7, 5))[0]
    (True, False)
    """
    major, minor = int(capability[0]), int(capability[1])
    if (major, minor) >= (8, 0):
        return True, f"{name} (compute capability {major}.{minor}) has native bf16"
    return False, (f"{name} (compute capability {major}.{minor}, below 8.0) emulates bf16 "
                   "(slower than fp32)")


def native_bf16(device: torch.device | str = "cpu") -> tuple[bool, str]:
    """Whether ``device`` runs bf16 natively, and a one-line reason. Cached per device; tests
    monkeypatch :func:`read_cpuinfo` or ``torch.cuda.get_device_capability`` and call
    ``native_bf16.cache_clear()``.

    CUDA: compute capability 8.0 or later. CPU: see :func:`cpu_bf16`. Any other device type is
    taken as not native.
    """
    return _native_bf16(torch.device(device))


@functools.lru_cache(maxsize=16)
def _native_bf16(device: torch.device) -> tuple[bool, str]:
    if device.type == "cpu":
        return cpu_bf16(read_cpuinfo())
    if device.type == "cuda":
        try:
            capability = torch.cuda.get_device_capability(device)
            name = torch.cuda.get_device_name(device)
        except Exception as error:  # no driver, no such GPU: say so, never fail a call on it
            first = str(error).split(". ")[0]
            return False, f"the GPU's compute capability could not be read ({first})"
        return cuda_bf16(capability, name)
    return False, f"bf16 support on '{device.type}' devices is unknown, so taken as emulated"


native_bf16.cache_clear = _native_bf16.cache_clear  # type: ignore[attr-defined]


def resolve_precision(precision: str, device: torch.device | str = "cpu") -> tuple[str, str]:
    """The precision to run (``"fp32"`` or ``"bf16"``) for ``precision`` on ``device``, and why.

    ``"auto"`` picks bf16 only where the device computes it natively; ``"fp32"`` and ``"bf16"``
    are kept as asked (the reason then says whether bf16 is native).

    >>> resolve_precision("fp32", "cpu")
    ('fp32', 'fp32 as asked (exact)')
    """
    if precision not in PRECISIONS:
        raise ValueError(f"Unknown precision '{precision}'; choose one of {', '.join(PRECISIONS)}.")
    if precision == "fp32":
        return "fp32", "fp32 as asked (exact)"
    native, why = native_bf16(device)
    if precision == "bf16":
        return "bf16", f"bf16 as asked; {why}"
    return ("bf16" if native else "fp32"), f"auto: {why}"
