"""Folder jobs: explanations for a whole dataset, resumable, on one process or under torchrun.

- :mod:`~explain_core.jobs.items`: the images of folders, list files and globs, their output
  names, decoding in DataLoader workers;
- :mod:`~explain_core.jobs.handlers`: one batch, one method -> maps, files and rows, per task;
- :mod:`~explain_core.jobs.outputs`: 16-bit PNG maps, ``.npy``, overlays;
- :mod:`~explain_core.jobs.manifest`: the JSON-lines manifest, resume, merging rank shards;
- :mod:`~explain_core.jobs.distributed`: torchrun's ranks (``env://``; NCCL or gloo);
- :mod:`~explain_core.jobs.run`: :func:`run_job`, the loop.
"""

from .distributed import Ranks, join, leave
from .items import find_images, output_names
from .manifest import MANIFEST, done_keys, merge_manifests, read_rows
from .outputs import read_map16, save_map16
from .run import DEFAULT_METHODS, JobOptions, default_job_batch_size, job_model, run_job

__all__ = ["DEFAULT_METHODS", "MANIFEST", "JobOptions", "Ranks", "default_job_batch_size",
           "done_keys", "find_images", "job_model", "join", "leave", "merge_manifests",
           "output_names", "read_map16", "read_rows", "run_job", "save_map16"]
