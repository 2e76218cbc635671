"""notebooks/explore.ipynb in a real browser: JupyterLab 4, started here on localhost with a throw-away configuration,
driven through Debian's Chromium by Playwright for Python (no browser download).

The test opens a copy of the notebook with its outputs cleared, runs every cell, and checks that every cell ran, that
no cell wrote to stderr or raised, that the explorers' widgets rendered (controls and pictures), and that the browser
console logged no error. Then it moves the layer slider of the attention and the routing explorer with the keyboard,
as a learner would, and checks that the kernel redrew the picture. It saves screenshots of both explorers (into
$MINILLAMA4_SCREENSHOTS, e.g. docs/images for the README, else the test's temporary folder).

It needs Chromium at /usr/bin/chromium (`apt-get install chromium`; or $MINILLAMA4_CHROMIUM) and the `dev` extra
(jupyterlab, playwright). Where they are missing it is skipped with the reason, unless MINILLAMA4_REQUIRE_BROWSER=1
(set by .ci/run once it has installed Chromium), which turns the skip into a failure.
"""

import io
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "notebooks" / "explore.ipynb"
CHROMIUM = os.environ.get("MINILLAMA4_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
RUN_TIMEOUT_S = 300  # the whole notebook (about 40 s of CPU under the ci profile)
MAX_PNG_BYTES = 200_000  # README screenshots stay small

LAB_CONFIG = """
c.IdentityProvider.token = ""
c.ServerApp.password = ""
c.ServerApp.disable_check_xsrf = True
c.ServerApp.allow_root = True            # CI runs as root
c.ServerApp.open_browser = False
c.ServerApp.ip = "127.0.0.1"
c.ServerApp.root_dir = {root!r}
c.LabApp.expose_app_in_browser = True    # window.jupyterapp: run cells and read outputs through JupyterLab's own API
c.LabApp.news_url = None                 # no news pop-up over the screenshots
c.LabApp.check_for_updates_class = "jupyterlab.NeverCheckForUpdate"
"""

# JavaScript evaluated in the page (window.jupyterapp is exposed by the configuration above)
PANEL = "window.jupyterapp && window.jupyterapp.shell.currentWidget"
KERNEL_IDLE = f"""() => {{
    const w = {PANEL};
    const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
    return !!k && k.status === 'idle';
}}"""
RUN_STATE = f"""() => {{
    const w = {PANEL};
    const cells = w.content.widgets.filter(c => c.model.type === 'code');
    if (cells.some(c => c.model.outputs.toJSON().some(o => o.output_type === 'error'))) return 'error';
    const k = w.sessionContext.session.kernel;
    return cells.every(c => c.model.executionCount !== null) && k.status === 'idle' ? 'done' : false;
}}"""
CELLS = f"""() => {PANEL}.content.widgets.filter(c => c.model.type === 'code').map(c => ({{
    count: c.model.executionCount,
    outputs: c.model.outputs.toJSON().map(o => ({{type: o.output_type, name: o.name || null,
        text: String(o.text || (o.ename ? o.ename + ': ' + o.evalue : '')).slice(0, 800)}})),
}}))"""


def _unavailable(why: str):
    if os.environ.get("MINILLAMA4_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{why} (MINILLAMA4_REQUIRE_BROWSER=1: the browser test must run)")
    pytest.skip(why)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cleared_notebook() -> str:
    """The notebook without outputs: what a learner opens before running it."""
    nb = json.loads(NOTEBOOK.read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            cell["outputs"], cell["execution_count"] = [], None
    nb["metadata"].pop("widgets", None)
    return json.dumps(nb, indent=1)


@pytest.fixture
def lab(tmp_path):
    """A JupyterLab server on a free localhost port serving a folder with the cleared notebook; its kernel is this
    interpreter. Everything Jupyter reads or writes (config, settings, runtime files) lives under tmp_path.
    Skipped (or failed, under MINILLAMA4_REQUIRE_BROWSER=1) before anything starts when Chromium or a package is
    missing."""
    if not Path(CHROMIUM).is_file():
        _unavailable(f"no Chromium at {CHROMIUM}: apt-get install chromium (or set MINILLAMA4_CHROMIUM)")
    for module in ("jupyterlab", "playwright"):
        try:
            __import__(module)
        except ImportError:
            _unavailable(f"{module} is not installed: pip install -e '.[dev]'")
    work = tmp_path / "notebooks"
    work.mkdir()
    (work / NOTEBOOK.name).write_text(_cleared_notebook())
    config = tmp_path / "config"
    config.mkdir()
    (config / "jupyter_lab_config.py").write_text(LAB_CONFIG.format(root=str(work)))
    kernel = tmp_path / "data" / "kernels" / "python3"  # first on JUPYTER_PATH: the kernel runs this interpreter
    kernel.mkdir(parents=True)
    (kernel / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (ipykernel)", "language": "python"}))
    settings = tmp_path / "settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false",
                                                                           "checkForUpdates": False}))
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(config), "JUPYTER_PATH": str(tmp_path / "data"),
           "JUPYTER_DATA_DIR": str(tmp_path / "data"), "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
           "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "workspaces"), "OMP_NUM_THREADS": "1"}
    port = _free_port()
    log_path = tmp_path / "jupyterlab.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "jupyterlab", f"--port={port}", "--no-browser"], cwd=work,
                                env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{url}/api/status", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"JupyterLab did not start (exit code {proc.poll()}):\n{log_path.read_text()[-3000:]}")
            time.sleep(0.5)
        yield url, log_path
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _save_png(png: bytes, path: Path) -> int:
    """Save a screenshot, in full colour if that stays under MAX_PNG_BYTES, else with a dithered 256-colour palette
    (text and flat plots survive it); return its size in bytes."""
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB")
    image.save(path, optimize=True)
    if path.stat().st_size >= MAX_PNG_BYTES:
        image.quantize(colors=256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.FLOYDSTEINBERG).save(
            path, optimize=True)
    return path.stat().st_size


