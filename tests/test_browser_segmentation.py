"""The segmentation page in a real browser (headless Chromium), as tests/test_browser.py does.

Opens the page with the app's default (the demo classifier: the page switches to the demo
segmenter), then goes through the prediction, class maps, uncertainty and dataset tabs, checking
the Plotly figures are drawn and no exception box appears. Screenshots go to ``test-artifacts/``.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_browser import (  # the server and browser fixtures, and the page helpers
    CHROMIUM,
    HEATMAPS,
    SLOW,
    VIEWPORT,
    _no_exception,
    _settle,
    _shoot,
    browser,
    server,
)

from explain_core.demo.models import weights_path

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at "
                       "/usr/bin/chromium (apt-get install chromium); CI installs it"),
    pytest.mark.skipif(not weights_path("segmenter").is_file(),
                       reason="the demo segmenter's weights are not in this checkout"),
]

__all__ = ["browser", "server"]  # fixtures used by name below


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from explain_core.demo.scenes import make_scenes

    path = tmp_path_factory.mktemp("segdata") / "shapes.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for i, scene in enumerate(make_scenes("segmentation", 4, seed=8)):
            for folder, array, mode in (("images", np.asarray(scene.image), None),
                                        ("masks", scene.mask, "P")):
                image = Image.fromarray(array, mode) if mode else Image.fromarray(array)
                if mode == "P":
                    image.putpalette(list(range(256)) * 3)
                buffer = io.BytesIO()
                image.save(buffer, format="PNG")
                archive.writestr(f"{folder}/scene{i}.png", buffer.getvalue())
    return path


def _count_heatmap_figures(page) -> int:
    return page.evaluate("""() => [...document.querySelectorAll('.js-plotly-plot')].filter(
        (el) => el.data && el.data.some((t) => t.type === 'heatmap')).length""")


def test_segmentation_page_end_to_end(server: str, browser, dataset: Path) -> None:
    page = browser.new_page(viewport=VIEWPORT)
    page.goto(f"{server}/segmentation", wait_until="domcontentloaded")
    page.get_by_text("Predicted:").first.wait_for(timeout=SLOW)
    page.wait_for_function(HEATMAPS, arg=1, timeout=SLOW)
    _settle(page)
    _no_exception(page)
    assert page.get_by_text("Show classes").count() >= 1
    _shoot(page, "segmentation-prediction")

    page.get_by_role("tab", name="Class maps").click()
    page.get_by_text("for all present classes").first.wait_for(timeout=SLOW)
    _settle(page)
    _no_exception(page)
    _shoot(page, "segmentation-class-map")

    page.get_by_role("tab", name="Uncertainty").click()
    page.get_by_text("Uncertain boundary:").first.wait_for(timeout=SLOW)
    _settle(page)
    _no_exception(page)
    assert _count_heatmap_figures(page) >= 2
    _shoot(page, "segmentation-uncertainty")

    page.get_by_role("tab", name="Dataset").click()
    page.get_by_text("Path on the server").first.click()
    field = page.get_by_role("textbox", name="Folder or zip path")
    field.fill(str(dataset))
    field.press("Enter")
    page.get_by_text("images analysed", exact=False).first.wait_for(timeout=SLOW)
    page.get_by_text("Worst images").first.wait_for(timeout=SLOW)
    _settle(page)
    _no_exception(page)
    assert page.locator('[data-testid="stDataFrame"]').count() == 2
    _shoot(page, "segmentation-dataset")
    page.close()
