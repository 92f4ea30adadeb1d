"""Playwright harness for the browser app: a fresh `python -m DFM50NLib web` server per test on a free 127.0.0.1
port, Debian's /usr/bin/chromium driven headless (never a downloaded browser)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("DFM50N_CHROMIUM", "/usr/bin/chromium")
REPO = Path(__file__).resolve().parents[2]
SERVER_LOGS = {}  # url -> the server's output file, for a test's failure message


def require_browser():
    """The web suite runs in CI (.ci/run installs chromium and the test extra has playwright); elsewhere it
    skips, naming what is missing."""
    try:
        import playwright.sync_api  # noqa: F401
        import trame_slicer  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"web tests need the [web,test] extras ({exc})")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"web tests need Debian chromium at {CHROMIUM} (apt-get install chromium)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def web_server(tmp_path, *args, env=None, timeout=90):
    port = free_port()
    log = open(tmp_path / f"server-{port}.log", "w+")
    e = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
    proc = subprocess.Popen(
        [sys.executable, "-m", "DFM50NLib", "web", "--port", str(port), *args],
        cwd=REPO,
        env=e,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/"
    SERVER_LOGS[url] = Path(log.name)
    try:
        t0 = time.time()
        while True:
            if proc.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"web server exited ({proc.returncode}):\n{log.read()[-3000:]}")
            try:
                urllib.request.urlopen(url, timeout=2).read(100)
                break
            except OSError:
                if time.time() - t0 > timeout:
                    raise
                time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@contextlib.contextmanager
def browser_page(url, width=1600, height=1000):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            page = browser.new_page(viewport={"width": width, "height": height}, accept_downloads=True)
            page.set_default_timeout(60_000)
            goto_session(page, url)
            yield page
        finally:
            browser.close()


def goto_session(page, url, timeout=180_000):
    """Open the page and wait for its session's panel (the launcher starts a session process first)."""
    watch_session(page)
    page.goto(url)
    wait_for_session(page, timeout)


def watch_session(page):
    """Record what the page sees of its session (the launcher's answer, the websocket, the console), once."""
    if page in _SEEN:
        return
    seen = _SEEN[page] = []

    def websocket(ws):
        seen.append(f"websocket {ws.url.split('?')[0]} opened")
        ws.on("close", lambda _: seen.append("websocket closed"))

    page.on("console", lambda m: seen.append(f"console {m.type}: {m.text}"))
    page.on("response", lambda r: seen.append(f"launcher answered {r.status}") if "/paraview" in r.url else None)
    page.on("websocket", websocket)


_SEEN = {}


def wait_for_session(page, timeout=180_000):
    """Until the session's panel shows (after goto_session, or a reload of a watched page). If it never does,
    fail with what the page and the server saw; a session's crash is in the server's output
    (launcher.report_end)."""
    t0 = time.time()
    try:
        page.wait_for_selector("#dfm-open-demo", timeout=timeout)
    except Exception as exc:
        origin = "/".join(page.url.split("/")[:3]) + "/"
        log = SERVER_LOGS.get(origin)
        server = log.read_text(errors="replace")[-4000:] if log and log.is_file() else "(no server log)"
        lines = "\n".join(_SEEN.get(page, [])[-40:])
        raise AssertionError(
            f"the session's panel did not show within {time.time() - t0:.0f} s ({exc.__class__.__name__}).\n"
            f"page:\n{lines}\nserver output:\n{server}"
        ) from None


VIEW_FRAMES = "Array.from(document.querySelectorAll('img')).filter(i => i.naturalWidth > 100).length >= 3"
HANDED = "handed to a browser"  # DFM50NLib.web.session's timeline, when the launcher gives a session away


def session_logs(work) -> dict:
    """Log text of every session the launcher under `work` (the server's TMPDIR) started, by log file."""
    return {log: log.read_text(errors="replace") for log in Path(work).glob("dfm50n-launcher-*/logs/*.txt")}


