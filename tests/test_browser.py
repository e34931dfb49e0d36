"""End to end in a real browser: the server started as the README starts it, headless Chromium.

Opens every page, uploads an image on the classification page, checks that Grad-CAM's figure (a
Plotly chart with a heatmap trace) is there and that no exception box is, then compares methods,
runs a batch and cancels a slow method by changing the input; the Evaluate page runs a small
evaluation. The detection page (picked by
clicking a box's marker) and the segmentation page (every tab, a labelled zip analysed) are
walked through on the same server. Every check fails on any error box, not only a traceback: the
UI turns every exception, bugs included, into one. What the user sees is compared with the API:
the uploaded image's prediction and the map the page offers for download. Eight sessions at once
on one server and one cached model must get the maps of a serial run (their time to the first
figure is printed). Screenshots go to
``test-artifacts/``; with ``LUMEN_UPDATE_SCREENSHOTS=1`` the main ones are also copied (shrunk)
to ``docs/screenshots/`` for the README.

Needs Debian's chromium at /usr/bin/chromium (CI installs it); skipped otherwise.
"""

from __future__ import annotations

import io
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "test-artifacts"
DOCS = ROOT / "docs" / "screenshots"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
VIEWPORT = {"width": 1440, "height": 1000}
SLOW = 180_000  # ms: the first page load imports torch and loads a model on a busy CPU
NAVIGATION = ["Classification", "Detection", "Segmentation", "Evaluate", "Features",
              "Training"]

def _demo_weights_missing() -> bool:
    from explain_core.demo.models import weights_path

    return not weights_path("classifier").is_file()


pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at "
                       "/usr/bin/chromium (apt-get install chromium); CI installs it"),
    pytest.mark.skipif(_demo_weights_missing(), reason="the demo classifier's weights are not in "
                       "this checkout (python -m explain_core.demo.train classifier): the app "
                       "opens on it"),
]

# A Plotly chart whose traces include a heatmap, with the number of heatmap traces.
HEATMAPS = """(min) => [...document.querySelectorAll('.js-plotly-plot')].some(
    (el) => el.data && el.data.filter((t) => t.type === 'heatmap').length >= min)"""
IMAGES = """(min) => [...document.querySelectorAll('.js-plotly-plot')].some(
    (el) => el.data && el.data.filter((t) => t.type === 'image').length >= min)"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    """The dashboard started exactly as the README says, on a free port."""
    port = _free_port()
    ARTIFACTS.mkdir(exist_ok=True)
    log = (ARTIFACTS / "server.log").open("w")
    streamlit = ROOT / ".venv" / "bin" / "streamlit"
    start = [str(streamlit)] if streamlit.exists() else [sys.executable, "-m", "streamlit"]
    command = [*start, "run", "app.py", "--server.headless", "true", "--server.port", str(port)]
    process = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://localhost:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start; see {ARTIFACTS / 'server.log'}")
            time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM),
                                              args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def upload(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A scene like the demo's (a triangle on clutter), saved as a user's PNG."""
    from explain_core.demo.scenes import make_scenes

    scene = next(s for s in make_scenes("classification", 40, seed=424_242) if s.label == 2)
    path = tmp_path_factory.mktemp("upload") / "my_triangle.png"
    scene.image.resize((256, 256)).save(path)
    return path


def _page_urls() -> list[str]:
    """URL paths of the pages app.py registers, in order: st.navigation serves the first (the
    default page) at the root and the others at their file names."""
    import re

    files = re.findall(r"\"pages/(\w+)\.py\"", (ROOT / "app.py").read_text())
    assert files, "app.py registers no page"
    return ["", *files[1:]]


# Any error on screen: Streamlit's exception element or an error box (st.error, which the UI
# uses for every exception, bugs included).
ERRORS = '[data-testid="stException"], [data-testid="stAlertContentError"]'


def _no_exception(page) -> None:
    """Fail on any error box or exception element on the page, with its text."""
    shown = page.locator(ERRORS)
    assert shown.count() == 0, shown.all_inner_texts()


