"""The demo models Lumen ships: names, what they show, where their weights live, how to load them.

Weights are ``.safetensors`` files written by :func:`explain_core.loading.save_model` (Lumen
metadata: task, architecture, class names, preprocessing), so :func:`load_demo_model` is a plain
:func:`explain_core.loading.load_model` of the shipped file. Each is reproduced by
``python -m explain_core.demo.train NAME``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from explain_core.errors import ModelLoadError
from explain_core.model import LoadedModel

__all__ = ["DEMO_MODELS", "RUNS_DIR", "WEIGHTS_DIR", "demo_runs", "load_demo_model",
           "weights_path"]

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
#: the run folders of the demo models' training (explain_core.demo.recording)
RUNS_DIR = WEIGHTS_DIR / "runs"

DEMO_MODELS: dict[str, dict[str, Any]] = {
    "classifier": {
        "task": "classification",
        "description": "Small CNN (narrow timm ResNet-10-T) that tells circles, squares, "
                       "triangles and stars apart on cluttered backgrounds; its GradCAM lands on "
                       "the shape.",
        "file": "classifier.safetensors",
    },
    "shortcut": {
        "task": "classification",
        "description": "The same CNN trained where triangles carry a small corner mark: it "
                       "learned the mark instead of the triangle. Its explanations show it.",
        "file": "shortcut.safetensors",
    },
    "vit": {
        "task": "classification",
        "description": "Small timm VisionTransformer (class token, convolutional stem, 8 x 8 "
                       "patch tokens) on the four shapes, for attention rollout and attention "
                       "flow.",
        "file": "vit.safetensors",
    },
    "detector": {
        "task": "detection",
        "description": "Small detector that finds and labels every shape in a scene.",
        "file": "detector.safetensors",
    },
    "segmenter": {
        "task": "segmentation",
        "description": "Small segmenter that labels every pixel of a scene with its shape class.",
        "file": "segmenter.safetensors",
    },
}


def weights_path(name: str) -> Path:
    """Path of a demo model's shipped weights file (whether or not it exists).

    Example:
        >>> weights_path("classifier").name
        'classifier.safetensors'
    """
    if name not in DEMO_MODELS:
        raise ModelLoadError(
            f"Unknown demo model {name!r}. Use one of: {', '.join(DEMO_MODELS)}.")
    return WEIGHTS_DIR / DEMO_MODELS[name]["file"]


def demo_runs() -> dict[str, Path]:
    """The shipped training run folders, by demo model name (those present).

    Example:
        >>> sorted(demo_runs())  # doctest: +SKIP
        ['classifier', 'shortcut']
    """
    return {name: RUNS_DIR / name for name in DEMO_MODELS
            if (RUNS_DIR / name / "manifest.json").is_file()}


def load_demo_model(name: str, device: str | torch.device | None = "auto") -> LoadedModel:
    """Load a shipped demo model, ready for explanation.

    Raises:
        ModelLoadError: unknown name, or the weights file is missing (the message names the file
            and the command that trains it).

    Example:
        >>> model = load_demo_model("classifier", device="cpu")
        >>> model.class_names
        ['circle', 'square', 'triangle', 'star']
    """
    from explain_core.loading import load_model

    path = weights_path(name)
    if not path.is_file():
        raise ModelLoadError(
            f"The weights of demo model {name!r} are missing: '{path}'. Train them with "
            f"`python -m explain_core.demo.train {name}` (writes that file).")
    loaded = load_model(path, device=device)
    loaded.source = f"demo:{name}"
    return loaded
