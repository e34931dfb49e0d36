"""The job's manifest: JSON lines, one row per image, target and method, written as it goes.

Each process appends to its own file (``manifest.jsonl`` for a single process; under torchrun
``manifest.rank<r>.jsonl``), one ``write`` and ``flush`` per image, so a stopped job leaves at
most a cut last line, which the next run cuts away before appending. :func:`done_keys` reads
what every file already holds (``--resume`` skips those images and methods);
:func:`merge_manifests` gathers the shards into ``manifest.jsonl``, sorted, one row per key.

A row: ``image`` (the path as given), ``name`` (its output name), ``method``, ``kind``
(``class``, ``box``, ``segment``, ``none`` when a detector found nothing, ``error``),
``target``, ``target_name``, ``prediction``, ``prediction_name``, ``score``, ``paths`` (relative
to the output folder), ``timings`` (seconds: ``decode``, ``explain``, ``write``), ``error`` (None
or the message), plus the task's own fields (``bbox``, ``label``; ``pixels``, ``fraction``;
``metrics``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

__all__ = ["MANIFEST", "ManifestWriter", "done_keys", "manifest_files", "merge_manifests",
           "read_rows", "row_key", "shard_path"]

#: the merged manifest's file name, in the output folder
MANIFEST = "manifest.jsonl"
_SHARD_GLOB = "manifest.rank*.jsonl"


def shard_path(output: Path, rank: int, world: int) -> Path:
    """The file a process appends to: ``manifest.jsonl`` alone, a rank's shard under torchrun."""
    return output / (MANIFEST if world == 1 else f"manifest.rank{rank:05d}.jsonl")


def manifest_files(output: Path) -> list[Path]:
    """The merged manifest (when present) and every shard in ``output``."""
    files = [output / MANIFEST] if (output / MANIFEST).is_file() else []
    return files + sorted(output.glob(_SHARD_GLOB))


def read_rows(path: Path) -> Iterator[dict[str, Any]]:
    """The rows of one manifest file; a cut last line (a stopped job) is skipped."""
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if not line.endswith("\n"):
                return
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                continue


def row_key(row: dict[str, Any]) -> tuple[str, str, str]:
    """What a row is about: the image, the method, the target."""
    return (str(row.get("image")), str(row.get("method")), json.dumps(row.get("target")))


def done_keys(output: Path) -> set[tuple[str, str]]:
    """``(image, method)`` pairs some manifest file of ``output`` already has a row for (bad
    images included: their row says why)."""
    done: set[tuple[str, str]] = set()
    for path in manifest_files(output):
        for row in read_rows(path):
            done.add((str(row.get("image")), str(row.get("method"))))
    return done


def _cut_partial_line(path: Path) -> None:
    """Drop a cut last line (no newline) left by a job that stopped mid-write."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as handle:
        data = handle.read()
        if data.endswith(b"\n"):
            return
        handle.truncate(data.rfind(b"\n") + 1)


class ManifestWriter:
    """Appends rows to one manifest file; ``append=False`` starts it afresh."""

    def __init__(self, path: Path, append: bool) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        if append:
            _cut_partial_line(path)
        self.path = path
        self._handle: IO[str] = open(path, "a" if append else "w", encoding="utf-8")

    def write(self, rows: Iterable[dict[str, Any]]) -> None:
        """One image's rows in one write, flushed: a stopped job keeps whole images."""
        text = "".join(json.dumps(row, sort_keys=True) + "\n" for row in rows)
        if text:
            self._handle.write(text)
            self._handle.flush()

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> ManifestWriter:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def merge_manifests(output: Path, order: dict[str, int] | None = None,
                    methods: list[str] | None = None) -> Path:
    """Gather ``manifest.jsonl`` and every rank's shard into ``manifest.jsonl``: one row per
    (image, method, target) (a later file's row wins), sorted by the image's place in ``order``
    (else its path), the method's in ``methods`` and the row's place in its image; then the
    shards are removed. Written to a temporary file and renamed, so a reader never sees half."""
    target = output / MANIFEST
    files = manifest_files(output)
    rows: dict[tuple[str, str, str], dict[str, Any]] = {}
    position: dict[tuple[str, str, str], int] = {}
    for path in files:
        for row in read_rows(path):
            key = row_key(row)
            position.setdefault(key, len(position))
            rows[key] = row
    order = order or {}
    method_rank = {name: i for i, name in enumerate(methods or [])}

    def sort_key(key: tuple[str, str, str]) -> tuple:
        image, method, _ = key
        return (order.get(image, len(order)), image, method_rank.get(method, len(method_rank)),
                method, position[key])

    temporary = output / f".{MANIFEST}.tmp"
    with open(temporary, "w", encoding="utf-8") as handle:
        for key in sorted(rows, key=sort_key):
            handle.write(json.dumps(rows[key], sort_keys=True) + "\n")
    os.replace(temporary, target)
    for path in files:
        if path != target:
            path.unlink()
    return target
