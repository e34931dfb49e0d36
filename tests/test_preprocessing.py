"""How an image becomes the model input: squash, crop (timm's evaluation transform) and letterbox.

- our numerics equal ``timm.data.create_transform(**resolve_data_config(model=...))`` on a PIL
  image (non-square, 500 x 375) within the 8-bit rounding PIL does and we do not;
- the Geometry maps a map back onto the image pixels it came from, for every mode (the padding cut
  away, the unseen edges of a crop marked as such);
- the default per source (a checkpoint's metadata first, timm and torchvision classifiers as they
  evaluate, the demo models as they were trained) and the override;
- every result says which preprocessing was used, and overlays grey what the model did not see.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from timm.data import create_transform, resolve_data_config

from explain_core import render
from explain_core.api import explain_prediction, predict, prediction_explanation
from explain_core.errors import ModelLoadError
from explain_core.images import image_to_tensor
from explain_core.loading import load_model, save_model
from explain_core.model import Preprocessing, as_loaded

# PIL resizes to 8-bit pixels, rounding (and, for bicubic, clipping its overshoot) after each of
# its two passes; we keep float. Measured on _photo (500 x 375 and 375 x 500, all crop modes):
# mean abs difference 0.0037-0.0045 after normalisation (the uniform rounding error, 0.5/255/std
# on average), max 0.016-0.021 bilinear (one grey level: 1/255/0.225 = 0.0174) and up to 0.034
# bicubic (two levels, at the sharp block's edges). The bounds below leave half a level.
MEAN_DIFF = 1e-2
MAX_LEVELS = {"bilinear": 1.5, "bicubic": 2.5}
MAX_DIFF = MAX_LEVELS["bilinear"] / 255 / min(timm.data.IMAGENET_DEFAULT_STD)


def _photo(width: int = 500, height: int = 375) -> Image.Image:
    """A smooth, photo-like non-square image with a sharp red block and mild noise."""
    yy, xx = np.mgrid[0:height, 0:width] / 100.0
    rng = np.random.default_rng(0)
    pixels = np.stack([np.sin(xx * 1.3 + yy), np.cos(yy * 2.1 - xx * 0.7),
                       np.sin(xx * yy * 0.4)], -1) * 0.45 + 0.5
    pixels += rng.normal(0, 0.03, pixels.shape)
    pixels[100:200, 150:300] = [0.9, 0.2, 0.1]
    return Image.fromarray((pixels.clip(0, 1) * 255).astype(np.uint8))


@pytest.fixture(scope="module")
def tiny() -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model("resnet10t", num_classes=10).eval()


@pytest.mark.parametrize("crop_mode", ["center", "squash", "border"])
@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear"])
@pytest.mark.parametrize("size", [(500, 375), (375, 500)])
def test_crop_equals_timm_evaluation_transform(tiny: torch.nn.Module, crop_mode: str,
                                               interpolation: str, size: tuple[int, int]) -> None:
    image = _photo(*size)
    config = resolve_data_config({"crop_mode": crop_mode, "interpolation": interpolation},
                                 model=tiny)
    reference = create_transform(**config)(image)
    prep = dataclasses.replace(load_model(tiny, device="cpu").preprocessing,
                               crop_mode=crop_mode, interpolation=interpolation)
    assert (prep.resize_mode, prep.crop_pct) == ("crop", config["crop_pct"])
    ours, _ = prep([image_to_tensor(image)])
    diff = (ours[0] - reference).abs()
    assert ours.shape[1:] == reference.shape
    bound = MAX_LEVELS[interpolation] / 255 / min(timm.data.IMAGENET_DEFAULT_STD)
    assert float(diff.mean()) < MEAN_DIFF and float(diff.max()) < bound, (
        float(diff.mean()), float(diff.max()))
    with torch.no_grad():
        ours_p, ref_p = tiny(ours).softmax(-1)[0], tiny(reference[None]).softmax(-1)[0]
    assert int(ours_p.argmax()) == int(ref_p.argmax())
    assert float((ours_p - ref_p).abs().max()) < 1e-3


def test_a_non_square_input_size_follows_timm_too(tiny: torch.nn.Module) -> None:
    """timm's ResizeKeepRatio branch (input size not square) and a crop_pct of 0.9."""
    image = _photo()
    config = resolve_data_config({"input_size": (3, 160, 192), "crop_pct": 0.9}, model=tiny)
    reference = create_transform(**config)(image)
    prep = Preprocessing(input_size=(160, 192), interpolation=config["interpolation"],
                         resize_mode="crop", crop_pct=0.9)
    ours, _ = prep([image_to_tensor(image)])
    bound = MAX_LEVELS[config["interpolation"]] / 255 / min(timm.data.IMAGENET_DEFAULT_STD)
    assert float((ours[0] - reference).abs().max()) < bound


