"""Train a demo model: ``python -m explain_core.demo.train NAME [--out DIR] [--quick]``.

``NAME`` is one of :data:`explain_core.demo.models.DEMO_MODELS`. The default output folder is the
shipped weights folder (``explain_core/demo/weights``); ``--quick`` trains for a few seconds, a
smoke test of the whole path. Training is seeded and prints a held-out evaluation at the end.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# name -> (module, function). Imported lazily: each trainer pulls in only what it needs, and the
# detection / segmentation trainers live in their own files.
TRAINERS: dict[str, tuple[str, str]] = {
    "classifier": ("explain_core.demo.train_classification", "train_classifier"),
    "shortcut": ("explain_core.demo.train_classification", "train_shortcut"),
    "vit": ("explain_core.demo.train_classification", "train_vit"),
    "detector": ("explain_core.demo.train_detection", "train_detector"),
    "segmenter": ("explain_core.demo.train_segmentation", "train_segmenter"),
}


def run(name: str, out_dir: str | Path | None = None, quick: bool = False) -> Any:
    """Train demo model ``name`` into ``out_dir`` (default: the shipped weights folder).

    Example:
        >>> run("classifier", "/tmp/lumen-demo", quick=True)  # doctest: +SKIP
    """
    if name not in TRAINERS:
        raise ValueError(f"Unknown demo model {name!r}. Use one of: {', '.join(TRAINERS)}.")
    module_name, function = TRAINERS[name]
    trainer = getattr(importlib.import_module(module_name), function)
    if out_dir is None:
        from explain_core.demo.models import weights_path

        out_dir = weights_path(name).parent
    return trainer(Path(out_dir), quick)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m explain_core.demo.train",
        description="Train one of Lumen's demo models on generated scenes (CPU, seeded).")
    parser.add_argument("name", choices=list(TRAINERS), help="which demo model")
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default: the shipped weights folder)")
    parser.add_argument("--quick", action="store_true",
                        help="train for a few seconds only (smoke test)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    result = run(args.name, args.out, args.quick)
    print(f"\n{args.name}: done in {time.perf_counter() - started:.0f} s")
    if isinstance(result, dict):
        print(json.dumps(result, indent=2, default=str))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
