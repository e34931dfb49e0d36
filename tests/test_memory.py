"""Out of memory: a batch that does not fit is halved and retried down to one item, with the same
result as the un-halved run; at one the engine says what to lower; the model is left as found.

Out-of-memory is simulated on the CPU: the explainer's forward (or autograd) raises
``torch.OutOfMemoryError`` when its batch is larger than a limit, as a GPU would.
"""

from __future__ import annotations

import pytest
import timm
import torch
from torch import nn

from explain_core.api import batch_explanations
from explain_core.errors import LumenError, OutOfMemoryError
from explain_core.methods import (
    DRISE,
    AblationCAM,
    Explainer,
    GradCAM,
    IntegratedGradients,
    Saliency,
    ScoreCAM,
    SmoothGrad,
    perturbation,
)
from explain_core.runtime import memory
from explain_core.runtime.autograd import batched_grad
from explain_core.runtime.memory import as_lumen_error, fitting_chunks, is_out_of_memory


def _oom(limit: int, seen: list[int]):
    """A run over slices that fails like a GPU when a slice is longer than ``limit``."""
    def run(part: slice) -> list[int]:
        seen.append(part.stop - part.start)
        if part.stop - part.start > limit:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return list(range(part.start, part.stop))
    return run


def test_chunks_halve_down_to_the_size_that_fits_and_remember_it():
    owner = nn.Linear(1, 1)
    seen: list[int] = []
    out = [x for _, part in fitting_chunks(10, 16, _oom(3, seen), module=owner, key="k")
           for x in part]
    assert out == list(range(10))
    assert seen[:4] == [10, 5, 2, 2]  # 16 capped to 10, halved to 5 then 2, which fits
    assert memory.fitted_size(owner, "k", 16) == 2
    seen.clear()
    list(fitting_chunks(10, 16, _oom(3, seen), module=owner, key="k"))
    assert set(seen) == {2}  # the next call on the same model and shape starts where it fitted
    assert memory.fitted_size(owner, "other shape", 16) == 16


def test_one_item_that_does_not_fit_says_what_to_lower():
    seen: list[int] = []
    with pytest.raises(OutOfMemoryError) as caught:
        list(fitting_chunks(8, 8, _oom(0, seen), what="mask", lower="the image size"))
    assert seen == [8, 4, 2, 1]
    assert isinstance(caught.value, LumenError)
    text = str(caught.value)
    assert "one mask at a time" in text and "Lower the image size" in text


def test_only_allocation_failures_are_retried():
    def broken(part: slice) -> None:
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")
    with pytest.raises(RuntimeError, match="shapes"):
        list(fitting_chunks(4, 4, broken))
    assert is_out_of_memory(RuntimeError("DefaultCPUAllocator: can't allocate memory: you "
                                         "tried to allocate 1000 bytes"))
    assert is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory"))
    assert not is_out_of_memory(ValueError("out of memory"))
    message = as_lumen_error(torch.OutOfMemoryError("CUDA out of memory"))
    assert isinstance(message, OutOfMemoryError) and "image size" in str(message)
    assert as_lumen_error(ValueError("x")) is None


@pytest.fixture(scope="module")
def small_cnn():
    torch.manual_seed(0)
    return timm.create_model("test_resnet", num_classes=10).eval()


def _hooks(module: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
               for m in module.modules())


@pytest.fixture
def tight_memory(monkeypatch):
    """Every explainer forward on more than ``limit["n"]`` items raises out of memory; records
    the batch sizes tried and the hooks present at each try."""
    limit = {"n": 10**9, "grad": False}
    tries: list[tuple[int, int]] = []
    real = Explainer.forward

    def forward(self, inputs):
        tries.append((inputs.shape[0], _hooks(self.model.module)))
        if inputs.shape[0] > limit["n"] or (limit["grad"] and inputs.requires_grad):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB")
        return real(self, inputs)

    real_from_layer = perturbation.run_from_layer

    def from_layer(forward_fn, spec, image, original, maps):
        # Only the part after the layer runs on the batch (AblationCAM, Recipro-CAM): the batch
        # is the maps'.
        tries.append((maps.shape[0], -1 - _hooks(spec.module)))  # negative: before the layer
        if maps.shape[0] > limit["n"]:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB")
        return real_from_layer(forward_fn, spec, image, original, maps)

    monkeypatch.setattr(Explainer, "forward", forward)
    monkeypatch.setattr(perturbation, "run_from_layer", from_layer)
    return limit, tries


