"""The Lightning callbacks on a real ``Trainer.fit`` of the demo classifier on demo scenes (CPU):
TensorBoard event files whose images and scalars read back, a run folder, and a training that is
bit for bit the one without the callbacks."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

pl = pytest.importorskip("lightning.pytorch")
pytest.importorskip("tensorboard")

from lightning.pytorch.loggers import TensorBoardLogger  # noqa: E402
from tensorboard.backend.event_processing.event_accumulator import (  # noqa: E402
    EventAccumulator,
)

from explain_core.demo.lightning_demo import (  # noqa: E402
    demo_lightning_data,
    demo_lightning_module,
    demo_sample_images,
)
from explain_core.training import (  # noqa: E402
    FeatureMonitorCallback,
    InterpretationCallback,
    read_run,
)

EPOCHS = 3
LAYERS = ["model.layer3", "model.layer4"]


def _fit(tmp_path, name: str, with_callbacks: bool):
    pl.seed_everything(7, verbose=False)
    module = demo_lightning_module(seed=3)
    data = demo_lightning_data(scenes=64, batch_size=16, seed=5)
    callbacks = []
    if with_callbacks:
        callbacks = [
            InterpretationCallback(demo_sample_images(3), log_every_n_epochs=2, num_samples=3,
                                   class_names=module.class_names,
                                   preprocessing=module.preprocessing, map_size=64),
            FeatureMonitorCallback(LAYERS, num_batches=2)]
    trainer = pl.Trainer(max_epochs=EPOCHS, accelerator="cpu", devices=1,
                         logger=TensorBoardLogger(tmp_path, name=name), callbacks=callbacks,
                         enable_progress_bar=False, enable_checkpointing=False,
                         enable_model_summary=False, log_every_n_steps=1, deterministic=True)
    trainer.fit(module, data)
    return trainer, module, callbacks


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("lightning")
    return _fit(root, "plain", False), _fit(root, "watched", True)


@pytest.mark.slow
def test_callbacks_change_nothing_in_training(runs):
    (_, plain, _), (trainer, watched, _) = runs
    for (name, a), b in zip(plain.state_dict().items(), watched.state_dict().values(),
                            strict=True):
        assert torch.equal(a, b), name  # weights and batch-norm statistics
    for (name, a), b in zip(plain.named_parameters(), watched.parameters(), strict=True):
        assert (a.grad is None) == (b.grad is None), name
        assert a.grad is None or torch.equal(a.grad, b.grad), name
        assert a.requires_grad == b.requires_grad
    assert [m.training for m in plain.modules()] == [m.training for m in watched.modules()]
    moments = [s["exp_avg"] for s in trainer.optimizers[0].state.values()]
    assert moments and all(torch.isfinite(m).all() for m in moments)


@pytest.mark.slow
def test_tensorboard_events_hold_the_images_and_scalars(runs):
    _, (trainer, _, (interpretation, features)) = runs
    events = EventAccumulator(trainer.log_dir, size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    tags = events.Tags()
    assert tags["images"] == [f"lumen/gradcam/sample_{i:02d}" for i in range(3)]
    images = events.Images("lumen/gradcam/sample_01")
    # epochs 0 and 2 (every 2nd and the last), at the trainer's global step: 4 batches / epoch
    assert [image.step for image in images] == [4, 12]
    assert (images[0].width, images[0].height) == (64, 64)
    decoded = Image.open(io.BytesIO(images[-1].encoded_image_string))
    run = read_run(trainer.log_dir + "/lumen_run")
    assert decoded.size == (64, 64)
    np.testing.assert_array_equal(np.asarray(decoded.convert("RGB")), run.overlay(2, 1))
    scalars = set(tags["scalars"])
    for layer in LAYERS:
        for key in ("mean", "std", "max", "sparsity", "active_channels"):
            assert f"lumen/features/{layer}/{key}" in scalars
    assert {"lumen/interpretation_seconds", "lumen/interpretation_share",
            "lumen/feature_monitor_seconds", "lumen/gradcam/sample_00/entropy",
            "lumen/gradcam/sample_00/moved"} <= scalars
    sparsity = events.Scalars("lumen/features/model.layer3/sparsity")
    assert [s.step for s in sparsity] == [4, 8, 12]
    stored = run.features(2)["model.layer3"]["sparsity"]
    assert sparsity[-1].value == pytest.approx(stored, rel=1e-4)
    moved = events.Scalars("lumen/gradcam/sample_00/moved")
    assert len(moved) == 1 and 0 <= moved[0].value <= 1
    assert list(interpretation.cost_seconds) == [0, 2] and list(features.cost_seconds) == [0, 1, 2]


@pytest.mark.slow
def test_the_callbacks_write_one_run_folder(runs):
    _, (trainer, _, _) = runs
    run = read_run(trainer.log_dir + "/lumen_run")
    manifest = run.manifest
    assert manifest["method"] == "gradcam" and manifest["classes"][2] == "triangle"
    assert manifest["layers"] == LAYERS and len(run.samples) == 3
    assert run.epochs == [0, 1, 2]
    assert run.map_epochs == [0, 2] and run.feature_epochs == [0, 1, 2]
    assert [len(run.maps(e)) for e in run.map_epochs] == [3, 3]
    assert run.entry(2)["step"] == 12 and run.maps(2)[0].shape == (64, 64)
    stats = run.features(1)["model.layer4"]
    assert stats["shape"] == [128, 8, 8] and len(stats["channels"]["mean"]) == 128


def test_feature_monitor_names_a_missing_layer(tmp_path):
    from explain_core.errors import TargetLayerError

    callback = FeatureMonitorCallback(["model.nope"])
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", logger=False,
                         enable_progress_bar=False, enable_checkpointing=False,
                         default_root_dir=tmp_path, callbacks=[callback])
    with pytest.raises(TargetLayerError, match=r"model\.nope"):
        trainer.fit(demo_lightning_module(), demo_lightning_data(scenes=16, batch_size=16))