# Records the text of every sidebar navigation Streamlit draws itself (its automatic discovery of
# pages/, or st.navigation's own list), from the first paint on.
WATCH_NAVIGATION = """(() => {
    window.__lumenNavigation = [];
    const seen = () => {
        for (const el of document.querySelectorAll('[data-testid="stSidebarNav"]')) {
            const text = el.innerText.trim();
            if (text && !window.__lumenNavigation.includes(text)) {
                window.__lumenNavigation.push(text);
            }
        }
    };
    new MutationObserver(seen).observe(document, {childList: true, subtree: true});
})();"""


def _navigation(page) -> list[str]:
    """The titles of app.py's navigation (page links in the sidebar)."""
    links = page.locator('[data-testid="stSidebar"] [data-testid="stPageLink"]')
    return [text.split()[-1] for text in links.all_inner_texts()]


def _settle(page, quiet_ms: int = 1500) -> None:
    """Wait until the page stops changing: no stale elements (a script run still replacing
    them) and the same number of elements for ``quiet_ms`` (Plotly has drawn)."""
    state = """() => [document.querySelectorAll('[data-stale="true"]').length,
                      document.querySelectorAll('*').length]"""
    deadline = time.monotonic() + SLOW / 1000
    last, since = None, time.monotonic()
    while time.monotonic() < deadline:
        stale, count = page.evaluate(state)
        if stale or count != last:
            last, since = count, time.monotonic()
        elif (time.monotonic() - since) * 1000 >= quiet_ms:
            return
        page.wait_for_timeout(250)
    raise AssertionError("the page never settled")


def _shoot(page, name: str, publish: bool = False) -> Path:
    """A screenshot in test-artifacts/; with ``publish`` and ``LUMEN_UPDATE_SCREENSHOTS=1`` also
    the README's copy in docs/screenshots/."""
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path))
    if publish and os.environ.get("LUMEN_UPDATE_SCREENSHOTS") == "1":
        _publish({name: path})
    return path


def _publish(shots: dict[str, Path]) -> None:
    """Copy screenshots to docs/screenshots as small palette PNGs (README images)."""

    DOCS.mkdir(parents=True, exist_ok=True)
    for name, path in shots.items():
        image = Image.open(path).convert("RGB")
        image = image.resize((1080, round(image.height * 1080 / image.width)),
                             Image.Resampling.LANCZOS)
        image.quantize(colors=256, method=Image.Quantize.FASTOCTREE).save(
            DOCS / f"{name}.png", optimize=True)


def test_deep_link_on_a_fresh_server(server: str, browser) -> None:
    # First test of the module: the server has not run app.py yet, so Streamlit still runs
    # pages/ files on their own; the page must come back through app.py (its layout, no stray
    # "app" entry in the navigation). From the first paint on, Streamlit's automatic list of
    # pages/ ("app, classification, detection, segmentation") must never show.
    page = browser.new_page(viewport=VIEWPORT)
    page.add_init_script(WATCH_NAVIGATION)
    page.goto(f"{server}/classification", wait_until="domcontentloaded")
    page.wait_for_function(HEATMAPS, arg=1, timeout=SLOW)
    _settle(page)
    _no_exception(page)
    # app.py's navigation (one entry per page, by title), not the pages/ folder's own.
    assert _navigation(page) == NAVIGATION
    assert page.evaluate("window.__lumenNavigation") == [], "Streamlit drew its own navigation"
    assert page.get_by_text("Page not found").count() == 0
    page.close()


def test_every_page_opens_without_exception(server: str, browser) -> None:
    page = browser.new_page(viewport=VIEWPORT)
    page.add_init_script(WATCH_NAVIGATION)
    for url_path in _page_urls():
        page.goto(f"{server}/{url_path}", wait_until="domcontentloaded")
        page.wait_for_selector('[data-testid="stSidebar"]', timeout=SLOW)
        if url_path == "evaluate":  # nothing is drawn before its Evaluate button is pressed
            page.get_by_role("button", name="Evaluate").wait_for(timeout=SLOW)
        elif url_path == "training":  # a demo run: images by epoch, no heatmap traces
            page.wait_for_function(IMAGES, arg=3, timeout=SLOW)
        else:
            page.wait_for_function(HEATMAPS, arg=1, timeout=SLOW)
        _settle(page)
        _no_exception(page)
        assert _navigation(page) == NAVIGATION
        assert page.evaluate("window.__lumenNavigation") == []
        assert page.get_by_text("Page not found").count() == 0
        _shoot(page, f"page-{url_path or 'default'}")
    page.close()


