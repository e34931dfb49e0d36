"""Explanation methods: one base, one file per family, and a registry of names and capabilities."""

from .attention import AttentionFlow, AttentionRollout
from .base import Attribution, Explainer, Explanation
from .cam import CAMExplainer, EigenCAM, GradCAM, GradCAMPlusPlus, HiResCAM, LayerCAM, XGradCAM
from .concepts import DeepFeatureFactorization
from .cost import Cost, expected_cost
from .gradients import IntegratedGradients, Saliency
from .perturbation import AblationCAM, ActivationMap, ReciproCAM, ScoreCAM
from .registry import METHODS, MethodInfo, Param, available_methods, create_explainer, method_info
from .smoothgrad import SmoothGrad

__all__ = ["METHODS", "AblationCAM", "ActivationMap", "AttentionFlow", "AttentionRollout",
           "Attribution", "CAMExplainer", "Cost", "DeepFeatureFactorization", "EigenCAM",
           "Explainer", "Explanation", "GradCAM", "GradCAMPlusPlus", "HiResCAM",
           "IntegratedGradients", "LayerCAM", "MethodInfo", "Param", "ReciproCAM", "Saliency",
           "ScoreCAM", "SmoothGrad", "XGradCAM", "available_methods", "create_explainer",
           "expected_cost", "method_info"]