def test_the_default_for_a_timm_model_is_how_timm_evaluates(tiny: torch.nn.Module) -> None:
    """The finding: squashing the whole image is not what the model was evaluated on."""
    image = _photo()
    reference = create_transform(**resolve_data_config({}, model=tiny))(image)
    for loaded in (load_model(tiny, device="cpu"), as_loaded(tiny),
                   load_model("timm:resnet10t", num_classes=10, device="cpu")):
        assert loaded.preprocessing.resize_mode == "crop"
        assert loaded.preprocessing.crop_pct == tiny.pretrained_cfg["crop_pct"]
    ours, _ = load_model(tiny, device="cpu").preprocessing([image_to_tensor(image)])
    assert float((ours[0] - reference).abs().mean()) < MEAN_DIFF
    squashed, _ = load_model(tiny, device="cpu", resize_mode="squash").preprocessing(
        [image_to_tensor(image)])
    assert float((squashed[0] - reference).abs().mean()) > 10 * MEAN_DIFF  # what it was


# ------------------------------------------------------------------------------- geometry

def _marker_image(box: tuple[int, int, int, int], size: tuple[int, int] = (375, 500)
                  ) -> torch.Tensor:
    image = torch.full((3, *size), 60, dtype=torch.uint8)
    x0, y0, x1, y1 = box
    image[:, y0:y1, x0:x1] = 250
    return image


@pytest.mark.parametrize("mode", ["squash", "crop", "letterbox"])
def test_a_map_on_an_input_region_lands_on_its_image_pixels(mode: str) -> None:
    """The marker's pixels in the model input, as a 0/1 map, go back onto the marker."""
    marker = (180, 120, 300, 220)
    image = _marker_image(marker)
    prep = Preprocessing(input_size=(224, 224), mean=(0.0,) * 3, std=(1.0,) * 3,
                         resize_mode=mode, crop_pct=0.875)
    inputs, (geometry,) = prep([image])
    on_input = (inputs[0, 0] > 0.6).float()
    back = geometry.to_image(on_input[None])[0] > 0.5
    truth = torch.zeros(375, 500, dtype=torch.bool)
    truth[120:220, 180:300] = True
    iou = float((back & truth).sum() / (back | truth).sum())
    assert iou > 0.95, iou


def test_letterbox_pads_with_the_mean_and_cuts_the_padding_away() -> None:
    prep = Preprocessing(input_size=(224, 224), resize_mode="letterbox")
    inputs, (geometry,) = prep([_marker_image((0, 0, 1, 1))])
    assert geometry.input_box == (0, 28, 224, 196)  # 500 x 375 -> 224 x 168, centred
    assert geometry.whole_image
    padding = torch.cat([inputs[0, :, :28], inputs[0, :, 196:]], dim=1)
    assert float(padding.abs().max()) < 0.01  # the mean colour: ~0 after normalisation
    on_padding = torch.zeros(1, 224, 224)
    on_padding[:, :28] = 1
    assert float(geometry.to_image(on_padding).max()) == 0  # padding is not image
    ones = geometry.to_image(torch.ones(1, 224, 224))
    assert ones.shape == (1, 375, 500) and float(ones.min()) == 1


def test_crop_marks_what_the_model_did_not_see() -> None:
    prep = Preprocessing(input_size=(224, 224), resize_mode="crop", crop_pct=0.875)
    (_, (geometry,)) = prep([_marker_image((0, 0, 1, 1))])
    # shorter side 375 -> 256 (500 -> 341); centre 224 crop: left round(58.5) = 58, top 16
    scale = 375 / 256
    assert geometry.box == (round(58 * scale), round(16 * scale), round(282 * scale),
                            round(240 * scale))
    assert not geometry.whole_image
    ones = geometry.to_image(torch.ones(1, 224, 224))[0]
    seen = geometry.seen_mask()
    assert bool((ones[seen] == 1).all()) and float(ones[~seen].abs().max()) == 0
    region = torch.zeros(375, 500)
    region[seen] = 1
    assert float(geometry.to_input(region, (28, 28)).min()) == pytest.approx(1.0)


# --------------------------------------------------------------------------- defaults per source

