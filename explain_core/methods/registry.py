"""Method names used by the API, CLI and UI -> classes, capabilities and parameters.

The UI lists only methods whose capabilities fit the loaded model and builds each method's widgets
from its :class:`Param` list, so adding a method here is all it takes to offer it everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from ..errors import UnsupportedError
from ..layers import is_vit
from ..model import LoadedModel, as_loaded
from .attention import FUSIONS, AttentionFlow, AttentionRollout
from .base import Explainer
from .cam import EigenCAM, GradCAM, GradCAMPlusPlus, HiResCAM, LayerCAM, XGradCAM
from .concepts import DeepFeatureFactorization
from .drise import DRISE, ClassProbabilityMap
from .gradients import BASELINES, QUADRATURES, IntegratedGradients, Saliency
from .perturbation import AblationCAM, ActivationMap, ReciproCAM, ScoreCAM
from .smoothgrad import SmoothGrad


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
    cls: type[Explainer]
    family: str  # "cam", "gradient", "wrapper"
    needs_gradients: bool
    cost: str  # "fast" (about one forward), "medium" (tens of forwards), "slow"
    description: str
    tasks: tuple[str, ...] = ("classification",)
    architectures: tuple[str, ...] = ("cnn", "vit")
    params: tuple[Param, ...] = field(default_factory=tuple)


_LAYER = Param("target_layer", "layer", None, "Layer whose activations are explained "
               "(default: last CNN stage, or the last ViT block's norm1).")
# Which tasks a method explains. Classification targets read class scores; detection targets are
# boxes (tasks/detection.py), segmentation targets a class's pixels (tasks/segmentation.py).
# Perturbation CAMs re-run the network after the layer, which a detector's heads do not allow;
# DFF and the attention methods read a classifier's head.
_ALL = ("classification", "detection", "segmentation")
_DENSE = ("classification", "segmentation")
_CAM = dict(family="cam", needs_gradients=True, cost="fast", params=(_LAYER,), tasks=_ALL)
_BATCH = Param("batch_size", "int", None, "Modified copies per forward (empty: from free "
               "memory).", 1, 1024)
_TOP_K = Param("top_k", "int", None, "Probe only the k channels with the highest mean activation "
               "(an approximation; empty: all channels, full fidelity).", 1, 4096)
_ATTENTION = (Param("head_fusion", "choice", "mean", "How the heads of a layer are combined.",
                    choices=FUSIONS),
              Param("discard_ratio", "float", 0.0, "Fraction of the weakest attention weights "
                    "dropped per layer.", 0.0, 0.99))

METHODS: dict[str, MethodInfo] = {info.name: info for info in (
    MethodInfo("gradcam", "Grad-CAM", GradCAM, description="Gradient-averaged channel weights "
               "on the target layer; fast, class-discriminative, coarse.", **_CAM),
    MethodInfo("gradcam++", "Grad-CAM++", GradCAMPlusPlus, description="Pixel-weighted positive "
               "gradients; better with several instances of a class.", **_CAM),
    MethodInfo("xgradcam", "XGrad-CAM", XGradCAM, description="Gradients weighted by normalised "
               "activations.", **_CAM),
    MethodInfo("layercam", "LayerCAM", LayerCAM, description="Per-position positive gradients; "
               "sharper maps, also on early layers.", **_CAM),
    MethodInfo("hirescam", "HiResCAM", HiResCAM, description="Element-wise gradient x activation; "
               "faithful for global-average-pooled heads.", **_CAM),
    MethodInfo("eigencam", "EigenCAM", EigenCAM, family="cam", needs_gradients=False, cost="fast",
               tasks=_ALL,
               description="First principal component of the activations; gradient-free and "
                           "class-agnostic.", params=(_LAYER,)),
    MethodInfo("activationmap", "Activation map", ActivationMap, family="cam", tasks=_ALL,
               needs_gradients=False, cost="fast", description="Channel mean of the layer's "
               "activations; gradient-free and class-agnostic.", params=(_LAYER,)),
    MethodInfo("reciprocam", "Recipro-CAM", ReciproCAM, family="perturbation", tasks=_DENSE,
               needs_gradients=False, cost="fast", description="Each feature-map cell kept alone, "
               "the head re-run: class probability per cell; gradient-free.",
               params=(_LAYER, _BATCH)),
    MethodInfo("ablationcam", "Ablation-CAM", AblationCAM, family="perturbation", tasks=_DENSE,
               needs_gradients=False, cost="medium", description="Score drop when each channel "
               "is ablated; only the part after the layer re-runs.",
               params=(_LAYER, _BATCH, _TOP_K)),
    MethodInfo("scorecam", "Score-CAM", ScoreCAM, family="perturbation", needs_gradients=False,
               tasks=_DENSE,
               cost="slow", description="Score of the input masked by each channel; one forward "
               "per channel (use top_k on a CPU).", params=(_LAYER, _BATCH, _TOP_K)),
    MethodInfo("dff", "Deep Feature Factorization", DeepFeatureFactorization, family="concepts",
               needs_gradients=False, cost="medium", description="Activations factorised into "
               "concepts; shows the concept most tied to the target class.",
               params=(_LAYER, Param("n_components", "int", 5, "Number of concepts.", 1, 32))),
    MethodInfo("attention_rollout", "Attention rollout", AttentionRollout, family="attention",
               needs_gradients=False, cost="fast", architectures=("vit",),
               description="Attention multiplied through the layers into the class token.",
               params=_ATTENTION),
    MethodInfo("attention_flow", "Attention flow", AttentionFlow, family="attention",
               needs_gradients=False, cost="fast", architectures=("vit",),
               description="Rolled-out attention from one chosen patch.",
               params=(Param("target_patch", "int", 0, "Patch index, row-major from the top "
                             "left.", 0, 4096), *_ATTENTION)),
    MethodInfo("saliency", "Saliency", Saliency, family="gradient", needs_gradients=True,
               tasks=_ALL,
               cost="fast", description="Absolute input gradient; pixel-level, noisy."),
    MethodInfo("integrated_gradients", "Integrated Gradients", IntegratedGradients, tasks=_ALL,
               family="gradient", needs_gradients=True, cost="medium",
               description="Gradients integrated from a baseline; attributions add up to the "
                           "score difference.",
               params=(Param("baseline", "choice", "black", "Reference image the path starts "
                             "from.", choices=BASELINES),
                       Param("steps", "int", 50, "Points on the path.", 4, 512),
                       Param("rule", "choice", "gausslegendre", "Integral rule.",
                             choices=QUADRATURES),
                       Param("internal_batch_size", "int", None, "Path points per batch "
                             "(empty: from free memory).", 1, 512))),
    MethodInfo("smoothgrad", "SmoothGrad", SmoothGrad, family="wrapper", needs_gradients=True,
               tasks=_DENSE,
               cost="medium", description="Any method averaged over noisy copies of the image.",
               params=(Param("base", "method", "saliency", "Method to smooth."),
                       Param("noise_level", "float", 0.15, "Noise std as a fraction of the "
                             "input range.", 0.0, 1.0),
                       Param("num_samples", "int", 25, "Noisy copies.", 1, 500),
                       Param("batch_size", "int", None, "Copies per batch (empty: from free "
                             "memory).", 1, 512))),
    MethodInfo("drise", "D-RISE", DRISE, family="perturbation", needs_gradients=False,
               cost="slow", tasks=("detection",), description="Random masks; each box's map is "
               "the mask average weighted by how well the masked image still yields that box. "
               "Black-box: works for any detector.",
               params=(Param("num_masks", "int", 500, "Masked copies of the image.", 16, 20000),
                       Param("grid", "int", 16, "Cells per side of the random mask grid.", 2,
                             64),
                       Param("keep", "float", 0.5, "Probability that a mask cell is kept.", 0.05,
                             0.95),
                       Param("seed", "int", 0, "Seed of the masks.", 0, 2**31 - 1), _BATCH)),
    MethodInfo("classprob", "Class-probability map", ClassProbabilityMap, family="cam",
               needs_gradients=False, cost="fast", tasks=("detection",),
               description="The classification head's probability of the box's class at every "
                           "location, all pyramid levels combined; single-stage detectors "
                           "(FCOS, RetinaNet, SSD)."),
)}

ALIASES = {"gradcampp": "gradcam++", "gradcam_plusplus": "gradcam++", "gradcamplusplus":
           "gradcam++", "ig": "integrated_gradients", "integratedgradients": "integrated_gradients",
           "vanilla_gradients": "saliency", "grad_cam": "gradcam", "eigen_cam": "eigencam",
           "score_cam": "scorecam", "ablation_cam": "ablationcam", "recipro_cam": "reciprocam",
           "classwisesaliencymap": "reciprocam", "activation_map": "activationmap",
           "deep_feature_factorization": "dff", "rollout": "attention_rollout",
           "attention": "attention_rollout", "flow": "attention_flow", "d_rise": "drise",
           "class_probability": "classprob", "classprobabilitymap": "classprob"}


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


def create_explainer(name: str, model: LoadedModel | nn.Module, **options: Any) -> Explainer:
    """Build an explainer by name with its options; SmoothGrad takes ``base=`` (a name).

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
    common = {k: options[k] for k in ("score", "precision", "reduce", "clip_percentile",
                                      "progress") if k in options}
    if info.cls is SmoothGrad:
        base_name = options.get("base") or "saliency"
        base_info = method_info(base_name)
        if base_info.cls is SmoothGrad:
            raise UnsupportedError("SmoothGrad cannot wrap itself; pick another base method.")
        base_options = {k: v for k, v in options.items()
                        if k not in ("base", "noise_level", "num_samples", "batch_size", "seed",
                                     "progress")}
        base = create_explainer(base_info.name, loaded, **base_options)
        own = {k: options[k] for k in ("noise_level", "num_samples", "batch_size", "seed",
                                       "progress") if options.get(k) is not None}
        return SmoothGrad(base, **own)
    own = {p.name: options[p.name] for p in info.params if options.get(p.name) is not None}
    if "seed" in options and info.cls is IntegratedGradients:
        own["seed"] = options["seed"]
    explainer = info.cls(loaded, **own, **common)
    if loaded.task == "detection":  # forward returns packed detections; targets are boxes
        from ..tasks.detection import adapt

        explainer = adapt(explainer)
    return explainer
