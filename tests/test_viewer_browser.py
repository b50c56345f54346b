"""view.py in a real browser: headless Chromium (software WebGL through SwiftShader) opens the viewer served
from a small run of known Gaussians and must draw them.

Chromium is driven through its DevTools protocol (a websocket; the ``websockets`` package comes with viser):
the page loads, then a screenshot is taken every half second until the splats' colour covers part of the
canvas (or 60 s pass). Runs on a CPU-only machine, as root (hence --no-sandbox). Needs the Debian package
``chromium`` (scripts/test.sh installs it with apt-get when it is missing and apt is available), or
CHROMIUM=/path/to/chrome; skips, saying why, without one. VIEWER_TEST_SCREENSHOTS=<folder> keeps the
screenshots.
"""
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import cv2
import numpy as np
import pytest

from tests.viewer_helpers import make_distill_run

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WIDTH, HEIGHT = 960, 640
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox",  # root in CI: Chromium's sandbox refuses to run as root
    "--use-angle=swiftshader", "--enable-unsafe-swiftshader",  # WebGL 2 on the CPU (no GPU on the machine)
    "--disable-dev-shm-usage", "--no-first-run", "--no-default-browser-check", "--disable-extensions",
    "--mute-audio", "--hide-scrollbars", f"--window-size={WIDTH},{HEIGHT}", "--remote-debugging-port=0",
]


def find_chromium():
    """(path, None) or (None, why not)."""
    override = os.environ.get("CHROMIUM")
    if override:
        return (override, None) if shutil.which(override) else (None, f"CHROMIUM={override} is not an executable")
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path, None
    return None, ("no Chromium found (chromium, chromium-browser or google-chrome): scripts/test.sh installs the "
                  "Debian package chromium with apt-get when it runs as root with apt; or set CHROMIUM=/path")


CHROMIUM, WHY_NOT = find_chromium()
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason=WHY_NOT or "")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Process:
    """A child process whose output lines are collected by a thread; ``wait_for`` a line matching a regex."""

    def __init__(self, argv, **kw):
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)
        self.lines, self.done = [], False
        self.cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            with self.cond:
                self.lines.append(line.rstrip("\n"))
                self.cond.notify_all()
        with self.cond:
            self.done = True
            self.cond.notify_all()

    def wait_for(self, pattern, timeout):
        deadline = time.time() + timeout
        with self.cond:
            while True:
                for line in self.lines:
                    m = re.search(pattern, line)
                    if m:
                        return m
                if self.done or time.time() >= deadline:
                    break
                self.cond.wait(min(deadline - time.time(), 0.5))
        raise AssertionError(f"no line matching {pattern!r} within {timeout} s (exit code {self.proc.poll()}):\n"
                             + "\n".join(self.lines[-30:]))

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


class DevTools:
    """The few DevTools-protocol calls the test needs, over one page's websocket."""

    def __init__(self, ws_url):
        from websockets.sync.client import connect

        self.ws = connect(ws_url, max_size=64 * 2 ** 20, open_timeout=30)
        self.next_id = 0

    def call(self, method, timeout=30, **params):
        self.next_id += 1
        self.ws.send(json.dumps(dict(id=self.next_id, method=method, params=params)))
        deadline = time.time() + timeout
        while True:
            msg = json.loads(self.ws.recv(timeout=max(0.1, deadline - time.time())))
            if msg.get("id") == self.next_id:  # events (no id) are skipped
                if "error" in msg:
                    raise AssertionError(f"{method}: {msg['error']}")
                return msg["result"]

    def screenshot(self):
        import base64

        data = base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"])
        return data, cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1]  # RGB

    def close(self):
        self.ws.close()


def colour_mask(img, colour):
    """Pixels of a splat colour: that channel well above the other two (grey background, white panel and a
    fading-in canvas, which viser overlays with translucent white at first, are not)."""
    r, g, b = (img[:, :, k].astype(int) for k in range(3))
    if colour == "red":
        return r - np.maximum(g, b) > 80
    if colour == "green":
        return g - np.maximum(r, b) > 80
    raise ValueError(colour)


def largest_blob(img, colour):
    """(share of the image, (x0, y0, x1, y1), (cx, cy)) of the largest connected patch of ``colour``: the splats,
    not the bits of UI in that colour (the axes gizmo, the notification's edge, the panel's icon)."""
    n, labels, stats, centroids = cv2.connectedComponentsWithStats(colour_mask(img, colour).astype(np.uint8), 8)
    if n < 2:
        return 0.0, None, None
    k = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    x, y, w, h, area = stats[k]
    return area / labels.size, (x, y, x + w - 1, y + h - 1), tuple(centroids[k])


@pytest.fixture(scope="module")
def browser_run(tmp_path_factory):
    """A run of four coloured balls of Gaussians: student red, G_std green (beside it when shown together)."""
    root = tmp_path_factory.mktemp("browser")
    return make_distill_run(root / "run", counts=(300, 300, 400, 400))