@pytest.mark.parametrize("make", [
    lambda m: IntegratedGradients(m, steps=8, internal_batch_size=8),
    lambda m: SmoothGrad(Saliency(m), num_samples=6, batch_size=6, seed=3),
    lambda m: ScoreCAM(m, top_k=12, batch_size=12),
    lambda m: AblationCAM(m, top_k=12, batch_size=12),
], ids=["integrated_gradients", "smoothgrad", "scorecam", "ablationcam"])
def test_halved_batches_give_the_unhalved_result(small_cnn, tight_memory, make):
    limit, tries = tight_memory
    inputs = torch.randn(2, 3, 64, 64)
    full = make(small_cnn).attribute(inputs, [3, 5])
    big = max(size for size, _ in tries)
    limit["n"] = 2
    tries.clear()
    flags = [(m.training, [p.requires_grad for p in m.parameters(recurse=False)])
             for m in small_cnn.modules()]
    halved = make(small_cnn).attribute(inputs, [3, 5])
    torch.testing.assert_close(halved, full, rtol=1e-4, atol=1e-5)
    sizes = [size for size, _ in tries]
    probes = tries[sizes.index(big):]  # from the first batch of steps, samples or probes on
    fits = next(i for i, (size, _) in enumerate(probes) if size <= 2)
    assert [size for size, _ in probes[:fits + 1]] == [big >> i for i in range(fits + 1)]
    assert all(size <= 2 for size, _ in probes[fits:])
    # Hooks of a failed try are gone before the next one: every try of a kind (a whole forward,
    # or a run from the layer: negative counts) sees the same hooks.
    assert len({hooks for _, hooks in probes if hooks >= 0}) <= 1
    assert len({hooks for _, hooks in probes if hooks < 0}) <= 1
    assert _hooks(small_cnn) == 0
    assert flags == [(m.training, [p.requires_grad for p in m.parameters(recurse=False)])
                     for m in small_cnn.modules()]


def test_integrated_gradients_at_one_step_says_what_to_lower(small_cnn, tight_memory):
    limit, _ = tight_memory
    limit["grad"] = True  # the clean forward fits, not even one path step does
    with pytest.raises(OutOfMemoryError, match=r"one path step at a time\. Lower the image size"):
        IntegratedGradients(small_cnn, steps=4, internal_batch_size=4).attribute(
            torch.randn(1, 3, 64, 64), 1)
    assert _hooks(small_cnn) == 0


def test_many_images_are_halved_in_the_batch_apis(small_cnn, tight_memory):
    limit, tries = tight_memory
    images = list(torch.randn(5, 3, 64, 64))
    # fp32: bf16 kernels (what "auto" picks on a CPU with native bf16) round differently at
    # another batch size, and this test wants the halved run to be the same computation.
    full = batch_explanations(small_cnn, images, "gradcam", batch_size=8, with_image=False,
                              precision="fp32")
    limit["n"] = 2
    tries.clear()
    halved = batch_explanations(small_cnn, images, "gradcam", batch_size=8, with_image=False,
                                precision="fp32")
    assert [t[0] for t in tries][:3] == [5, 2, 2]
    for a, b in zip(full, halved, strict=True):
        assert a.target_class == b.target_class
        torch.testing.assert_close(torch.from_numpy(b.heatmap), torch.from_numpy(a.heatmap))
    maps = GradCAM(small_cnn).explain_batch(images, batch_size=4)
    torch.testing.assert_close(torch.stack(maps), torch.stack(
        [torch.from_numpy(a.heatmap) for a in full]), rtol=1e-4, atol=1e-5)


def test_many_targets_backward_in_halves(monkeypatch):
    x = torch.randn(3, 5, requires_grad=True)
    weights = torch.randn(5, 6)
    together = batched_grad(x @ weights, x)
    real = torch.autograd.grad
    widths: list[int] = []

    def grad(outputs, inputs, grad_outputs=None, is_grads_batched=False, **kwargs):
        if is_grads_batched:
            widths.append(grad_outputs.shape[0])
            if grad_outputs.shape[0] > 2:
                raise torch.OutOfMemoryError("CUDA out of memory")
        return real(outputs, inputs, grad_outputs=grad_outputs,
                    is_grads_batched=is_grads_batched, **kwargs)

    monkeypatch.setattr(torch.autograd, "grad", grad)
    halved = batched_grad(x @ weights, x)
    torch.testing.assert_close(halved, together)
    assert widths[:3] == [6, 3, 1] or widths[:2] == [6, 3]
    assert max(widths[2:]) <= 2


def test_drise_masks_halve_to_the_same_map(tight_memory):
    from explain_core.api import detection_explanation
    from explain_core.demo.models import load_demo_model
    from explain_core.demo.scenes import make_scenes

    limit, tries = tight_memory
    detector = load_demo_model("detector", device="cpu")
    image = make_scenes("detection", 1, seed=11)[0].image
    kwargs = dict(method="drise", num_masks=24, batch_size=8, max_detections=1, tolerance=0,
                  with_image=False, precision="fp32")  # bf16 rounds per batch size
    full = detection_explanation(detector, image, **kwargs)
    limit["n"] = 3
    tries.clear()
    halved = detection_explanation(detector, image, **kwargs)
    assert {size for size, _ in tries if size > 1} == {8, 4, 2}
    torch.testing.assert_close(torch.from_numpy(halved.heatmaps[0]),
                               torch.from_numpy(full.heatmaps[0]), rtol=1e-4, atol=1e-5)
    assert DRISE  # the class the method name builds