def timeline(log_text, what) -> float | None:
    """Seconds from the session process's start to the first timeline line that starts with `what`."""
    for line in log_text.splitlines():
        head, _, said = line.partition(" s: ")
        if "DFM50N session timeline" in head and said.startswith(what):
            return float(head.rsplit("+", 1)[1])
    return None


def session_port(log_text) -> int:
    return int(log_text.split("listening on port ", 1)[1].split()[0])


def _session_commands():
    """(pid, command-line arguments) of every running DFM50N session process (also a --write-www one)."""
    for proc in Path("/proc").iterdir():
        try:
            args = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"DFM50NLib.web.session" in args:
            yield int(proc.name), args


def session_pid_on(port) -> int:
    """The session process the launcher started with `--port <port>`."""
    for pid, args in _session_commands():
        if b"--port" in args and args[args.index(b"--port") + 1] == str(port).encode():
            return pid
    raise AssertionError(f"no session process on port {port}")


def handed_sessions(work) -> list:
    """(pid, log text) of the sessions the launcher under `work` gave to a browser, in the order they were given."""
    logs = [t for t in session_logs(work).values() if HANDED in t]
    logs.sort(key=lambda t: t.split(HANDED)[0].rsplit("DFM50N session timeline ", 1)[1][:15])
    return [(session_pid_on(session_port(t)), t) for t in logs]


def session_processes(work) -> list:
    """Pids of the session processes of the launcher under `work`."""
    work = str(work).encode()
    return sorted(
        pid for pid, args in _session_commands() if b"--write-www" not in args and any(work in a for a in args)
    )


def wait_for_spare(work, timeout=180) -> tuple:
    """(pid, log file) of a started session that waits for its browser (a warm spare), once there is one."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        for log, text in session_logs(work).items():
            if "listening on port" in text and HANDED not in text:
                try:
                    return session_pid_on(session_port(text)), log
                except AssertionError:
                    pass  # it ended meanwhile
        time.sleep(0.2)
    raise AssertionError(f"no spare session within {timeout} s")


def choose_option(page, field, label):
    """Pick `label` in the panel's select `#dfm-<field>` (as a user does: open the list, click the item)."""
    import re

    page.locator(f".v-field:has(#dfm-{field})").click()
    page.locator(".v-overlay--active .v-list-item").filter(has_text=re.compile(rf"^\s*{re.escape(label)}\s*$")).click()
    page.wait_for_selector(".v-overlay--active .v-list-item", state="detached")


def open_demo(page):
    page.click("#dfm-open-demo")
    page.wait_for_selector("#dfm-case:has-text('Demo phantom')")
    wait_for_views(page)
    wait_idle(page)


def wait_for_views(page):
    """The RCA views are <img> elements streamed by the server; wait until the slice views have pictures."""
    page.wait_for_function(VIEW_FRAMES)


def axial_view_box(page):
    """The largest view image is the axial (red) slice view of trame-slicer's default layout."""
    boxes = [b for b in (img.bounding_box() for img in page.query_selector_all("img")) if b]
    return max(boxes, key=lambda b: b["width"] * b["height"])


def drag(page, points, steps=12):
    """A slow, human-like stroke: hover first (the brush follows the mouse), press, move, release."""
    page.mouse.move(*points[0], steps=4)
    page.wait_for_timeout(300)
    page.mouse.down()
    page.wait_for_timeout(200)
    for p in points[1:]:
        page.mouse.move(*p, steps=steps)
        page.wait_for_timeout(100)
    page.mouse.up()
    page.wait_for_timeout(500)


def add_segment_and_paint(page, rel_points):
    """Add a segment, choose Paint in the segment editor, drag through `rel_points` (fractions of the axial view)
    and return the voxel count the server reports."""
    n = page.locator(".mdi-delete-outline").count()
    page.locator("button:has(.mdi-plus)").first.click()
    page.wait_for_function(f"document.querySelectorAll('.mdi-delete-outline').length > {n}")
    choose_effect(page, "mdi-brush")
    return paint(page, rel_points)


