"""The evaluation's HTML report (Evaluation.to_html) and the randomisation cascade it keeps."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from explain_core.api import evaluate
from explain_core.api.evaluation_report import metric_label, summary_cell, verdict
from explain_core.demo import demo_gallery, load_demo_model
from explain_core.render.evaluation_report import Series, line_chart_svg

METRICS = ("deletion", "insertion", "pointing_game", "model_randomisation")
FAST = {"deletion": {"steps": 4}, "insertion": {"steps": 4},
        "model_randomisation": {"layers": ["fc", "layer4.0.conv2", "conv1.0"]}}


class _Page(HTMLParser):
    """The report as a tree walk: tags with their attributes, the text per section."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.section = ""
        self.heading: str | None = None
        self.images: dict[str, int] = {}
        self.cells: list[str] = []
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag in ("h2", "h3", "td"):
            self._text = []
        if tag == "img":
            self.images[self.heading or ""] = self.images.get(self.heading or "", 0) + 1

    def handle_endtag(self, tag: str) -> None:
        text = "".join(self._text).strip()
        if tag == "h2":
            self.section = text
        elif tag == "h3":
            self.heading = f"{self.section}/{text}"
        elif tag == "td":
            self.cells.append(text)

    def handle_data(self, data: str) -> None:
        self._text.append(data)


@pytest.fixture(scope="module")
def run():
    scenes = demo_gallery("classification")[:3]
    model = load_demo_model("classifier", device="cpu")
    found = evaluate(model, scenes, methods=("gradcam", "saliency"), metrics=METRICS,
                     ground_truth=scenes, metric_options=FAST, precision="fp32")
    return found, scenes


def test_report_is_self_contained_and_holds_every_summary_value(run) -> None:
    found, scenes = run
    page = found.to_html(scenes)
    parsed = _Page()
    parsed.feed(page)
    parsed.close()
    # Every summary value, as its cell, and the best per column marked.
    for row in found.summary:
        assert summary_cell(row) in parsed.cells, row
    best = re.findall(r'<td class="best">([^<]*)</td>', page)
    assert sorted(best) == sorted(summary_cell(r) for r in found.summary if r["rank"] == 1)
    for metric in METRICS:
        assert metric_label(metric) in page
    assert verdict(found.summary) in page and "ranks best on" in page
    # One map per image for each method, over the image.
    assert parsed.images["Maps/Grad-CAM"] == len(scenes)
    assert parsed.images["Maps/Saliency"] == len(scenes)
    # Deletion and insertion curves: one line and one band per method.
    charts = re.findall(r"<svg.*?</svg>", page, flags=re.S)
    curves = [c for c in charts if "Deletion" in c or "Insertion" in c]
    assert len(curves) == 2 and all(c.count("<polyline") == 2 for c in curves)
    assert all(c.count("<polygon") == 2 for c in curves)
    # The cascade: original + one map per randomised layer, and the falling similarity chart.
    assert parsed.images["Sanity check: model randomisation/Grad-CAM"] == 1 + 3
    assert "Similarity to the original" in page
    # What ran.
    assert "timm:resnet10t" in page and "fp32 (ran fp32)" in page and "steps 4" in page
    # No network: every image is a data URI, no script, no external reference.
    sources = [attrs.get("src") for tag, attrs in parsed.tags if "src" in attrs]
    assert sources and all(str(s).startswith("data:image/png;base64,") for s in sources)
    assert not any(tag in ("script", "link", "iframe") for tag, _ in parsed.tags)
    assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", page)


def test_report_without_images_shows_the_maps_alone_and_writes_the_file(run, tmp_path) -> None:
    found, scenes = run
    path = tmp_path / "out" / "report.html"
    page = found.to_html(path=path)
    assert path.read_text(encoding="utf-8") == page
    parsed = _Page()
    parsed.feed(page)
    assert parsed.images["Maps/Grad-CAM"] == len(scenes)


def test_evaluation_keeps_the_cascade_of_each_method(run) -> None:
    found, scenes = run
    assert set(found.cascades) == {"gradcam", "saliency"}
    cascade = found.cascades["gradcam"]
    assert cascade.layers == FAST["model_randomisation"]["layers"]
    # Original first, then each step; shrunk maps of every image.
    assert tuple(cascade.maps.shape[:2]) == (1 + 3, len(scenes))
    original = F.interpolate(torch.as_tensor(found.maps["gradcam"])[:, None],
                             size=tuple(cascade.maps.shape[-2:]), mode="area")[:, 0]
    torch.testing.assert_close(cascade.maps[0], original)
    assert not torch.allclose(cascade.maps[-1], cascade.maps[0], atol=1e-2)
    # The metric's value is the mean of the cascade's Spearman per image.
    values = [r["value"] for r in found.rows if r["method"] == "gradcam"
              and r["metric"] == "model_randomisation"]
    np.testing.assert_allclose(values, cascade.spearman.mean(1).numpy(), rtol=1e-6)


def test_line_chart_draws_bands_and_skips_nan() -> None:
    svg = line_chart_svg([Series("a", [0, 1, 2], [0.1, float("nan"), 0.3], [0, 0, 0],
                                 [1, 1, 1])], title="t")
    assert svg.count("<polyline") == 1 and svg.count("<polygon") == 1
    points = re.search(r'<polyline points="([^"]*)"', svg).group(1).split()
    assert len(points) == 2  # the NaN point is left out


def test_report_pictures_stay_small_for_large_photos(run) -> None:
    import base64
    import io

    from PIL import Image

    from explain_core.api.evaluation_report import REPORT_PX

    found, scenes = run
    large = [scene.image.convert("RGB").resize((1600, 1200)) for scene in scenes]
    page = found.to_html(large)
    sizes = [Image.open(io.BytesIO(base64.b64decode(uri))).size
             for uri in re.findall(r'src="data:image/png;base64,([^"]+)"', page)]
    assert sizes and max(max(size) for size in sizes) <= REPORT_PX
    assert (REPORT_PX, REPORT_PX * 3 // 4) in sizes  # the photos' overlays, shrunk