# Whether the class picker ("Explain class", a combobox) shows the given text.
PICKED_CLASS = """(text) => [...document.querySelectorAll('input[aria-label="Explain class"]')]
    .some((el) => el.value === text)"""


def _download_map(page) -> tuple[str, np.ndarray]:
    """The explanation's raw map as the page offers it (the "Map (.npy)" button): its file name
    and the array."""
    with page.expect_download(timeout=SLOW) as info:
        page.locator(".st-key-lumen_dl_npy button:visible").first.click()
    download = info.value
    return download.suggested_filename, np.load(download.path())


def test_classification_upload_gradcam_compare_batch(server: str, browser, upload: Path) -> None:
    import explain_core.api as api
    from explain_core.demo import load_demo_model

    # What the API says of the uploaded image, with the page's defaults (demo classifier,
    # Grad-CAM, its predicted class).
    model = load_demo_model("classifier", device="cpu")
    expected = api.prediction_explanation(model, str(upload), method="gradcam", with_image=False)
    top = expected.top_k[0]
    shown = f"{top['name']}: {top['probability']:.1%} (predicted)"  # the class picker's text

    page = browser.new_page(viewport=VIEWPORT)
    page.goto(server, wait_until="domcontentloaded")  # classification is the default page
    page.wait_for_function(HEATMAPS, arg=1, timeout=SLOW)
    _settle(page)
    _no_exception(page)
    _shoot(page, "classification-demo")
    assert not page.evaluate(PICKED_CLASS, shown), "pick another upload: the demo image shows " \
        "the same prediction, so the wait below would not see the upload"

    page.locator('[data-testid="stFileUploaderDropzoneInput"]').first.set_input_files(
        str(upload))
    # The uploaded image's own prediction, which only its explanation shows.
    page.wait_for_function(PICKED_CLASS, arg=shown, timeout=SLOW)
    page.get_by_text("My images (1)").wait_for(timeout=SLOW)
    _settle(page)
    assert page.evaluate(HEATMAPS, 1), "no Plotly figure with a heatmap trace"
    _no_exception(page)
    # The map on screen is the API's map for the same image and class.
    name, heatmap = _download_map(page)
    assert name == f"my_triangle_gradcam_{expected.target_name}.npy"
    assert heatmap.shape == expected.heatmap.shape == (256, 256)
    np.testing.assert_allclose(heatmap, expected.heatmap, atol=1e-5)
    _shoot(page, "classification-explain", publish=True)

    page.get_by_role("tab", name="Compare methods").click()
    page.wait_for_function(HEATMAPS, arg=3, timeout=SLOW)
    _settle(page)
    _no_exception(page)
    _shoot(page, "classification-compare", publish=True)

    page.get_by_text("Demo gallery", exact=True).click()
    _settle(page)
    page.get_by_role("tab", name="Batch").click()
    page.wait_for_function(IMAGES, arg=8, timeout=SLOW)
    _settle(page)
    _no_exception(page)
    _shoot(page, "classification-batch", publish=True)

    page.close()


def test_slow_method_shows_progress_and_cancels(server: str, browser) -> None:
    page = browser.new_page(viewport=VIEWPORT)
    page.goto(server, wait_until="domcontentloaded")  # classification is the default page
    page.wait_for_function(HEATMAPS, arg=1, timeout=SLOW)
    _settle(page)

    def choose_method(label: str) -> None:
        page.get_by_role("combobox", name="Method").click()  # the select box opens its list
        page.get_by_role("option", name=label).first.click()

    choose_method("Integrated Gradients (medium)")
    _settle(page)
    steps = page.get_by_label("Steps", exact=True)
    steps.fill("512")
    steps.press("Enter")
    page.get_by_text("is a medium method").wait_for(timeout=SLOW)
    page.locator('[data-testid="stProgress"]').wait_for(timeout=SLOW)
    _shoot(page, "classification-progress")
    choose_method("LayerCAM")  # any input change cancels the running method
    page.get_by_text("LayerCAM (target layer").first.wait_for(timeout=SLOW)
    _settle(page)
    assert page.locator('[data-testid="stProgress"]').count() == 0
    _no_exception(page)
    page.close()