CANVAS_RECT = ("(() => { const c = [...document.querySelectorAll('canvas')].map(e => e.getBoundingClientRect())"
               ".sort((a, b) => b.width * b.height - a.width * a.height)[0]; const k = window.devicePixelRatio;"
               " return c && c.width > 0 ? [c.left * k, c.top * k, c.right * k, c.bottom * k].map(Math.round) : null;"
               " })()")


def _view_in_browser(run, tmp_path, extra, wanted, name):
    """Serve ``run`` with view.py and open it in Chromium; once a patch of every colour in ``wanted`` covers at
    least 0.5% of the 3D canvas, return (the canvas part of the screenshot, seconds from Chromium's start, page
    facts)."""
    port = _free_port()
    viewer = Process([sys.executable, os.path.join(REPO, "view.py"), "-m", run, "--port", str(port)] + extra,
                     cwd=REPO)
    browser = None
    tools = None
    t0 = time.time()
    try:
        viewer.wait_for(r"Viewer running at http://127\.0\.0\.1:" + str(port), timeout=60)
        profile = tempfile.mkdtemp(dir=tmp_path)
        browser = Process([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"http://127.0.0.1:{port}/"])
        devtools_port = int(browser.wait_for(r"DevTools listening on ws://[^:]+:(\d+)/", timeout=60).group(1))
        t_open = time.time()
        page = None
        while page is None and time.time() - t_open < 30:
            with urllib.request.urlopen(f"http://127.0.0.1:{devtools_port}/json/list", timeout=10) as r:
                pages = [t for t in json.load(r) if t.get("type") == "page" and str(port) in t.get("url", "")]
            page = pages[0] if pages else time.sleep(0.2)
        assert page, "Chromium opened no page for the viewer"
        tools = DevTools(page["webSocketDebuggerUrl"])
        deadline, rect = time.time() + 60, None
        while rect is None and time.time() < deadline:  # the page has loaded and made its WebGL canvas
            rect = tools.call("Runtime.evaluate", expression=CANVAS_RECT, returnByValue=True)["result"].get("value")
            if rect is None:
                time.sleep(0.2)
        assert rect, "the viewer page made no canvas within 60 s"
        x0, y0, x1, y1 = rect
        img = data = None
        while time.time() < deadline:
            data, shot = tools.screenshot()
            img = shot[max(0, y0):y1, max(0, x0):x1]
            if all(largest_blob(img, c)[0] > 0.005 for c in wanted):
                break
            time.sleep(0.5)
        seconds = time.time() - t_open
        facts = tools.call("Runtime.evaluate", returnByValue=True, expression=(
            "JSON.stringify({title: document.title, canvases: document.querySelectorAll('canvas').length, "
            "text: document.body.innerText.slice(0, 4000)})"))["result"]["value"]
        with open(os.path.join(tmp_path, f"{name}.png"), "wb") as f:
            f.write(data)
        shots = os.environ.get("VIEWER_TEST_SCREENSHOTS")
        if shots:
            os.makedirs(shots, exist_ok=True)
            shutil.copy(os.path.join(tmp_path, f"{name}.png"), shots)
        print(f"{name}: splats on screen {seconds:.1f} s after Chromium started ({time.time() - t0:.1f} s in all); "
              f"canvas {x1 - x0}x{y1 - y0} of the {shot.shape[1]}x{shot.shape[0]} screenshot")
        return img, seconds, json.loads(facts)
    finally:
        if tools is not None:
            tools.close()
        if browser is not None:
            browser.stop()
        viewer.stop()


def test_browser_draws_the_student(browser_run, tmp_path):
    img, seconds, facts = _view_in_browser(browser_run, tmp_path, [], ["red"], "student")
    assert facts["canvases"] >= 1 and "Distillation run" in facts["text"]
    for name in ("G_perb", "G_drop", "G_std", "student"):  # the model table lists the four models
        assert name in facts["text"]
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 50  # not a blank canvas of one colour
    share, (x0, y0, x1, y1), _ = largest_blob(img, "red")
    assert share > 0.005, f"the student's red splats cover only {share:.2%} of the canvas"
    assert largest_blob(img, "green")[0] < share / 20  # G_std (green) is not shown
    # the ball sits inside the view, off its edges (the initial camera frames the model)
    h, w = img.shape[:2]
    assert 0 < x0 and x1 < w - 1 and 0 < y0 and y1 < h - 1 and (x1 - x0) < w / 2


def test_browser_side_by_side(browser_run, tmp_path):
    img, _, _ = _view_in_browser(browser_run, tmp_path, ["--show", "student", "G_std"], ["red", "green"], "pair")
    red, _, (red_x, red_y) = largest_blob(img, "red")
    green, _, (green_x, green_y) = largest_blob(img, "green")
    assert red > 0.005 and green > 0.005
    # G_std is drawn beside the student, to its right on screen, at the same height
    assert green_x > red_x + 100 and abs(green_y - red_y) < 30
