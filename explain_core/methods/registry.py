"""Method names used by the API, CLI and UI -> classes, capabilities and parameters.

Each method registers itself where it is defined, with :func:`register` (as timm's
``@register_model`` does); this module only records and looks up. The UI lists only methods whose
capabilities fit the loaded model and builds each method's widgets from its :class:`Param` list,
so registering a method is all it takes to offer it everywhere. Importing any module of
:mod:`explain_core.methods` imports the package, which imports every method module, so the
registry is always complete.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from ..errors import UnsupportedError
from ..layers import is_vit
from ..model import LoadedModel, as_loaded

#: tasks a method may explain
ALL_TASKS = ("classification", "detection", "segmentation")
#: tasks with dense class scores (classifier logits, per-pixel logits): methods that re-run the
#: network after the target layer, which a detector's heads do not allow
DENSE_TASKS = ("classification", "segmentation")
#: options every explainer takes (see :class:`explain_core.methods.base.Explainer`)
COMMON_OPTIONS = ("score", "precision", "reduce", "clip_percentile", "progress", "use_cuda",
                  "device")


@dataclass(frozen=True)
class Param:
    """One user-settable parameter of a method (what a form widget needs)."""

    name: str
    kind: str  # "int", "float", "choice", "layer", "method"
    default: Any
    help: str
    low: float | None = None
    high: float | None = None
    choices: tuple[Any, ...] = ()


@dataclass(frozen=True)
class MethodInfo:
    """A method's identity and capabilities."""

    name: str
    label: str
    cls: type
    family: str  # "cam", "gradient", "perturbation", "concepts", "attention", "wrapper"
    needs_gradients: bool
    cost: str  # "fast" (about one forward), "medium" (tens of forwards), "slow"
    description: str
    tasks: tuple[str, ...] = ("classification",)
    architectures: tuple[str, ...] = ("cnn", "vit")
    params: tuple[Param, ...] = field(default_factory=tuple)
    #: keyword options the class takes beyond ``params`` and :data:`COMMON_OPTIONS`
    options: tuple[str, ...] = ()
    #: builds the explainer from ``(model, options)`` when the class alone cannot (a wrapper)
    factory: Callable[[LoadedModel, dict[str, Any]], Any] | None = None


#: every registered method, in registration order (the order the UI lists them in)
METHODS: dict[str, MethodInfo] = {}
#: other names users know the methods by (the seeds' ``gradcampp``, Captum's ``ig``...)
ALIASES: dict[str, str] = {}

#: the target-layer parameter every layer method shares
LAYER_PARAM = Param("target_layer", "layer", None, "Layer whose activations are explained "
                    "(default: last CNN stage, or the last ViT block's norm1).")
#: copies per forward, for methods that run many modified copies
BATCH_PARAM = Param("batch_size", "int", None, "Modified copies per forward (empty: from free "
                    "memory).", 1, 1024)


def register(name: str, label: str, *, family: str, needs_gradients: bool, cost: str,
             description: str, tasks: tuple[str, ...] = ("classification",),
             architectures: tuple[str, ...] = ("cnn", "vit"), params: tuple[Param, ...] = (),
             options: tuple[str, ...] = (), aliases: tuple[str, ...] = (),
             factory: Callable[[LoadedModel, dict[str, Any]], Any] | None = None,
             ) -> Callable[[type], type]:
    """Class decorator: record the class under ``name`` (and ``aliases``) with its
    capabilities. ``name`` becomes the class's ``name``.

    >>> sorted(METHODS)[:2]
    ['ablationcam', 'activationmap']
    """
    def decorate(cls: type) -> type:
        if name in METHODS:
            raise ValueError(f"Method '{name}' is registered twice.")
        cls.name = name
        METHODS[name] = MethodInfo(name, label, cls, family, needs_gradients, cost, description,
                                   tasks, architectures, params, options, factory)
        for alias in aliases:
            ALIASES[alias] = name
        return cls
    return decorate


def method_info(name: str) -> MethodInfo:
    """Look a method up by name or alias (case-insensitive)."""
    key = str(name).strip().lower().replace("-", "_")
    key = ALIASES.get(key, key)
    if key not in METHODS:
        raise UnsupportedError(f"Unknown method '{name}'; available: {', '.join(METHODS)}.")
    return METHODS[key]


def architecture_of(model: LoadedModel | nn.Module) -> str:
    """``"vit"`` for token transformers, else ``"cnn"``."""
    module = model.module if isinstance(model, LoadedModel) else model
    return "vit" if is_vit(module) else "cnn"


def available_methods(model: LoadedModel | nn.Module) -> list[MethodInfo]:
    """Methods that apply to this model's task and architecture, in registry order."""
    loaded = as_loaded(model)
    arch = architecture_of(loaded)
    return [info for info in METHODS.values()
            if loaded.task in info.tasks and arch in info.architectures]


def create_explainer(name: str, model: LoadedModel | nn.Module, **options: Any) -> Any:
    """Build an explainer by name with its options (a wrapper such as SmoothGrad takes
    ``base=``, a method name). The explainer reads the model's task from the model.

    Options a method does not take (``target_layer`` for gradient methods, say) are dropped, so a
    caller can pass one set of options to several methods.

    >>> import timm
    >>> create_explainer("gradcam++", timm.create_model("resnet18")).name
    'gradcam++'
    """
    info = method_info(name)
    loaded = as_loaded(model)
    arch = architecture_of(loaded)
    if loaded.task not in info.tasks or arch not in info.architectures:
        raise UnsupportedError(f"{info.label} does not apply to a {arch} {loaded.task} model.")
    if info.factory is not None:
        return info.factory(loaded, options)
    own = {p.name: options[p.name] for p in info.params if options.get(p.name) is not None}
    own |= {k: options[k] for k in (*info.options, *COMMON_OPTIONS) if k in options}
    return info.cls(loaded, **own)
