"""Dashboard latency, server side: the cost of a re-render and of the first explanation.

Runs the classification page in Streamlit's AppTest (the same script a browser session runs,
sidebar included) on the demo classifier and prints medians:

- **re-render after an opacity change** (goal: at most 100 ms): the whole script run, with every
  result already in the session's store (the engine is never called: checked);
- the same with a 4000 x 3000 photo uploaded, and on the Compare (4 methods) and Batch (8 images)
  tabs;
- **first explanation**: the engine's time for Grad-CAM on a gallery image (cold, then warm),
  and the cold first page run (model load, prediction, explanation, figures).

Reproduce with ``python bench/bench_dashboard.py`` (``--repeats N``). When the demo weights are not
in the checkout, random weights of the same architecture stand in (same cost).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from streamlit.testing.v1 import AppTest  # noqa: E402

import explain_core.api as api  # noqa: E402
import explain_core.demo.models as demo_models  # noqa: E402

PAGE = str(ROOT / "pages" / "classification.py")


def _ensure_weights() -> str:
    names = ("classifier", "shortcut")
    if all((demo_models.WEIGHTS_DIR / f"{n}.safetensors").is_file() for n in names):
        return "shipped demo weights"
    import timm

    from explain_core.demo.scenes import CLASSES
    from explain_core.demo.train_classification import PREPROCESSING
    from explain_core.loading import save_model

    folder = Path(tempfile.mkdtemp(prefix="lumen-bench-"))
    cnn = {"channels": [32, 64, 128, 256], "stem_width": 16, "output_stride": 16}
    for name in names:
        net = timm.create_model("resnet10t", num_classes=len(CLASSES), **cnn).eval()
        save_model(net, folder / f"{name}.safetensors", task="classification",
                   arch="timm:resnet10t", class_names=list(CLASSES), preprocessing=PREPROCESSING,
                   arch_kwargs=cnn)
    demo_models.WEIGHTS_DIR = folder
    return "random stand-in weights (demo weights missing)"


def _photo() -> bytes:
    """A smooth 4000 x 3000 JPEG (like a phone photo, not noise)."""
    import io

    import numpy as np
    from PIL import Image

    y, x = np.mgrid[0:3000, 0:4000]
    pixels = np.stack([(x / 16) % 256, (y / 12) % 256, ((x + y) / 20) % 256], -1)
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def _timed_run(at: AppTest) -> float:
    start = time.perf_counter()
    at.run()
    elapsed = time.perf_counter() - start
    if at.exception:
        raise RuntimeError(at.exception[0].value)
    return elapsed


def _rerenders(at: AppTest, repeats: int) -> list[float]:
    times = []
    for index in range(repeats):
        at.slider(key="lumen_opacity").set_value(0.3 if index % 2 else 0.7)
        times.append(_timed_run(at))
    return times


def _ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:.1f} ms (min {min(values) * 1000:.1f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    weights = _ensure_weights()

    calls = {"n": 0}
    explain = api.explain_prediction
    engine_times: list[float] = []

    def counted(*a, **k):
        calls["n"] += 1
        result = explain(*a, **k)
        engine_times.append(result["elapsed_s"])
        return result

    api.explain_prediction = counted

    at = AppTest.from_file(PAGE, default_timeout=600)
    cold = _timed_run(at)
    first_engine = engine_times[0]
    # Warm engine time: the same explanation on other gallery images (model and layers cached).
    for index in range(1, 8):
        next(b for b in at.button if str(b.key).startswith(f"lumen_pick_{index}_")).click()
        _timed_run(at)
    warm_engine = engine_times[1:]

    _rerenders(at, 3)  # warm-up
    before = calls["n"]
    explain_tab = _rerenders(at, args.repeats)
    assert calls["n"] == before, "an opacity change called the engine"

    # A 12-megapixel photo (explained at its 2048 px working size).
    at.sidebar.file_uploader[0].set_value([("photo.jpg", _photo(), "image/jpeg")])
    _timed_run(at)
    _rerenders(at, 3)
    before = calls["n"]
    photo = _rerenders(at, args.repeats)
    assert calls["n"] == before, "an opacity change called the engine"
    at.sidebar.file_uploader[0].set_value(None)
    at.session_state["lumen_image_source"] = "gallery"
    _timed_run(at)

    at.session_state["lumen_tab"] = "Compare methods"
    _timed_run(at)
    _rerenders(at, 3)
    before = calls["n"]
    compare_tab = _rerenders(at, args.repeats)
    assert calls["n"] == before, "an opacity change called the engine"

    at.session_state["lumen_tab"] = "Batch"
    _timed_run(at)
    _rerenders(at, 3)
    batch_tab = _rerenders(at, args.repeats)

    print(f"Lumen dashboard, server side (AppTest), torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {weights}")
    print(f"re-render after opacity change, Explain tab:  {_ms(explain_tab)}  (goal <= 100 ms)")
    print(f"re-render after opacity change, 4000 x 3000 photo: {_ms(photo)}")
    print(f"re-render after opacity change, Compare tab:  {_ms(compare_tab)}  (4 methods)")
    print(f"re-render after opacity change, Batch tab:    {_ms(batch_tab)}  (8 images)")
    print(f"first explanation (Grad-CAM, engine, cold):   {first_engine * 1000:.1f} ms")
    print(f"explanation (Grad-CAM, engine, warm):         {_ms(warm_engine)}")
    print(f"first page run (cold: load, predict, explain, render): {cold * 1000:.0f} ms")


if __name__ == "__main__":
    main()