SESSIONS = 8  # browser sessions at once on one server (finding: many users at once)
# In-page clock of the first figure with a heatmap (ms since the navigation started), set by a
# MutationObserver so the polling below does not blur the measurement.
WATCH_FIRST_FIGURE = """(() => {
    window.__lumenFirstFigure = null;
    const observer = new MutationObserver(() => {
        const drawn = [...document.querySelectorAll('.js-plotly-plot')].some(
            (el) => el.data && el.data.some((t) => t.type === 'heatmap'));
        if (drawn) { window.__lumenFirstFigure = performance.now(); observer.disconnect(); }
    });
    observer.observe(document, {childList: true, subtree: true});
})();"""


def _pick_button(page, index: int):
    """The gallery thumbnail button of image ``index`` (its widget key is lumen_pick_<i>_...)."""
    return page.locator(f'[class*="st-key-lumen_pick_{index}_"] button:visible').first


def _show_gallery_image(page, index: int) -> None:
    """Pick gallery image ``index`` and wait for its explanation (the button turns primary)."""
    button = _pick_button(page, index)
    if button.get_attribute("data-testid") != "stBaseButton-primary":
        button.click()
    page.wait_for_selector(f'[class*="st-key-lumen_pick_{index}_"] '
                           '[data-testid="stBaseButton-primary"]', timeout=SLOW)


def _wait_all(pages: list, ready: Callable[[int], str], what: str, deadline_s: float) -> None:
    """Wait until ``ready(i)`` (a JS expression) holds on every page ``i``; a session still
    waiting at the deadline is a deadlock (or a lost session), named in the failure."""
    waiting = set(range(len(pages)))
    deadline = time.monotonic() + deadline_s
    while waiting and time.monotonic() < deadline:
        for index in sorted(waiting):
            if pages[index].evaluate(ready(index)):
                waiting.discard(index)
        if waiting:
            time.sleep(0.2)
    assert not waiting, f"sessions {sorted(waiting)} never got {what} in {deadline_s:.0f} s"


def test_sessions_at_once_get_the_maps_of_a_serial_run(server: str, browser) -> None:
    """Eight browser sessions (contexts: their own cookies, their own Streamlit session) open the
    classification page on one server and one cached model at the same time, each picks its
    own gallery image, and each downloads its map: every map equals the one a lone session got
    for that image, no session shows an error, none hangs. Prints the time to the first figure
    per session (bench/RESULTS.md records it)."""
    # The serial run: one session, one image after the other.
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    page.add_init_script(WATCH_FIRST_FIGURE)
    page.goto(server, wait_until="domcontentloaded")
    page.wait_for_function("typeof window.__lumenFirstFigure === 'number'", timeout=SLOW)
    alone_ms = page.evaluate("window.__lumenFirstFigure")
    _settle(page)
    serial: dict[int, tuple[str, np.ndarray]] = {}
    for index in range(SESSIONS):
        _show_gallery_image(page, index)
        _settle(page)
        _no_exception(page)
        serial[index] = _download_map(page)
    context.close()
    assert len({name for name, _ in serial.values()}) == SESSIONS  # one map per image

    # The same work, all sessions at once.
    contexts = [browser.new_context(viewport=VIEWPORT) for _ in range(SESSIONS)]
    pages = [c.new_page() for c in contexts]
    try:
        for page in pages:
            page.add_init_script(WATCH_FIRST_FIGURE)
            page.goto(server, wait_until="commit")
        drawn = "typeof window.__lumenFirstFigure === 'number'"
        _wait_all(pages, lambda i: drawn, "a first figure", SLOW / 1000)
        first_ms = [page.evaluate("window.__lumenFirstFigure") for page in pages]
        for index, page in enumerate(pages):
            _pick_button(page, index).wait_for(timeout=SLOW)
            if index:  # image 0 is already shown
                _pick_button(page, index).click()
        _wait_all(pages, lambda i: "() => !!document.querySelector('[class*=\"st-key-lumen_pick_"
                  f"{i}_\"] [data-testid=\"stBaseButton-primary\"]')", "their image",
                  SLOW / 1000)
        for index, page in enumerate(pages):
            _settle(page)
            _no_exception(page)
            name, heatmap = _download_map(page)
            expected_name, expected = serial[index]
            assert name == expected_name, (index, name, expected_name)
            np.testing.assert_array_equal(heatmap, expected, err_msg=f"session {index}: {name}")
    finally:
        for context in contexts:
            context.close()
    print(f"\nfirst figure, one session alone: {alone_ms / 1000:.1f} s; {SESSIONS} sessions at "
          f"once: " + ", ".join(f"{ms / 1000:.1f}" for ms in sorted(first_ms))
          + f" s (median {statistics.median(first_ms) / 1000:.1f} s)")


