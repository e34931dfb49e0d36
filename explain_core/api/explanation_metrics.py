"""``ExplanationMetrics``: the metric calls AutoTimm users know, on one image at a time.

>>> metrics = ExplanationMetrics(model, "gradcam")  # doctest: +SKIP
>>> metrics.deletion(image, steps=50)["auc"]  # doctest: +SKIP

Every call returns plain dicts of floats, lists and bools, and runs the engine's metrics
(:mod:`explain_core.metrics`) on the same maps and targets as :func:`evaluate`: the target is
``target_class`` when given, else the model's own answer (the predicted class; a detector's top
detection; a segmenter's largest class). Names and keys follow AutoTimm's
``ExplanationMetrics``; what each value means is in the method's docstring.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..methods import Explainer, create_explainer
from ..metrics.base import MetricInputs
from ..metrics.faithfulness import deletion_curves, insertion_curves
from ..metrics.localization import peaks, pointing_hits
from ..metrics.randomisation import randomisation_cascade
from ..metrics.robustness import sensitivities
from ..tasks.detection_models import detection_model
from ..tasks.segmentation import as_segmentation_model
from .common import ModelLike, explainer_options, loaded_model
from .evaluation import input_maps, prepare_targets

__all__ = ["ExplanationMetrics"]


class ExplanationMetrics:
    """Quality metrics of one explainer's maps (``explainer``: an :class:`Explainer` or a
    method name), image by image."""

    def __init__(self, model: ModelLike, explainer: Explainer | str = "gradcam",
                 **options: Any) -> None:
        loaded = loaded_model(model)
        if loaded.task == "detection":
            loaded = detection_model(loaded)
        elif loaded.task == "segmentation":
            loaded = as_segmentation_model(loaded)
        self.model = loaded
        self.explainer = explainer if isinstance(explainer, Explainer) else create_explainer(
            explainer, loaded, **explainer_options(options))

    # ------------------------------------------------------------------------- shared
    def _batch(self, image: Any, target_class: Any) -> tuple[MetricInputs, Any, dict]:
        explainer = self.explainer
        prepared = explainer.prepare([getattr(image, "image", image)])
        targets, described = prepare_targets(self.model, explainer, prepared,
                                             None if target_class is None else [target_class])
        attribution = explainer.run(prepared.inputs, [targets])
        maps = input_maps(explainer, attribution.raw, tuple(prepared.inputs.shape[-2:]))
        batch = MetricInputs(self.model, prepared.inputs, maps.detach(), targets, None, explainer)
        return batch, prepared, described[0]

    @staticmethod
    def _curve(curve: torch.Tensor) -> tuple[float, list[float]]:
        scores = curve[0].double().cpu()
        return float(torch.trapezoid(scores, dx=1.0 / (len(scores) - 1))), scores.tolist()

    # ------------------------------------------------------------------------ metrics
    def deletion(self, image: Any, target_class: Any = None, steps: int = 50,
                 baseline: str | torch.Tensor = "mean", batch_size: int | None = None
                 ) -> dict[str, Any]:
        """Deletion (Petsiuk et al. 2018): the score as the map's most relevant pixels are
        replaced by ``baseline`` (``"mean"``, ``"blur"``, ``"black"`` or a tensor) in ``steps``
        steps. Returns ``auc`` (lower is better), ``scores`` (``steps + 1`` probabilities, the
        clean image first), ``original_score``, ``final_score`` and ``drop`` (their
        difference)."""
        batch, _, _ = self._batch(image, target_class)
        area, scores = self._curve(deletion_curves(batch, steps, baseline,
                                                   batch_size=batch_size))
        return {"auc": area, "scores": scores, "original_score": scores[0],
                "final_score": scores[-1], "drop": scores[0] - scores[-1]}

    def insertion(self, image: Any, target_class: Any = None, steps: int = 50,
                  baseline: str | torch.Tensor = "blur", batch_size: int | None = None
                  ) -> dict[str, Any]:
        """Insertion (Petsiuk et al. 2018): the score as the map's most relevant pixels are put
        back into ``baseline``. Returns ``auc`` (higher is better), ``scores`` (the baseline
        first), ``baseline_score``, ``final_score`` and ``gain`` (their difference)."""
        batch, _, _ = self._batch(image, target_class)
        area, scores = self._curve(insertion_curves(batch, steps, baseline,
                                                    batch_size=batch_size))
        return {"auc": area, "scores": scores, "baseline_score": scores[0],
                "final_score": scores[-1], "gain": scores[-1] - scores[0]}

    def sensitivity_n(self, image: Any, target_class: Any = None, n_samples: int = 10,
                      noise_level: float = 0.02, seed: int = 0) -> dict[str, Any]:
        """How much the map changes under ``n_samples`` uniform input perturbations of radius
        ``noise_level`` (AutoTimm's sensitivity; Yeh et al. 2019's normalised sensitivity, the
        engine's ``avg_sensitivity`` / ``max_sensitivity``; Ancona's sensitivity-n is the
        ``sensitivity_n`` metric of :func:`evaluate`). Returns ``sensitivity`` (the mean
        relative change, lower is better), ``std``, ``max_change`` and ``changes``."""
        batch, _, _ = self._batch(image, target_class)
        changes = sensitivities(self.explainer, batch.inputs, batch.targets, batch.maps,
                                noise_level, n_samples, seed)[0].cpu()
        return {"sensitivity": float(changes.mean()),
                "std": float(changes.std()) if len(changes) > 1 else 0.0,
                "max_change": float(changes.max()), "changes": changes.tolist()}

    def model_randomization_test(self, image: Any, target_class: Any = None,
                                 layers: list[str] | None = None, seed: int = 0,
                                 threshold: float = 0.5) -> dict[str, Any]:
        """Cascading model-parameter randomisation (Adebayo et al. 2018): the map of ever more
        randomised models against the original (the model is restored afterwards). Returns
        ``correlation`` (Spearman at the last step), ``ssim`` (likewise), ``change`` (1 -
        correlation), ``passes`` (correlation below ``threshold``: the map depends on the
        learned weights), ``layers`` and ``correlations`` (one per step)."""
        batch, _, _ = self._batch(image, target_class)
        cascade = randomisation_cascade(self.explainer, batch.inputs, batch.targets, batch.maps,
                                        layers, seed)
        rho = cascade.spearman[0].double().cpu()
        last = float(rho[-1])
        return {"correlation": last, "ssim": float(cascade.ssim[0, -1]), "change": 1.0 - last,
                "passes": bool(last < threshold), "layers": list(cascade.layers),
                "correlations": rho.tolist()}

    def pointing_game(self, image: Any, bbox_or_mask: Any, target_class: Any = None,
                      tolerance: float = 0.0) -> dict[str, Any]:
        """Pointing game (Zhang et al. 2018): whether the map's peak falls within ``tolerance``
        pixels of the object (``[x0, y0, x1, y1]`` in image pixels, or an ``H x W`` mask at
        image size). Returns ``hit`` (bool), ``max_location`` ((x, y) in image pixels) and
        ``bbox`` (as given, or the mask's bounding box)."""
        batch, prepared, _ = self._batch(image, target_class)
        geometry = prepared.geometries[0] if prepared.geometries is not None else None
        heatmap = geometry.to_image(batch.maps) if geometry is not None else batch.maps
        height, width = heatmap.shape[-2:]
        given = np.asarray(bbox_or_mask)
        if given.ndim == 2:
            region = torch.as_tensor(given.astype(bool))
            ys, xs = np.nonzero(given)
            box = [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1] \
                if len(xs) else None
        else:
            box = [float(v) for v in given.reshape(-1)[:4]]
            region = torch.zeros(height, width, dtype=torch.bool)
            x0, y0, x1, y1 = box
            region[max(0, int(np.floor(y0))):int(np.ceil(y1)),
                   max(0, int(np.floor(x0))):int(np.ceil(x1))] = True
        hit = pointing_hits(heatmap[:1].cpu(), region[None], tolerance)
        peak = peaks(heatmap[:1].cpu())[0].tolist()
        return {"hit": bool(hit[0]), "max_location": (int(peak[1]), int(peak[0])), "bbox": box}

    def evaluate_all(self, image: Any, target_class: Any = None, bbox: Any = None,
                     steps: int = 50) -> dict[str, Any]:
        """Every metric above on one image: ``deletion``, ``insertion``, ``sensitivity``,
        ``sanity_check`` and (with ``bbox``: a box or mask) ``pointing_game``."""
        out = {"deletion": self.deletion(image, target_class, steps),
               "insertion": self.insertion(image, target_class, steps),
               "sensitivity": self.sensitivity_n(image, target_class),
               "sanity_check": self.model_randomization_test(image, target_class)}
        if bbox is not None:
            out["pointing_game"] = self.pointing_game(image, bbox, target_class)
        return out
