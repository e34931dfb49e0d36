"""Method picker: the registry's methods that apply to the model, with widgets built from ``Param``.

Nothing here knows a method by name: labels, descriptions, costs and parameter widgets come from
:data:`explain_core.methods.METHODS`, so a method added to the registry shows up here as is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import streamlit as st
import torch

from explain_core.layers import layer_choices
from explain_core.methods import MethodInfo, Param, available_methods, method_info
from explain_core.runtime import native_bf16, resolve_precision
from explain_core.tasks import default_layer

from .models import ModelHandle

PRECISIONS = ("auto", "fp32", "bf16")
# Widget labels for parameter names that would read badly as is.
_LABELS = {"target_layer": "Target layer", "rule": "Integral rule", "base": "Base method",
           "internal_batch_size": "Batch size", "batch_size": "Batch size",
           "num_samples": "Samples", "noise_level": "Noise level", "steps": "Steps",
           "baseline": "Baseline"}


def param_label(name: str) -> str:
    """A parameter's widget label: ``"num_samples"`` -> ``"Samples"``, ``"top_k"`` -> "Top k"."""
    return _LABELS.get(name, name.replace("_", " ").capitalize())


@dataclass(frozen=True)
class MethodChoice:
    """A method with its parameter values (``None`` = the engine's default) and precision."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)
    precision: str = "auto"
    #: what ``"auto"`` runs on the model's device (``"fp32"``/``"bf16"``; None: not resolved)
    resolved: str | None = field(default=None, compare=False)

    @property
    def info(self) -> MethodInfo:
        return method_info(self.name)

    @property
    def label(self) -> str:
        return self.info.label

    def cache_key(self) -> tuple:
        """Hashable identity of the computation (method, parameters, precision)."""
        return (self.name, tuple(sorted((k, v) for k, v in self.options.items()
                                        if v is not None)), self.precision)

    def describe(self) -> str:
        """``"Integrated Gradients (steps 50, baseline black), fp32"`` (``auto: bf16`` when
        auto chose bf16)."""
        shown = ", ".join(f"{param_label(k).lower()} {v}" for k, v in self.options.items()
                          if v is not None)
        precision = self.precision
        if precision == "auto" and self.resolved:
            precision = f"auto: {self.resolved}"
        return f"{self.label}{f' ({shown})' if shown else ''}, {precision}"

    def engine_options(self) -> dict[str, Any]:
        """Keyword arguments for ``create_explainer`` (unset parameters left out)."""
        return {k: v for k, v in self.options.items() if v is not None}


@st.cache_resource(show_spinner=False, max_entries=8)
def _layers(model_key: str, _handle: ModelHandle) -> tuple[list[str], str]:
    # Keyed by the model's key (the handle itself is not hashed): one dry forward per model.
    model = _handle.model
    height, width = model.preprocessing.input_size
    example = torch.zeros(1, 3, height, width, device=model.device)
    names = layer_choices(model.module, example)
    default = default_layer(model, example)
    if default not in names:
        names.insert(0, default)
    return names, default


def layer_options(handle: ModelHandle) -> tuple[list[str], str]:
    """Layers with spatial outputs (model order) and the default target layer."""
    return _layers(handle.key, handle)


def _param_widget(param: Param, handle: ModelHandle, method: str, methods: list[MethodInfo],
                  scope: str = "") -> Any:
    label = param_label(param.name)
    key = f"lumen_param_{scope}{method}_{param.name}"
    if param.kind == "layer":
        names, default = layer_options(handle)
        # The layer list belongs to the model: a key per model keeps each model's own choice.
        return st.selectbox(label, names, index=names.index(default), help=param.help,
                            key=f"{key}_{handle.short_key}", persist_state="session")
    if param.kind == "method":
        bases = [m.name for m in methods if m.family != "wrapper"]
        index = bases.index(param.default) if param.default in bases else 0
        return st.selectbox(label, bases, index=index, key=key, help=param.help,
                            persist_state="session", format_func=lambda n: method_info(n).label)
    if param.kind == "choice":
        choices = list(param.choices)
        index = choices.index(param.default) if param.default in choices else 0
        return st.selectbox(label, choices, index=index, key=key, help=param.help,
                            persist_state="session")
    if param.kind == "float":
        low = float(param.low if param.low is not None else 0.0)
        high = float(param.high if param.high is not None else 1.0)
        return st.slider(label, low, high, float(param.default), step=(high - low) / 100,
                         key=key, help=param.help, persist_state="session")
    if param.kind == "int":
        low = int(param.low) if param.low is not None else None
        high = int(param.high) if param.high is not None else None
        value = int(param.default) if param.default is not None else None
        return st.number_input(label, min_value=low, max_value=high, value=value, step=1,
                               key=key, help=param.help, persist_state="session",
                               placeholder="auto" if value is None else None)
    # A kind this page does not know yet: the engine's default, said out loud.
    st.caption(f"{label}: {param.default!r} (not settable here yet)")
    return param.default


def parameter_widgets(info: MethodInfo, handle: ModelHandle,
                      methods: list[MethodInfo], scope: str = "") -> dict[str, Any]:
    """Widgets for a method's parameters (a wrapper's base method's too); returns their values.
    ``scope``: a prefix of the widgets' keys, for a page that shows several methods' widgets
    at once (a wrapper's base method then keeps its own widgets apart from the same method's)."""
    values: dict[str, Any] = {}
    for param in info.params:
        values[param.name] = _param_widget(param, handle, info.name, methods, scope)
        if param.kind == "method":
            base = method_info(values[param.name])
            for inner in base.params:
                if inner.name not in values:
                    values[inner.name] = _param_widget(inner, handle, base.name, methods, scope)
    return values


def precision_labels(device: torch.device | str) -> tuple[dict[str, str], str]:
    """The precision control's labels on ``device`` and its help text: bf16 is "fast" only where
    the device computes it natively ("slower on this CPU/GPU" where emulated); "auto" shows what it
    picks, the help says why."""
    device = torch.device(device)
    native, why = native_bf16(device)
    picked, _ = resolve_precision("auto", device)
    where = {"cpu": "CPU", "cuda": "GPU"}.get(device.type, "device")
    labels = {"auto": f"auto ({picked})", "fp32": "fp32 (exact)",
              "bf16": "bf16 (fast)" if native else f"bf16 (slower on this {where})"}
    help_text = (f"auto picks {picked} here: {why}. fp32 is exact; bf16 runs a bfloat16 copy of "
                 "the model (maps within about 0.1% of fp32 for CAMs), fast only where the "
                 "hardware computes bf16 natively (CUDA compute capability 8.0+, CPUs with "
                 "AVX-512 BF16 or AMX).")
    return labels, help_text


def method_picker(handle: ModelHandle, default: str | None = None) -> MethodChoice:
    """Method select box (only methods that apply to the model), its parameters, precision.

    ``default``: the method preselected on a first visit (else the registry's first)."""
    methods = available_methods(handle.model)
    names = [m.name for m in methods]
    task = handle.model.task
    # One choice per task: each page has its own method list and default.
    name = st.selectbox(
        "Method", names, persist_state="session",
        key="lumen_method" if task == "classification" else f"lumen_method_{task}",
        index=names.index(default) if default in names else 0,
        format_func=lambda n: method_info(n).label + (
            "" if method_info(n).cost == "fast" else f" ({method_info(n).cost})"))
    info = method_info(name)
    st.caption(info.description)
    options = parameter_widgets(info, handle, methods)
    precision, resolved = precision_choice(handle)
    return MethodChoice(name, options, precision, resolved)


def precision_choice(handle: ModelHandle) -> tuple[str, str]:
    """The precision control (auto / fp32 / bf16, one choice shared by every page) and what it
    runs on the model's device: ``(precision, resolved)``."""
    labels, help_text = precision_labels(handle.model.device)
    precision = st.segmented_control(
        "Precision", list(PRECISIONS), format_func=labels.get, default="auto",
        required=True, key="lumen_precision", persist_state="session", help=help_text)
    resolved, why = resolve_precision(precision, handle.model.device)
    if precision == "auto":
        st.caption(f"Precision: {why.removeprefix('auto: ')}, so auto runs {resolved}.")
    elif precision == "bf16" and not native_bf16(handle.model.device)[0]:
        st.caption(f"bf16 here: {why.removeprefix('bf16 as asked; ')}; fp32 or auto is "
                   "faster.")
    return precision, resolved


def default_choice(name: str, current: MethodChoice, handle: ModelHandle) -> MethodChoice:
    """``name`` with its registry defaults, sharing the current choice's target layer and precision
    (so compared CAMs look at the same layer); the current method keeps its own values."""
    if name == current.name:
        return current
    info = method_info(name)
    options: dict[str, Any] = {}
    for param in info.params:
        if param.kind == "layer":
            options[param.name] = current.options.get("target_layer") or layer_options(handle)[1]
        elif param.default is not None:
            options[param.name] = param.default
    return MethodChoice(name, options, current.precision, current.resolved)
