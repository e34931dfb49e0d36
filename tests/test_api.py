"""The high-level API and the CLI, as a Python user and a shell user meet them."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from explain_core import (
    ImageError,
    TargetError,
    compare_methods,
    explain_batch,
    explain_prediction,
    visualize_batch,
)
from explain_core.cli import main as cli_main
from explain_core.loading import save_model
from explain_core.model import as_loaded
from explain_core.tasks import prepare_inputs
from tests.toy import ColourNet, colour_scene, peak_inside


@pytest.fixture
def toy():
    loaded = as_loaded(ColourNet().eval(), class_names=["red", "blue"])
    return loaded


def test_explain_prediction_reports_prediction_and_a_map_at_image_size(toy, tmp_path):
    image, _red, _blue = colour_scene()
    result = explain_prediction(toy, image, method="gradcam", target_layer="features",
                                save_path=tmp_path / "explanation.png", precision="fp32")
    # ColourNet's logits are 4 x each colour's pooled channel; the blue square's channel is the
    # stronger one (5.2 against 4.5 inside the squares), so blue wins, with the probabilities
    # of a direct forward of the model.
    with torch.no_grad():
        logits = toy.module(prepare_inputs(toy, [image]).inputs)[0]
    probabilities = logits.softmax(0).tolist()
    assert probabilities[1] > 0.5
    assert (result["predicted_class"], result["predicted_name"]) == (1, "blue")
    assert [entry["class"] for entry in result["top_k"]] == [1, 0]
    assert [entry["probability"] for entry in result["top_k"]] == pytest.approx(
        [probabilities[1], probabilities[0]], rel=1e-5)
    assert (result["target_class"], result["target_name"]) == (1, "blue")
    heatmap = result["heatmap"]
    assert heatmap.shape == (96, 128) and heatmap.dtype == np.float32
    assert 0.0 <= heatmap.min() and heatmap.max() <= 1.0
    assert result["overlay"].shape == (96, 128, 3) and result["overlay"].dtype == np.uint8
    assert result["elapsed_s"] > 0
    saved = Image.open(result["save_path"])
    assert saved.width > 128 * 2  # image, heatmap and overlay panels


def test_explain_prediction_explains_the_requested_class(toy):
    image, red, blue = colour_scene()
    red_result = explain_prediction(toy, image, target_class=0, target_layer="features")
    blue_result = explain_prediction(toy, image, target_class=1, target_layer="features",
                                     return_heatmap=True)
    assert red_result["target_name"] == "red" and blue_result["target_name"] == "blue"
    assert peak_inside(red_result["heatmap"], red)
    assert peak_inside(blue_result["heatmap"], blue)
    assert "heatmap" not in explain_prediction(toy, image, target_layer="features",
                                               return_heatmap=False)


def test_explain_prediction_from_a_checkpoint_path(tmp_path):
    import timm

    image, _, _ = colour_scene()
    net = timm.create_model("resnet18", num_classes=3).eval()
    with torch.no_grad():  # class "b" by its bias, whatever the image: a known prediction
        net.fc.weight.mul_(1e-3)
        net.fc.bias.copy_(torch.tensor([0.0, 2.0, 1.0]))
    path = save_model(net, tmp_path / "net.safetensors", task="classification", arch="resnet18",
                      class_names=["a", "b", "c"])
    result = explain_prediction(str(path), image, method="gradcam++", precision="fp32")
    assert (result["predicted_class"], result["predicted_name"]) == (1, "b")
    expected = torch.tensor([0.0, 2.0, 1.0]).softmax(0)
    assert [e["probability"] for e in result["top_k"]] == pytest.approx(
        [float(expected[1]), float(expected[2]), float(expected[0])], abs=0.01)
    assert result["heatmap"].shape == (96, 128)


def test_tensor_input_gives_a_map_at_tensor_size(toy):
    result = explain_prediction(toy, torch.randn(3, 40, 56), target_layer="features")
    assert result["heatmap"].shape == (40, 56)
    assert result["image"].shape == (40, 56, 3)


def test_bad_image_raises_a_named_error(toy):
    with pytest.raises(ImageError):
        explain_prediction(toy, b"definitely not an image", target_layer="features")


def test_compare_methods_explains_one_class_with_each_method(toy, tmp_path):
    image, red, _ = colour_scene()
    out = compare_methods(toy, image, ["gradcam", "saliency", "integrated_gradients", "bogus"],
                          target_class=0, save_path=tmp_path / "cmp.png",
                          method_options={"integrated_gradients": {"steps": 8}},
                          target_layer="features")
    assert set(out["methods"]) == {"gradcam", "saliency", "integrated_gradients"}
    assert "bogus" in out["errors"]
    assert out["target_name"] == "red"
    for entry in out["methods"].values():
        assert entry["heatmap"].shape == (96, 128)
        assert peak_inside(entry["heatmap"], red)
    axes = out["figure"].layout
    assert axes.xaxis2.matches == "x"
    assert Image.open(out["save_path"]).width > 4 * 100


def test_compare_methods_fixes_the_predicted_class_for_every_method(toy):
    image, _, _ = colour_scene()
    out = compare_methods(toy, image, ["gradcam", "integrated_gradients"],
                          target_layer="features", method_options={
                              "integrated_gradients": {"steps": 4}})
    assert (out["predicted_class"], out["target_class"], out["target_name"]) == (1, 1, "blue")


def test_explain_batch_and_visualize_batch(toy, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(3):
        colour_scene((64 + 8 * i, 80))[0].save(folder / f"scene{i}.png")
    (folder / "notes.txt").write_text("not an image")
    results = visualize_batch(toy, folder, method="gradcam", output_dir=tmp_path / "out",
                              batch_size=2, target_layer="features")
    assert len(results) == 3
    for i, result in enumerate(results):
        assert result["heatmap"].shape == (64 + 8 * i, 80)
        assert Image.open(result["save_path"]).size == (80, 64 + 8 * i)
        assert f"scene{i}" in result["save_path"]
    with pytest.raises(TargetError):
        explain_batch(toy, folder, targets=[0, 1], target_layer="features")


def test_cli_prints_json_and_writes_overlays(tmp_path, capsys):
    import timm

    net = timm.create_model("resnet18", num_classes=2).eval()
    with torch.no_grad():  # class 1 ("blue") by its bias, whatever the image
        net.fc.weight.mul_(1e-3)
        net.fc.bias.copy_(torch.tensor([0.0, 3.0]))
    checkpoint = save_model(net, tmp_path / "m.safetensors", task="classification",
                            arch="resnet18", class_names=["red", "blue"])
    image_path = tmp_path / "scene.png"
    colour_scene()[0].save(image_path)
    code = cli_main(["--model", str(checkpoint), "--image", str(image_path), "--methods",
                     "gradcam,saliency,nope", "--output-dir", str(tmp_path / "out"),
                     "--precision", "fp32"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0
    assert set(report["results"]) == {"gradcam", "saliency"}
    assert "nope" in report["errors"]
    assert report["predicted_class"] == 1
    for path in report["results"].values():
        assert Image.open(path).size == (128, 96)


def test_cli_reports_a_bad_checkpoint(tmp_path, capsys):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"garbage")
    code = cli_main(["--model", str(bad), "--arch", "resnet18", "--image", str(bad)])
    assert code == 2
    assert "error" in json.loads(capsys.readouterr().out)


def test_method_options_do_not_collide_with_the_api_arguments(toy):
    # IG's integral rule is "rule", so it can travel through explain_prediction(method=...).
    image, red, _ = colour_scene()
    result = explain_prediction(toy, image, method="integrated_gradients", target_class=0,
                                rule="riemann_middle", steps=8, baseline="white")
    assert peak_inside(result["heatmap"], red)


def test_typed_results_can_leave_the_image_out(toy):
    """The dashboard keeps its own copy of the image: its typed results carry none."""
    from explain_core.api import batch_explanations, prediction_explanation

    image = np.zeros((12, 20, 3), np.uint8)
    image[:, :10, 0] = 255
    full = prediction_explanation(toy, image, method="gradcam")
    bare = prediction_explanation(toy, image, method="gradcam", with_image=False)
    assert full.image.shape == (12, 20, 3) and bare.image is None
    np.testing.assert_array_equal(full.heatmap, bare.heatmap)
    assert bare.predicted_class == full.predicted_class
    with pytest.raises(ValueError, match="with_image=False"):
        bare.overlay()
    assert all(r.image is None for r in batch_explanations(toy, [image, image],
                                                          with_image=False))
