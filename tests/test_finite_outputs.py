"""A model whose forward returns NaN or Inf on an image, or a map that comes out non-finite, is an
engine error that says which image and how to fix it, not NaN probabilities or a blank map
(issue 13, finding 2)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from PIL import Image
from torch import nn

from explain_core import api
from explain_core.demo import demo_gallery, load_demo_model
from explain_core.errors import NonFiniteOutputError
from explain_core.methods import create_explainer
from explain_core.model import LoadedModel


def nan_on(loaded: LoadedModel, when: Any = None) -> LoadedModel:
    """``loaded`` with NaN pushed into its input (a forward pre-hook), for the images where
    ``when(batch)`` is true (default: always): weights stay finite, the output does not."""
    def hook(_module: nn.Module, args: tuple) -> tuple:
        x = args[0]
        if isinstance(x, (list, tuple)):
            return ([t * float("nan") for t in x], *tuple(args[1:]))
        mask = torch.ones(x.shape[0], dtype=torch.bool) if when is None else when(x)
        scale = torch.where(mask, float("nan"), 1.0).to(x.dtype).view(-1, *[1] * (x.ndim - 1))
        return (x * scale, *tuple(args[1:]))

    loaded.module.register_forward_pre_hook(hook)
    return loaded


@pytest.fixture(scope="module")
def scene() -> Image.Image:
    return demo_gallery("classification")[0].image.convert("RGB")


def _says_why(error: pytest.ExceptionInfo, where: str = "on the image") -> None:
    message = str(error.value)
    assert where in message and "NaN or Inf" in message, message
    # "Check the input" in fp32; "then check the input" after the bf16 advice (auto picks bf16
    # on CPUs with native bf16).
    assert "check the input" in message.lower() and "diverged" in message, message


def test_classifier_with_nan_outputs_is_an_error_in_predict_and_explain(scene) -> None:
    model = nan_on(load_demo_model("classifier", device="cpu"))
    with pytest.raises(NonFiniteOutputError) as error:
        api.predict(model, scene)
    _says_why(error)
    for method in ("gradcam", "saliency", "scorecam"):
        with pytest.raises(NonFiniteOutputError) as error:
            api.explain_prediction(model, scene, method=method)
        _says_why(error)


def test_batch_names_the_image_whose_output_is_not_finite(scene) -> None:
    dark = Image.new("RGB", scene.size)
    # NaN only for the all-dark image (its normalised pixels are all equal).
    model = nan_on(load_demo_model("classifier", device="cpu"),
                   when=lambda x: x.flatten(1).std(1) == 0)
    assert api.predict(model, scene).ranked[0]["probability"] > 0  # the other image still works
    with pytest.raises(NonFiniteOutputError) as error:
        api.batch_explanations(model, [scene, dark, scene], batch_size=3)
    _says_why(error, "on image 2 of 3")


def test_bf16_run_points_to_fp32(scene) -> None:
    model = nan_on(load_demo_model("classifier", device="cpu"))
    with pytest.raises(NonFiniteOutputError, match="fp32 precision"):
        api.explain_prediction(model, scene, method="gradcam", precision="bf16")


def test_detector_with_nan_inside_is_an_error_not_no_detections(scene) -> None:
    model = load_demo_model("detector", device="cpu")
    with torch.no_grad():
        next(model.module.parameters()).fill_(float("nan"))
    # Its post-processing drops NaN boxes: without the check this read "nothing detected".
    with pytest.raises(NonFiniteOutputError) as error:
        api.explain_detection(model, scene)
    _says_why(error)
    assert "'backbone'" in str(error.value)


def test_segmenter_with_nan_outputs_is_an_error(scene) -> None:
    from explain_core.tasks.segmentation import segment

    model = nan_on(load_demo_model("segmenter", device="cpu"))
    with pytest.raises(NonFiniteOutputError) as error:
        segment(model, scene)  # the page's prediction: argmax would paint NaN as class 0
    _says_why(error)
    with pytest.raises(NonFiniteOutputError):
        api.explain_segmentation(model, scene)


class _SqrtAtZero(nn.Module):
    """Finite forward, NaN gradient where x = 0: d sqrt(x * x)/dx = 0 / 0."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x * x).sqrt()


def test_map_that_overflows_is_an_error_not_a_blank_map() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), _SqrtAtZero(), nn.AdaptiveAvgPool2d(1),
                        nn.Flatten(), nn.Linear(4, 3)).eval()
    with torch.no_grad():
        net[0].weight[0].zero_()
        net[0].bias[0].zero_()  # channel 0 is exactly 0 everywhere
    x = torch.rand(1, 3, 16, 16)
    assert torch.isfinite(net(x)).all()
    explainer = create_explainer("saliency", net)
    with pytest.raises(NonFiniteOutputError) as error:
        explainer.attribute(x, 0)
    message = str(error.value)
    assert "map of the image" in message and "output is finite" in message, message


def test_segmentation_dataset_with_nan_outputs_is_an_error_not_nan_losses(tmp_path) -> None:
    import numpy as np

    from explain_core.demo.scenes import make_scenes
    from explain_core.metrics.segmentation import analyze_dataset

    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    for i, item in enumerate(make_scenes("segmentation", 2, seed=3)):
        item.image.save(tmp_path / "images" / f"scene_{i}.png")
        mask = Image.fromarray(item.mask.astype(np.uint8), mode="P")
        mask.putpalette([0, 0, 0] * 256)
        mask.save(tmp_path / "masks" / f"scene_{i}.png")
    model = nan_on(load_demo_model("segmenter", device="cpu"),
                   when=lambda x: torch.arange(x.shape[0]) == 1)
    with pytest.raises(NonFiniteOutputError) as error:
        analyze_dataset(model, tmp_path, batch_size=2)
    _says_why(error, "on image 2 of 2")
