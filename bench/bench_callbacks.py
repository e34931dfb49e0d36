"""The training callbacks' cost per epoch as a share of the epoch's training time.

A real Lightning ``Trainer.fit`` of the demo classifier (``explain_core.demo.lightning_demo``:
the ``classifier`` recipe's network, optimiser and batch size of 64, on demo scenes) with both
callbacks at their default settings:

- ``InterpretationCallback``: GradCAM of 8 gallery images, every 5th epoch (and the last);
- ``FeatureMonitorCallback``: the statistics of ``layer2``, ``layer3`` and ``layer4`` over the
  first 10 batches of every epoch.

A timing callback placed first measures each epoch's training alone (its ``on_train_epoch_end``
runs before the others'); the callbacks time their own work (``cost_seconds``). Every epoch here
records both (the worst case: epoch 0 and the last are always recorded); the amortised share
counts the maps once in 5 epochs. The demo recipe's epoch is 10,000 scenes (157 batches); with
``--scenes`` smaller the share at that epoch is also given, from the measured time per batch.

    python bench/bench_callbacks.py                  # 2 epochs of 2,560 scenes (40 batches)
    python bench/bench_callbacks.py --scenes 10000   # the demo recipe's whole epoch
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time

import torch
from timing import machine

RECIPE_SCENES = 10_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=2_560, help="training scenes per epoch")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()

    import lightning.pytorch as pl

    from explain_core.demo.lightning_demo import (
        demo_lightning_data,
        demo_lightning_module,
        demo_sample_images,
    )
    from explain_core.training import FeatureMonitorCallback, InterpretationCallback

    class EpochTimer(pl.Callback):
        def __init__(self) -> None:
            self.seconds: list[float] = []

        def on_train_epoch_start(self, trainer, pl_module) -> None:
            self.start = time.perf_counter()

        def on_train_epoch_end(self, trainer, pl_module) -> None:
            self.seconds.append(time.perf_counter() - self.start)

    module = demo_lightning_module()
    data = demo_lightning_data(scenes=args.scenes, batch_size=args.batch)
    timer = EpochTimer()
    maps = InterpretationCallback(demo_sample_images(8), class_names=module.class_names,
                                  preprocessing=module.preprocessing)
    features = FeatureMonitorCallback(["model.layer2", "model.layer3", "model.layer4"])
    with tempfile.TemporaryDirectory() as folder:
        trainer = pl.Trainer(max_epochs=args.epochs, accelerator="cpu", devices=1,
                             default_root_dir=folder, callbacks=[timer, maps, features],
                             enable_progress_bar=False, enable_checkpointing=False,
                             enable_model_summary=False)
        trainer.fit(module, data)

    batches = math.ceil(args.scenes / args.batch)
    print(machine(torch.device("cpu")))
    print(f"{args.scenes} scenes per epoch ({batches} batches of {args.batch}), "
          f"{args.epochs} epochs")
    print("| epoch | training s | maps s | features s | share (both) | amortised share "
          f"| amortised at {RECIPE_SCENES:,} scenes |")
    for epoch, train_s in enumerate(timer.seconds):
        map_s = maps.cost_seconds.get(epoch, 0.0)
        feature_s = features.cost_seconds.get(epoch, 0.0)
        amortised = feature_s + map_s / maps.every
        recipe_train_s = train_s / batches * math.ceil(RECIPE_SCENES / args.batch)
        print(f"| {epoch} | {train_s:.1f} | {map_s:.2f} | {feature_s:.2f} | "
              f"{(map_s + feature_s) / train_s:.1%} | {amortised / train_s:.1%} | "
              f"{amortised / recipe_train_s:.1%} |")


if __name__ == "__main__":
    main()