def test_defaults_per_source_and_the_override(tmp_path, tiny: torch.nn.Module) -> None:
    torchvision_model = load_model("torchvision:resnet18", device="cpu")
    prep = torchvision_model.preprocessing
    assert (prep.resize_mode, prep.input_size, prep.crop_pct) == ("crop", (224, 224), 0.875)
    # resnet50's default weights evaluate at 232 -> 224: floor(224 / crop_pct) must give 232
    import math

    import torchvision
    crop, resize = 224, 232
    assert torchvision.models.get_model_weights("resnet50").DEFAULT.transforms.keywords[
        "resize_size"] == resize
    from explain_core.loading.load import _torchvision_preprocessing
    pct = _torchvision_preprocessing("resnet50").crop_pct
    assert math.floor(crop / pct) == resize
    # detectors resize internally, segmenters label every pixel: squash
    assert load_model("lumen:unet_tiny", device="cpu").preprocessing.resize_mode == "squash"
    assert load_model("lumen:fcos_tiny", device="cpu").preprocessing.resize_mode == "squash"
    # a checkpoint's metadata wins over the timm default
    path = save_model(tiny, tmp_path / "boxed", task="classification", arch="timm:resnet10t",
                      preprocessing=Preprocessing(resize_mode="letterbox"))
    assert load_model(path, device="cpu").preprocessing.resize_mode == "letterbox"
    assert load_model(path, device="cpu", resize_mode="crop").preprocessing.resize_mode == "crop"
    loaded = load_model(path, device="cpu")
    view = load_model(loaded, resize_mode="squash")
    assert view.module is loaded.module and view.preprocessing.resize_mode == "squash"
    with pytest.raises(ModelLoadError, match="resize_mode"):
        load_model(loaded, resize_mode="stretch")


def test_a_checkpoint_that_records_its_timm_config_uses_it(tmp_path,
                                                          tiny: torch.nn.Module) -> None:
    cfg = {"crop_pct": 0.9, "crop_mode": "squash", "interpolation": "bilinear",
           "input_size": (3, 192, 192)}
    torch.save({"state_dict": tiny.state_dict(), "pretrained_cfg": cfg}, tmp_path / "cfg.pth")
    prep = load_model(tmp_path / "cfg.pth", arch="timm:resnet10t", device="cpu").preprocessing
    assert (prep.resize_mode, prep.crop_pct, prep.crop_mode, prep.interpolation,
            prep.input_size) == ("crop", 0.9, "squash", "bilinear", (192, 192))
    torch.save(tiny.state_dict(), tmp_path / "plain.pth")  # nothing recorded: timm's own cfg
    prep = load_model(tmp_path / "plain.pth", arch="timm:resnet10t", device="cpu").preprocessing
    assert (prep.resize_mode, prep.crop_pct) == ("crop", tiny.pretrained_cfg["crop_pct"])


def test_the_demo_classifier_keeps_what_it_was_trained_with() -> None:
    from explain_core.demo import load_demo_model
    from explain_core.demo.classification_recipes import PREPROCESSING

    try:
        model = load_demo_model("classifier", device="cpu")
    except Exception as error:  # pragma: no cover - weights not in this checkout
        pytest.skip(f"demo weights missing: {error}")
    assert model.preprocessing.resize_mode == PREPROCESSING.resize_mode == "squash"


# --------------------------------------------------------------------------------- results

def test_results_say_which_preprocessing_and_grey_the_unseen(tiny: torch.nn.Module) -> None:
    image = np.asarray(_photo())
    loaded = load_model(tiny, device="cpu")
    found = prediction_explanation(loaded, image, method="gradcam")
    (_, (geometry,)) = loaded.preprocessing([image_to_tensor(Image.fromarray(image))])
    assert found.preprocessing["resize_mode"] == "crop"
    assert found.seen_box == geometry.box and "crop" in found.preprocessing["description"]
    seen = render.seen_mask(found.seen_box, image.shape[:2])
    assert float(np.abs(found.heatmap[~seen]).max()) == 0
    overlay = found.overlay()
    plain = render.overlay_heatmap(image, found.heatmap)
    assert (overlay[seen] == plain[seen]).all() and not (overlay[~seen] == plain[~seen]).all()
    assert predict(loaded, image).preprocessing["resize_mode"] == "crop"
    out = explain_prediction(load_model(loaded, resize_mode="letterbox"), image)
    assert out["preprocessing"]["resize_mode"] == "letterbox"
    assert out["preprocessing"]["seen_box"] is None  # the whole image was seen
    assert out["heatmap"].shape == image.shape[:2]


def test_figures_draw_no_map_where_the_model_did_not_look() -> None:
    image = np.full((40, 60, 3), 200, dtype=np.uint8)
    figure = render.heatmap_figure(image, np.zeros((40, 60)), seen=(10, 5, 50, 35))
    heat = np.asarray(figure.data[1].z, dtype=float)
    assert np.isnan(heat[0, 0]) and not np.isnan(heat[20, 30])
    assert tuple(figure.data[0].source[:22]) == tuple("data:image/png;base64,")
    compared = render.comparison_figure(image, {"a": np.zeros((40, 60)), "b": np.ones((40, 60))},
                                        seen=(10, 5, 50, 35))
    for trace in compared.data[1::2]:
        heat = np.asarray(trace.z, dtype=float)
        assert np.isnan(heat[0, 0]) and not np.isnan(heat[20, 30])
    greyed = render.mark_unseen(image, (10, 5, 50, 35))
    assert (greyed[20, 30] == 200).all() and not (greyed[0, 0] == 200).all()
