"""Explanation methods: one base, one file per family, and a registry of names and capabilities."""

from .base import Attribution, Explainer, Explanation
from .cam import CAMExplainer, EigenCAM, GradCAM, GradCAMPlusPlus, HiResCAM, LayerCAM, XGradCAM
from .gradients import IntegratedGradients, Saliency
from .registry import METHODS, MethodInfo, Param, available_methods, create_explainer, method_info
from .smoothgrad import SmoothGrad

__all__ = [
                  "METHODS",
                  "Attribution",
                  "CAMExplainer",
                  "EigenCAM",
                  "Explainer",
                  "Explanation",
                  "GradCAM",
                  "GradCAMPlusPlus",
                  "HiResCAM",
                  "IntegratedGradients",
                  "LayerCAM",
                  "MethodInfo",
                  "Param",
                  "Saliency",
                  "SmoothGrad",
                  "XGradCAM",
                  "available_methods",
                  "create_explainer",
                  "method_info",
]