def _move_slider(page, explorer, label: str, key: str) -> None:
    """Press `key` (ArrowRight / ArrowLeft) on the explorer's slider called `label`, as a learner would; wait for the
    kernel to redraw the picture; check that the slider's readout and the picture both changed."""
    slider = explorer.locator(".widget-slider").filter(has=page.get_by_text(label, exact=True)).first
    readout = slider.locator(".widget-readout").inner_text()
    image = explorer.locator("img").first
    src, pixels = image.get_attribute("src"), image.screenshot()
    slider.locator(".noUi-handle").focus()
    page.keyboard.press(key)
    page.wait_for_function("([img, old]) => img.src !== old && img.complete && img.naturalWidth > 0",
                           arg=[image.element_handle(), src], timeout=60_000)
    assert slider.locator(".widget-readout").inner_text() != readout, f"the {label!r} slider did not move"
    assert image.screenshot() != pixels, f"moving the {label!r} slider did not change the picture"


def test_explore_notebook_runs_and_its_sliders_redraw_in_chromium(lab, tmp_path):
    from playwright.sync_api import sync_playwright

    url, log_path = lab
    shots = Path(os.environ.get("MINILLAMA4_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    problems = []  # browser console errors and uncaught page errors

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 2000})  # tall: a whole explorer in view
            page.on("console", lambda m: problems.append(f"console.error: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.goto(f"{url}/lab/tree/{NOTEBOOK.name}?reset")
            page.wait_for_selector(".jp-NotebookPanel:not(.lm-mod-hidden)", timeout=90_000)
            page.wait_for_function(KERNEL_IDLE, timeout=90_000)
            if page.evaluate("window.jupyterapp.shell.leftCollapsed === false"):
                page.evaluate("window.jupyterapp.commands.execute('application:toggle-left-area')")  # wider cells

            t0 = time.monotonic()
            page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")  # no await
            state = page.wait_for_function(RUN_STATE, timeout=RUN_TIMEOUT_S * 1000, polling=500).json_value()
            run_s = time.monotonic() - t0
            cells = page.evaluate(CELLS)
            bad = [(i, o) for i, c in enumerate(cells) for o in c["outputs"]
                   if o["type"] == "error" or o["name"] == "stderr"]
            assert state == "done" and not bad, f"cells raised or wrote to stderr: {bad}"
            counts = [c["count"] for c in cells]
            assert counts == list(range(1, len(cells) + 1)), f"not every cell ran, in order: {counts}"
            assert page.locator('[data-mime-type="application/vnd.jupyter.stderr"]').count() == 0

            # the widgets rendered: four explorers/dashboards with their controls and pictures
            boxes = page.locator(".jp-OutputArea-output .widget-vbox")
            assert boxes.count() >= 4, f"expected 4 rendered explorers, found {boxes.count()}"
            assert page.get_by_text("Error displaying widget").count() == 0
            assert page.locator(".jp-OutputArea-output .widget-slider .noUi-handle").count() >= 6
            images = page.locator(".jp-OutputArea-output .widget-vbox img")
            assert images.count() >= 4
            widths = images.evaluate_all("imgs => imgs.map(i => i.complete ? i.naturalWidth : 0)")
            assert all(w > 300 for w in widths), f"a widget picture did not render: widths {widths}"

            attention = boxes.filter(has_text="query token").first
            routing = boxes.filter(has_text="hover over a token").first
            # the notebook leaves the attention explorer at its last layer (3) and the routing explorer at layer 2
            for explorer, name, key in ((attention, "attention", "ArrowLeft"), (routing, "routing", "ArrowRight")):
                explorer.scroll_into_view_if_needed()
                _move_slider(page, explorer, "layer", key)
                png = explorer.screenshot()
                (tmp_path / f"{name}_explorer_full_colour.png").write_bytes(png)
                size = _save_png(png, shots / f"{name}_explorer.png")
                assert size < MAX_PNG_BYTES, f"{name}_explorer.png is {size} bytes"
            page.screenshot(path=str(tmp_path / "page.png"))  # for debugging a failure
        finally:
            browser.close()

    log = log_path.read_text()
    assert "Traceback" not in log, f"the JupyterLab server logged an exception:\n{log[-3000:]}"
    assert not problems, "the browser console logged errors:\n" + "\n".join(problems)
    print(f"notebook ran in the browser in {run_s:.0f} s; screenshots in {shots}")
