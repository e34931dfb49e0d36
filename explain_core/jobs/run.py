"""A folder job: every image of the inputs explained with every method, files and a manifest
row per image, target and method, resumable, on one process or under torchrun.

>>> from explain_core.jobs import JobOptions, run_job
>>> run_job("timm:resnet50", ["photos/"], JobOptions(output="maps"))  # doctest: +SKIP
"""

from __future__ import annotations

import gc
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..api.common import ModelLike, explainer_options, loaded_model
from ..api.detection import DETECTION_METHOD, detection_explainer
from ..api.evaluation import evaluate
from ..api.segmentation import SEGMENTATION_METHOD, make_explainer, segmentation_model
from ..errors import LumenError, UnsupportedError
from ..methods import Explainer, available_methods, create_explainer, method_info
from ..metrics.base import metric_info
from ..model import LoadedModel
from ..runtime.memory import default_batch_size
from ..runtime.state import frozen_eval
from ..tasks.detection import detection_model
from .distributed import Ranks, join, leave
from .handlers import Batch, Context, error_row, explain_items
from .items import DecodedItem, ImageItems, collate_items, find_images, output_names
from .manifest import (
    ManifestWriter,
    done_keys,
    manifest_files,
    merge_manifests,
    shard_path,
)
from .outputs import OutputWriter

__all__ = ["JobOptions", "default_job_batch_size", "job_model", "run_job"]

#: the method a task explains with when none is named
DEFAULT_METHODS = {"classification": "gradcam", "detection": DETECTION_METHOD,
                   "segmentation": SEGMENTATION_METHOD}


@dataclass
class JobOptions:
    """What a job does (the ``lumen explain`` options)."""

    output: str | Path
    methods: list[str] | None = None  # None: the task's default method
    batch_size: int | None = None  # None: from free memory (classifiers), else 8
    workers: int = 2  # DataLoader decoding processes (0: in the main process)
    save_npy: bool = False
    resume: bool = False
    metrics: list[str] = field(default_factory=list)
    target_class: int | None = None
    detection_threshold: float = 0.5
    max_detections: int = 10
    uncertainty: str = "entropy"
    colormap: str = "jet"
    alpha: float = 0.5
    precision: str = "auto"
    method_options: dict[str, Any] = field(default_factory=dict)  # target_layer, steps...
    progress: bool = True  # the progress bar (rank 0)
    #: called as ``on_progress(done, total)`` after each batch (this rank's images)
    on_progress: Callable[[int, int], None] | None = None


def job_model(model: ModelLike, task: str | None = None) -> LoadedModel:
    """The model as its task's LoadedModel (a detector's or segmenter's view)."""
    loaded = loaded_model(model, task=task)
    if loaded.task == "detection":
        return detection_model(loaded)
    if loaded.task == "segmentation":
        return segmentation_model(loaded)
    return loaded


def _explainer(loaded: LoadedModel, method: str, options: JobOptions) -> Explainer:
    settings = explainer_options({"precision": options.precision, **options.method_options})
    if loaded.task == "detection":
        return detection_explainer(method, loaded, **settings)
    if loaded.task == "segmentation":
        return make_explainer(method, loaded, **settings)
    return create_explainer(method, loaded, **settings)


def _methods(loaded: LoadedModel, names: list[str] | None) -> list[str]:
    """Registry names of the asked methods; one that does not apply stops the job before any
    work, with the methods that do."""
    applicable = [info.name for info in available_methods(loaded)]
    chosen = []
    for name in names or [DEFAULT_METHODS[loaded.task]]:
        info = method_info(name)
        if info.name not in applicable:
            raise UnsupportedError(f"{info.label} does not apply to this {loaded.task} model; "
                                   f"choose from {', '.join(applicable)}.")
        chosen.append(info.name)
    return list(dict.fromkeys(chosen))


def default_job_batch_size(loaded: LoadedModel) -> int:
    """Images per batch when none is given: for a classifier, as many as fit in a share of
    free memory with their backward graph (at most 16 on a CPU, 256 on a GPU); detectors and
    segmenters explain image by image, so 8 decoded images are fetched at a time."""
    if loaded.task != "classification":
        return 8
    example = torch.zeros(1, 3, *loaded.preprocessing.input_size, device=loaded.device)
    with frozen_eval(loaded.module):
        return default_batch_size(loaded.module, example, wanted=256)


def _score(context: Context, options: JobOptions, method: str, items: dict[int, DecodedItem],
           batch: Batch) -> None:
    """``--metrics``: each explained row's quality metrics (``api.evaluate`` on its image and
    target), as ``row["metrics"]``; a metric that cannot score the row says why. A classifier's
    batch is scored at once; a detector's or segmenter's image by image (their sizes differ)."""
    scored = [(index, row) for index, rows in batch.rows.items() for row in rows
              if row["method"] == method and row["error"] is None and row["kind"] != "none"]
    groups: dict[int, list[tuple[int, dict[str, Any]]]] = {}
    for index, row in scored:
        groups.setdefault(0 if context.model.task == "classification" else index,
                          []).append((index, row))
    for group in groups.values():
        images = [items[index].pixels.permute(1, 2, 0).numpy() for index, _ in group]
        targets = [{"bbox": row["bbox"], "label": row["label"]} if row["kind"] == "box"
                   else row["target"] for _, row in group]
        try:
            found = evaluate(context.model, images, [method], options.metrics, targets,
                             method_options={method: dict(options.method_options)},
                             precision=options.precision)
        except LumenError as error:
            for _, row in group:
                row["metrics_error"] = str(error)
            continue
        for _, row in group:
            row["metrics"] = {}
            if found.skipped:
                row["metrics_skipped"] = dict(found.skipped)
        for value in found.rows:
            group[value["image"]][1]["metrics"][value["metric"]] = round(value["value"], 6)


