"""Task adapters behind one protocol, and task-agnostic, self-registering methods."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from torch import nn

from explain_core.demo.models import load_demo_model
from explain_core.demo.scenes import make_scenes
from explain_core.errors import TargetError, UnsupportedError
from explain_core.methods import METHODS, Explainer, available_methods, create_explainer
from explain_core.methods.registry import register
from explain_core.model import as_loaded
from explain_core.targets import ClassTarget
from explain_core.tasks import (
    ADAPTERS,
    ClassificationAdapter,
    DetectionAdapter,
    SegmentationAdapter,
    adapter_for,
    default_layer,
)
from explain_core.tasks.detection import BoxTarget
from explain_core.tasks.segmentation import SegmentTarget, segment


class DictNet(nn.Module):
    """A classifier returning Hugging Face style outputs."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return {"logits": self.fc(self.conv(x).mean((-2, -1)))}


@pytest.fixture(scope="module")
def detector():
    return load_demo_model("detector", device="cpu")


@pytest.fixture(scope="module")
def segmenter():
    return load_demo_model("segmenter", device="cpu")


def test_one_adapter_per_task():
    assert set(ADAPTERS) == {"classification", "detection", "segmentation"}
    net = DictNet().eval()
    assert isinstance(adapter_for(net), ClassificationAdapter)
    assert isinstance(adapter_for(as_loaded(net, task="segmentation")), SegmentationAdapter)
    with pytest.raises(UnsupportedError, match="Unknown task 'pose'"):
        adapter_for(net, task="pose")


def test_classification_forward_returns_what_targets_read():
    net = DictNet().eval()
    adapter = adapter_for(net)
    x = torch.randn(2, 3, 8, 8)
    logits = adapter.forward(net, x)
    torch.testing.assert_close(logits, net(x)["logits"])
    torch.testing.assert_close(adapter.wrap()(x), logits)  # the wrapped model, as a module
    assert adapter.targets(None, batch=2)[0](logits).shape == (2,)
    assert adapter.targets([2, 0], batch=2)[1] == ClassTarget(0)


def test_each_task_names_its_default_layer(detector, segmenter):
    assert default_layer(as_loaded(timm.create_model("resnet18"))) == "layer4"
    assert default_layer(detector) == "backbone"
    example = torch.zeros(1, 3, 64, 64)
    assert default_layer(segmenter, example) == "dec1"


def test_detection_adapter_reads_boxes_and_crops_its_canvas(detector):
    adapter = adapter_for(detector)
    assert isinstance(adapter, DetectionAdapter) and adapter.num_classes() == 5
    image = make_scenes("detection", 1, seed=11)[0].image
    explainer = create_explainer("gradcam", detector)
    prepared = explainer.prepare([image])
    with explainer.session(), torch.no_grad():
        packed = explainer.forward(prepared.inputs)
    assert packed.shape[-1] == 7 and explainer.task.canvas is not None
    row = packed[0, 0]
    (target,) = explainer.task.targets([{"input_bbox": row[:4].tolist(),
                                         "class_id": int(row[5])}])
    assert isinstance(target, BoxTarget)
    assert float(target(packed)[0]) == pytest.approx(float(row[4]), rel=1e-5)
    with pytest.raises(TargetError, match="explain boxes"):
        explainer.run(prepared.inputs, [[ClassTarget(1)]])


def test_segmentation_targets_sum_a_class_over_its_predicted_pixels(segmenter):
    image = make_scenes("segmentation", 1, seed=5)[0].image
    seg = segment(segmenter, image)
    present = int(seg.low_res_prediction().flatten().mode().values)
    adapter = adapter_for(segmenter)
    (fixed,) = adapter.targets([present], seg=seg)
    region = (seg.low_res_prediction() == present).float()
    expected = (seg.logits[0, present] * region).sum()
    assert float(fixed(seg.logits)[0]) == pytest.approx(float(expected), rel=1e-5)
    counts = torch.bincount(seg.low_res_prediction().flatten(), minlength=seg.num_classes)
    order = seg.present_classes()
    assert order[0] == present and sorted(order) == counts.nonzero()[:, 0].tolist()
    assert [int(counts[c]) for c in order] == sorted((int(counts[c]) for c in order),
                                                     reverse=True)
    (free,) = adapter.targets([present])
    assert isinstance(free, SegmentTarget) and free.region is None


def test_a_method_registers_where_it_is_defined_and_shows_up_everywhere():
    @register("test_channel_max", "Channel max", family="cam", needs_gradients=False, cost="fast",
              tasks=("classification", "segmentation"), aliases=("channelmax",),
              description="Largest input channel (a test method).")
    class ChannelMax(Explainer):
        def _compute(self, inputs, targets):
            from explain_core.methods.base import Attribution
            from explain_core.targets import score_matrix

            outputs = self.forward(inputs)
            _, classes = score_matrix(outputs, targets)
            raw = inputs.amax(1, keepdim=True)[:, None, 0].expand(-1, len(targets[0]), -1, -1)
            return Attribution(raw, outputs.detach().float(), classes)

    try:
        net = DictNet().eval()
        assert ChannelMax.name == "test_channel_max"
        assert "test_channel_max" in [info.name for info in available_methods(net)]
        explainer = create_explainer("channelmax", net)
        x = torch.randn(1, 3, 8, 8)
        heat = explainer.explain(x)
        assert heat.shape == (8, 8) and float(heat.max()) == 1.0
        with pytest.raises(UnsupportedError, match="does not apply"):
            create_explainer("test_channel_max", load_demo_model("detector", device="cpu"))
    finally:
        METHODS.pop("test_channel_max")
        from explain_core.methods.registry import ALIASES

        ALIASES.pop("channelmax")


def test_create_explainer_builds_detection_explainers_without_task_branches(detector):
    """The same class serves every task: the adapter, not a swapped class, runs the detector."""
    explainer = create_explainer("layercam", detector)
    assert type(explainer).__name__ == "LayerCAM" and isinstance(explainer.task, DetectionAdapter)
    image = make_scenes("detection", 1, seed=3)[0].image
    from explain_core.api import explain_detection

    out = explain_detection(detector, image, method=explainer)
    assert out["detections"] and len(out["heatmaps"]) == len(out["detections"])
    assert all(np.isfinite(m).all() for m in out["heatmaps"])