def painted_voxels(page) -> int:
    return int(page.get_attribute("#dfm-segment-voxels", "data-voxels") or 0)


def wait_idle(page, quiet_ms=500):
    """Until the server has answered every pending call (trame's busy counter) and every view event
    (web/input_order.py's queue) for `quiet_ms`."""
    page.wait_for_function(
        """(q) => { const b = window.trame && (window.trame.state.get('trame__busy') || window.dfmInputOrder.pending());
                  if (b) { window.__dfmIdle = 0; return false; }
                  window.__dfmIdle = window.__dfmIdle || Date.now(); return Date.now() - window.__dfmIdle > q; }""",
        arg=quiet_ms,
        polling=100,
    )


def choose_effect(page, icon):
    """Click an effect of the segment editor card (not the toolbar) and wait until the server made it active."""
    page.locator(f".v-card-item button:has(.{icon})").first.click()
    page.wait_for_selector(f".v-card-item button.v-btn--active:has(.{icon})")


def paint(page, rel_points, timeout=60_000):
    """Drag on the axial view once; returns the voxel count the server reports once it changed. No retry: the
    page sends the stroke in order after every earlier click (web/input_order.py), so a stroke that paints
    nothing is a failure."""
    before = painted_voxels(page)
    wait_idle(page)
    box = axial_view_box(page)
    drag(page, [(box["x"] + fx * box["width"], box["y"] + fy * box["height"]) for fx, fy in rel_points])
    wait_idle(page)
    try:
        page.wait_for_function(
            f"Number(document.querySelector('#dfm-segment-voxels').dataset.voxels) !== {before}", timeout=timeout
        )
    except Exception:
        raise AssertionError(f"painting on the axial view changed no voxel ({before} before and after)") from None
    return painted_voxels(page)


def score_and_wait(page, timeout=240_000):
    page.click("#dfm-score")
    page.wait_for_selector("#dfm-message:text-is('Done')", timeout=timeout)
    return page.get_attribute("#dfm-score-value", "data-score")


AXIAL_IMAGE_BRIGHT = """() => {
  const img = Array.from(document.querySelectorAll('img.image-display-area'))
    .sort((a, b) => b.width * b.height - a.width * a.height)[0];
  if (!img || !img.complete || img.naturalWidth < 100) return false;
  const c = document.createElement('canvas');
  c.width = img.naturalWidth; c.height = img.naturalHeight;
  const g = c.getContext('2d'); g.drawImage(img, 0, 0);
  const d = g.getImageData(0, 0, c.width, c.height).data;
  let bright = 0;
  for (let i = 0; i < d.length; i += 4) if (d[i] > 150) bright++;
  return bright > 0.02 * c.width * c.height;  // the demo's body wall, not a black box
}"""


AXIAL_YELLOW_PIXELS = """() => {
  const img = Array.from(document.querySelectorAll('img.image-display-area'))
    .sort((a, b) => b.width * b.height - a.width * a.height)[0];
  if (!img || !img.complete || img.naturalWidth < 100) return 0;
  const c = document.createElement('canvas');
  c.width = img.naturalWidth; c.height = img.naturalHeight;
  const g = c.getContext('2d'); g.drawImage(img, 0, 0);
  const d = g.getImageData(0, 0, c.width, c.height).data;
  let n = 0;
  for (let i = 0; i < d.length; i += 4) if (d[i] > 200 && d[i + 1] > 160 && d[i + 2] < 90) n++;
  return n;
}"""


def wait_for_cube_outline(page, present=True, timeout=30_000):
    """Until the streamed axial image shows the yellow cube outline (or, present=False, no longer shows it): the
    server draws the views a moment after the state that asked for them."""
    test = f"({AXIAL_YELLOW_PIXELS})() {'> 100' if present else '=== 0'}"
    page.wait_for_function(test, polling=200, timeout=timeout)
