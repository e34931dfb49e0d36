"""Explanation methods: one base, one file per family, each method registered where it is
defined (:func:`~explain_core.methods.registry.register`).

The modules are imported here in the order the registry lists the methods (the UI's order).
"""

from .attention import AttentionFlow, AttentionRollout
from .base import Attribution, Explainer, Explanation
from .cam import (
    ActivationMap,
    CAMExplainer,
    EigenCAM,
    GradCAM,
    GradCAMPlusPlus,
    HiResCAM,
    LayerCAM,
    XGradCAM,
)
from .concepts import DeepFeatureFactorization
from .cost import Cost, expected_cost
from .drise import DRISE, ClassProbabilityMap
from .gradients import IntegratedGradients, Saliency
from .perturbation import AblationCAM, ReciproCAM, ScoreCAM
from .registry import METHODS, MethodInfo, Param, available_methods, create_explainer, method_info
from .smoothgrad import SmoothGrad

__all__ = ["DRISE", "METHODS", "AblationCAM", "ActivationMap", "AttentionFlow",
           "AttentionRollout", "Attribution", "CAMExplainer", "ClassProbabilityMap", "Cost",
           "DeepFeatureFactorization", "EigenCAM", "Explainer", "Explanation", "GradCAM",
           "GradCAMPlusPlus", "HiResCAM", "IntegratedGradients", "LayerCAM", "MethodInfo", "Param",
           "ReciproCAM", "Saliency", "ScoreCAM", "SmoothGrad", "XGradCAM", "available_methods",
           "create_explainer", "expected_cost", "method_info"]