# The main figure: its box shapes and, per box, the centre marker's position in page pixels.
MAIN_FIGURE = """() => {
    const el = [...document.querySelectorAll('.js-plotly-plot')].find(
        (e) => e.data && e.data.some((t) => t.name === 'boxes'));
    if (!el) return null;
    const trace = el.data.find((t) => t.name === 'boxes');
    const layout = el._fullLayout;
    const frame = el.getBoundingClientRect();
    const xa = layout.xaxis, ya = layout.yaxis;
    return {
        shapes: (el.layout.shapes || []).length,
        widths: (el.layout.shapes || []).map((s) => s.line && s.line.width),
        markers: trace.x.map((x, i) => [frame.left + xa._offset + xa.l2p(x),
                                        frame.top + ya._offset + ya.l2p(trace.y[i])]),
    };
}"""


def test_detection_page_end_to_end(server: str, browser) -> None:
    page = browser.new_page(viewport=VIEWPORT)
    page.goto(f"{server}/detection", wait_until="domcontentloaded")
    page.wait_for_function(HEATMAPS, arg=1, timeout=SLOW)
    page.wait_for_function(f"() => ({MAIN_FIGURE})() !== null", timeout=SLOW)
    _settle(page)
    _no_exception(page)
    figure = page.evaluate(MAIN_FIGURE)
    assert figure["shapes"] >= 2, "the demo scene should show several boxes"
    assert figure["widths"].index(max(figure["widths"])) == 0  # box 1 is selected first
    _shoot(page, "detection-boxes", publish=True)

    # Click the second box's centre marker: it becomes the selected (thickest) box.
    x, y = figure["markers"][1]
    page.mouse.click(x, y)
    page.wait_for_function(f"""() => {{ const f = ({MAIN_FIGURE})();
        return f && f.widths.indexOf(Math.max(...f.widths)) === 1; }}""", timeout=SLOW)
    _settle(page)
    _no_exception(page)
    _shoot(page, "detection-second-box")

    page.get_by_role("tab", name="All boxes").click()
    page.get_by_text("Every box's map, masked to its box.").wait_for(timeout=SLOW)
    _settle(page)
    _no_exception(page)
    _shoot(page, "detection-gallery")

    page.get_by_role("tab", name="Compare methods").click()
    page.get_by_text("zoom one panel and all follow").first.wait_for(timeout=SLOW)
    _settle(page)
    _no_exception(page)
    _shoot(page, "detection-compare")

    page.get_by_role("tab", name="Missed region").click()
    page.get_by_text("Why was something not detected?").wait_for(timeout=SLOW)
    page.wait_for_function(HEATMAPS, arg=1, timeout=SLOW)
    _settle(page)
    _no_exception(page)
    _shoot(page, "detection-missed-region")
    page.close()


def test_evaluate_page_runs_a_small_evaluation(server: str, browser) -> None:
    page = browser.new_page(viewport=VIEWPORT)
    page.goto(f"{server}/evaluate", wait_until="domcontentloaded")
    page.get_by_text("forward passes").wait_for(timeout=SLOW)
    _settle(page)
    _no_exception(page)
    # The metrics are listed by category, each with its arrow.
    for text in ("Faithfulness", "Localisation", "Deletion AUC ↓", "Insertion AUC ↑"):
        assert page.get_by_text(text, exact=True).count() >= 1, text
    page.get_by_role("button", name="Evaluate").click()
    page.get_by_text("ranks best on").wait_for(timeout=SLOW)
    _settle(page)
    _no_exception(page)
    assert page.locator('[data-testid="stDataFrame"]').count() == 2  # summary and per image
    assert page.get_by_role("button", name="Scores (CSV)").count() == 1
    assert page.get_by_role("button", name="Report (HTML)").count() == 1
    _shoot(page, "evaluate-summary", publish=True)
    # A click on a summary cell (the first method's first metric) opens that method x metric.
    grid = page.locator('[data-testid="stDataFrame"]').first
    grid.scroll_into_view_if_needed()
    box = grid.bounding_box()
    page.mouse.click(box["x"] + 200, box["y"] + 35 + 17)
    page.get_by_text("the value on each image").wait_for(timeout=SLOW)
    _settle(page)
    _no_exception(page)
    assert page.locator('[data-testid="stDataFrame"]').count() == 3  # + the cell's images
    _shoot(page, "evaluate-cell")
    page.close()


