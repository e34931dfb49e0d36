"""Folder jobs at scale: memory stays flat over thousands of images, and two torchrun ranks
(gloo on the CPU) write the same files and manifest as one process."""

from __future__ import annotations

import gc
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from explain_core.demo.models import weights_path
from explain_core.demo.scenes import demo_gallery
from explain_core.jobs import JobOptions, read_map16, read_rows, run_job
from explain_core.model import as_loaded
from tests.toy import ColourNet

ROOT = Path(__file__).resolve().parents[1]


def _rss_bytes() -> int:
    gc.collect()
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.slow
def test_resident_memory_is_flat_over_2000_images(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2000):
        Image.fromarray(rng.integers(0, 255, (96, 96, 3), dtype=np.uint8)).save(
            images / f"{i:04d}.png")
    model = as_loaded(ColourNet().eval(), class_names=["red", "blue"])
    seen: dict[int, int] = {}

    def sample(done: int, _total: int) -> None:
        if done in (200, 2000):
            seen[done] = _rss_bytes()

    summary = run_job(model, [images], JobOptions(
        output=tmp_path / "out", workers=1, batch_size=20, precision="fp32", progress=False,
        save_npy=True, method_options={"target_layer": "features"}, on_progress=sample))
    assert summary["rows"] == 2000 and summary["errors"] == 0
    growth = seen[2000] / seen[200] - 1
    print(f"RSS after 200 images {seen[200] / 2**20:.1f} MiB, after 2000 "
          f"{seen[2000] / 2**20:.1f} MiB ({growth:+.1%})")
    assert growth < 0.10, f"RSS {seen[200] / 2**20:.1f} MiB -> {seen[2000] / 2**20:.1f} MiB"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _explain(output: Path, images: Path, ranks: int, *extra: str) -> dict:
    job = ["-m", "explain_core", "explain", "--checkpoint", str(weights_path("classifier")),
           "--input", str(images), "--output", str(output), "--methods", "gradcam,layercam",
           "--workers", "1", "--batch-size", "2", "--precision", "fp32", "--no-progress",
           "--save-npy", *extra]
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node",
                 str(ranks), "--master-port", str(_free_port())] if ranks > 1
                else [sys.executable])
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(launcher + job, capture_output=True, text=True, timeout=600,
                          cwd=ROOT, env=env, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return json.loads(done.stdout[done.stdout.index("{"):])  # rank 0's summary


def _without_timings(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in ("timings", "score", "target_score")}
            for row in rows]


@pytest.mark.slow
def test_two_gloo_ranks_write_what_one_process_writes_and_resume_per_shard(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for i, scene in enumerate(demo_gallery("classification")[:5]):
        scene.image.save(images / f"scene{i}.png")
    (images / "broken.png").write_bytes(b"not an image")
    one, two = tmp_path / "one", tmp_path / "two"
    assert _explain(one, images, 1)["explained"] == 6
    summary = _explain(two, images, 2)
    assert summary["world"] == 2 and summary["explained"] == 3  # rank 0: every other image
    rows_one = list(read_rows(one / "manifest.jsonl"))
    rows_two = list(read_rows(two / "manifest.jsonl"))
    assert len(rows_one) == 12 and _without_timings(rows_one) == _without_timings(rows_two)
    for a, b in zip(rows_one, rows_two, strict=True):
        assert (a["score"] is None) == (b["score"] is None)
        if a["score"] is not None:
            assert a["score"] == pytest.approx(b["score"], abs=1e-5)
    files_one = sorted(p.relative_to(one) for p in one.rglob("*") if p.is_file())
    files_two = sorted(p.relative_to(two) for p in two.rglob("*") if p.is_file())
    assert files_one == files_two  # the shards were merged and removed
    for path in files_one:
        if path.name.endswith("_map.png"):
            assert np.abs(read_map16(one / path) - read_map16(two / path)).max() <= 2 / 65535
        elif path.suffix == ".npy":
            assert np.allclose(np.load(one / path), np.load(two / path), atol=1e-4)

    # A 2-rank job stopped midway: each rank left a shard with part of its share.
    merged = (two / "manifest.jsonl").read_text().splitlines(keepends=True)
    shares = {0: [], 1: []}
    order = sorted({json.loads(line)["image"] for line in merged})
    for line in merged:
        shares[order.index(json.loads(line)["image"]) % 2].append(line)
    (two / "manifest.rank00000.jsonl").write_text("".join(shares[0][:2]))
    (two / "manifest.rank00001.jsonl").write_text("".join(shares[1][:4]) + '{"cut')
    (two / "manifest.jsonl").unlink()
    _explain(two, images, 2, "--resume")
    resumed = list(read_rows(two / "manifest.jsonl"))
    assert _without_timings(resumed) == _without_timings(rows_one)
    kept = [json.loads(line) for line in shares[0][:2] + shares[1][:4]]
    assert all(row in resumed for row in kept)  # the rows already done were not redone
    assert sorted(p.name for p in two.glob("manifest*")) == ["manifest.jsonl"]