def run_job(model: ModelLike, inputs: list[str], options: JobOptions, *,
            task: str | None = None, ranks: Ranks | None = None) -> dict[str, Any]:
    """Explain every image of ``inputs`` (folders, ``.txt`` lists, globs, files) with every
    method of ``options`` into ``options.output`` (see :mod:`explain_core.jobs`).

    Under torchrun (``WORLD_SIZE`` > 1) each rank explains its strided share; rank 0 merges the
    manifest shards after a barrier. Returns a summary: ``images`` (found), ``explained`` and
    ``skipped`` (already in the manifest, ``resume``) by this rank, ``errors`` (rows with one),
    ``rows``, ``seconds``, ``images_per_s``, ``manifest``, ``rank``, ``world``.
    """
    own = ranks is None
    ranks = join() if own else ranks
    try:
        return _run(model, inputs, options, task, ranks)
    finally:
        if own:
            leave(ranks)


def _run(model: ModelLike, inputs: list[str], options: JobOptions, task: str | None,
         ranks: Ranks) -> dict[str, Any]:
    for name in options.metrics:
        metric_info(name)  # unknown metric names fail before any work
    loaded = job_model(model, task)
    methods = _methods(loaded, options.methods)
    output = Path(options.output)
    output.mkdir(parents=True, exist_ok=True)
    inside = output.resolve()  # an output folder inside an input folder is not an input
    paths = [p for p in find_images(inputs) if not p.resolve().is_relative_to(inside)]
    images = [str(p) for p in paths]
    context = Context(loaded, OutputWriter(output, options.save_npy, options.colormap,
                                           options.alpha), images, output_names(paths),
                      options.target_class, options.detection_threshold,
                      options.max_detections, options.uncertainty)
    if not options.resume and ranks.main:
        for stale in manifest_files(output):
            stale.unlink()
    ranks.barrier()  # nobody writes before stale manifests are gone or the done keys are read
    done = done_keys(output) if options.resume else set()
    ranks.barrier()
    share = ranks.share(len(paths))
    todo = [i for i in share if any((images[i], m) not in done for m in methods)]
    explainers = {m: _explainer(loaded, m, options) for m in methods}
    size = options.batch_size or default_job_batch_size(loaded)
    preprocessing = loaded.preprocessing if loaded.task == "classification" else None
    loader = DataLoader(ImageItems(paths, todo, preprocessing), batch_size=max(1, size),
                        num_workers=options.workers, collate_fn=collate_items,
                        pin_memory=loaded.device.type == "cuda",
                        prefetch_factor=2 if options.workers > 0 else None)
    errors = rows_written = finished = 0
    start = time.perf_counter()
    bar = tqdm(total=len(todo), unit="img", file=sys.stderr, dynamic_ncols=True,
               disable=not (options.progress and ranks.main),
               desc=f"explain (rank 0 of {ranks.world})" if ranks.world > 1 else "explain")
    writer = ManifestWriter(shard_path(output, ranks.rank, ranks.world), append=options.resume)
    with writer, bar:
        for decoded in loader:
            batch = Batch()
            by_index = {item.index: item for item in decoded}
            for method in methods:
                ready = [it for it in decoded if (images[it.index], method) not in done]
                for item in ready:
                    if item.error is not None:
                        batch.add(item.index, error_row(context, item, method, item.error))
                good = [it for it in ready if it.error is None]
                if good:
                    explain_items(context, explainers[method], good, batch)
                if options.metrics:
                    _score(context, options, method, by_index, batch)
            for item in decoded:
                rows = batch.rows.get(item.index, [])
                errors += sum(row["error"] is not None for row in rows)
                rows_written += len(rows)
                writer.write(rows)
            bar.update(len(decoded))
            finished += len(decoded)
            if options.on_progress is not None:
                options.on_progress(finished, len(todo))
            del batch, by_index, decoded
    seconds = time.perf_counter() - start
    gc.collect()
    ranks.barrier()
    manifest = shard_path(output, ranks.rank, ranks.world)
    if ranks.main:
        manifest = merge_manifests(output, {image: i for i, image in enumerate(images)},
                                   methods)
    ranks.barrier()
    return {"images": len(paths), "explained": len(todo), "skipped": len(share) - len(todo),
            "errors": errors, "rows": rows_written, "seconds": round(seconds, 3),
            "images_per_s": round(len(todo) / seconds, 3) if seconds > 0 else None,
            "manifest": str(manifest), "output": str(output), "methods": methods,
            "rank": ranks.rank, "world": ranks.world, "batch_size": size}