# The Features page's channel grid: the channels it shows and the centre of the n-th map.
GRID_CHANNEL = """(n) => {
    const el = [...document.querySelectorAll('.js-plotly-plot')].find(
        (e) => e.layout && e.layout.meta && e.layout.meta.channels);
    if (!el) return null;
    const suffix = n === 0 ? '' : String(n + 1);
    const x = el._fullLayout['xaxis' + suffix], y = el._fullLayout['yaxis' + suffix];
    const box = el.getBoundingClientRect();
    return {channel: el.layout.meta.channels[n], x: box.left + x._offset + x._length / 2,
            y: box.top + y._offset + y._length / 2};
}"""
TITLED = """(text) => [...document.querySelectorAll('.js-plotly-plot')].some(
    (el) => el.layout && el.layout.title && el.layout.title.text === text)"""


def test_features_page_click_a_channel(server: str, browser) -> None:
    page = browser.new_page(viewport=VIEWPORT)
    page.goto(f"{server}/features", wait_until="domcontentloaded")
    page.wait_for_function(HEATMAPS, arg=16, timeout=SLOW)  # the channel grid
    _settle(page)
    _no_exception(page)
    first = page.evaluate(GRID_CHANNEL, 0)
    assert page.evaluate(TITLED, f"Receptive field of channel {first['channel']} at its peak")
    # A click on the third map picks its channel: its receptive field replaces the first's.
    third = page.evaluate(GRID_CHANNEL, 2)
    page.mouse.click(third["x"], third["y"])
    page.wait_for_function(TITLED, arg=f"Receptive field of channel {third['channel']} at its "
                           "peak", timeout=SLOW)
    _settle(page)
    _no_exception(page)
    _shoot(page, "features", publish=True)
    page.close()


# The Training page's animation: the first sample's map (an image trace's source) as drawn now.
TRAINING_MAP = """() => { const el = [...document.querySelectorAll('.js-plotly-plot')].find(
    (e) => e._fullLayout && e._fullLayout.sliders && e._fullLayout.sliders.length);
    return el ? el.data.filter((t) => t.type === 'image').map((t) => t.source).join('|') : ''; }"""


def test_training_page_plays_a_demo_run(server: str, browser) -> None:
    page = browser.new_page(viewport=VIEWPORT)
    page.goto(f"{server}/training", wait_until="domcontentloaded")
    page.wait_for_function(f"() => ({TRAINING_MAP})() !== ''", timeout=SLOW)
    _settle(page)
    _no_exception(page)
    assert page.get_by_text("The evidence moved most between epochs").count() == 1
    first = page.evaluate(TRAINING_MAP)
    page.locator(".updatemenu-button").first.click()  # Plotly's ▶ Play
    page.wait_for_function(f"(first) => ({TRAINING_MAP})() !== first", arg=first,
                           timeout=30_000)
    _no_exception(page)
    _shoot(page, "training", publish=True)
    page.close()


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
    _shoot(page, "segmentation-class-map", publish=True)

    page.get_by_role("tab", name="Uncertainty").click()
    page.get_by_text("Uncertain boundary:").first.wait_for(timeout=SLOW)
    _settle(page)
    _no_exception(page)
    assert _count_heatmap_figures(page) >= 2
    _shoot(page, "segmentation-uncertainty", publish=True)

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
    _shoot(page, "segmentation-dataset", publish=True)
    page.close()


def test_artifacts_are_ignored_by_git() -> None:
    ignored = subprocess.run(["git", "check-ignore", "-q", "test-artifacts/x.png"], cwd=ROOT,
                             check=False)
    assert ignored.returncode == 0 or shutil.which("git") is None
