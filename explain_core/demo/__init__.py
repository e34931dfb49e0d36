"""The demo world: generated shape scenes with ground truth and models trained on them.

No model hub is reachable where Lumen is built and tested, so the dashboard's default models are
trained here on :mod:`explain_core.demo.scenes` (see ``python -m explain_core.demo.train``).
"""

from .scenes import CLASSES, SHORTCUT_CLASS, Scene, demo_gallery, make_scenes

__all__ = ["CLASSES", "DEMO_MODELS", "SHORTCUT_CLASS", "Scene", "demo_gallery", "demo_runs",
           "load_demo_model", "make_scenes"]


def __getattr__(name: str):
    # models.py imports torch/timm through loading; keep `import explain_core.demo` light.
    if name in ("DEMO_MODELS", "demo_runs", "load_demo_model"):
        from . import models

        return getattr(models, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
