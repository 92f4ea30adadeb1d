"""One user's session: a process of its own with its own Slicer scene, started by the launcher (launcher.py)
for each browser that opens the page, so no user sees or changes another's case.

    python -m DFM50NLib.web.session --config SESSION.json --port PORT --authKey SECRET

The secret is the launcher's random one for this session (the page gets it from the launcher's answer); a
client without it may send at most wslink's 512-byte hello. Messages from an authenticated client are capped
at MAX_MESSAGE_BYTES: wslink would otherwise allocate whatever size a frame header declares (up to 4 GB).
The process ends `idle_timeout` seconds after its last client left (wslink's timeout), counted from when the
launcher handed it to a browser (IdleClock: it may be started ahead, as a warm spare); its uploads go with it.
Its log holds a timeline (`mark`): start, imports, scene built, listening, handed out, first images.
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import os
import signal
import sys
import time
from datetime import datetime
from pathlib import Path

MAX_MESSAGE_BYTES = 8 << 20  # the largest client message: an upload piece (1 MiB) and a state update fit well
READY_LINE = "DFM50N session ready"
TIMELINE_PREFIX = "DFM50N session timeline"
CLAIM_SIGNAL = getattr(signal, "SIGUSR1", None)  # from the launcher: "a browser has been given this session"


def mark(what: str):
    """One line of the session's timeline in its log (the launcher's logs/<id>.txt): wall-clock time, to set
    against the browser's, and seconds since this process started, so where a page's first seconds go is read
    off the log."""
    print(f"{TIMELINE_PREFIX} {datetime.now():%H:%M:%S.%f} +{time.time() - _process_start():.2f} s: {what}", flush=True)


def _process_start() -> float:
    """When this process was started (Linux: /proc; elsewhere when this module was imported)."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return time.time() - uptime + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return _IMPORTED


_IMPORTED = time.time()


def bound_websocket_messages(max_bytes=MAX_MESSAGE_BYTES):
    """wslink reassembles a chunked message into a buffer of the size its header declares, and lifts the
    limit to 4 GB once a client is authenticated: keep it at `max_bytes` (a larger message is refused and its
    connection closed before any allocation)."""
    os.environ["WSLINK_MAX_MSG_SIZE"] = str(max_bytes)  # one websocket frame (aiohttp's max_msg_size), read at import
    import wslink.chunking
    import wslink.protocol

    class BoundedUnChunker(wslink.chunking.UnChunker):
        def set_max_message_size(self, size):
            super().set_max_message_size(min(int(size), max_bytes))

    wslink.protocol.UnChunker = BoundedUnChunker


def make_app(options: dict):
    os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")  # headless: Mesa EGL, no display
    from trame.app import get_server

    from DFM50NLib.web.app import DFM50NWebApp

    mark("trame, Slicer core and VTK imported")
    server = get_server("dfm50n", client_type="vue3")
    return DFM50NWebApp(
        server,
        data_dir=options.get("data"),
        weights=options.get("weights"),
        model=options.get("model"),
        max_upload_mb=options.get("max_upload_mb", 1024),
        upload_root=options.get("upload_root"),
    )


def write_www(app, folder):
    """The page's static files (trame's client and every module the app serves) for the launcher to serve."""
    from trame.tools.www import StaticContentGenerator
    from trame_client.module import vue3

    generator = StaticContentGenerator()
    generator.www = vue3.www
    generator.serve = dict(app.server.serve)
    generator.write(folder)


def serve(options: dict, port: int):
    """Run one session until its idle timeout (or SIGTERM from the launcher), then remove its uploads."""
    clock = IdleClock(int(options.get("idle_timeout", 300)))
    bound_websocket_messages()
    app = make_app(options)
    mark("scene, views and page built")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # the launcher's stop: clean up like an idle end
    app.server.controller.on_server_ready.add(lambda **_: _ready(clock, app.server, port))
    _mark_first_contacts(app.server)
    try:
        app.server.start(
            host="127.0.0.1",
            port=port,
            timeout=clock.initial_timeout(),
            open_browser=False,
            show_connection_info=False,
        )
    finally:
        app.uploads.cleanup()


class IdleClock:
    """wslink ends a session `timeout` seconds after its last client left, or after its start when none came.
    A session the launcher starts ahead of its browser (a warm spare, launcher.py) must not end while it waits
    for one: its clock starts when the launcher hands it to a browser (CLAIM_SIGNAL), or when the launcher is
    gone (nobody could hand it out any more). Without that signal (Windows) the clock runs from the start."""

    def __init__(self, idle_timeout: int):
        self.idle_timeout = idle_timeout
        self.claimed = self.started = False
        self.launcher = os.getppid()
        self.web_server = self.loop = None
        if CLAIM_SIGNAL is not None:  # set before the heavy imports: the default action of SIGUSR1 is to exit
            signal.signal(CLAIM_SIGNAL, self._on_claim)

    def initial_timeout(self) -> int:
        return 0 if CLAIM_SIGNAL is not None else self.idle_timeout  # 0: no idle end until claimed

    def _on_claim(self, *_):
        self.claimed = True  # nothing else here: a signal handler may interrupt a print or the event loop
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self._start, "handed to a browser")

    def attach(self, web_server):
        """wslink's server is running: start the clock if the claim came during the start, else watch the
        launcher until it does."""
        import asyncio

        self.web_server, self.loop = web_server, asyncio.get_event_loop()
        if self.claimed:
            self._start("handed to a browser")
        elif CLAIM_SIGNAL is not None:
            self.loop.create_task(self._watch_launcher())

    async def _watch_launcher(self):
        import asyncio

        while not self.claimed:
            if os.getppid() != self.launcher:
                self.claimed = True
                self._start("the launcher is gone: the idle timeout runs")
            await asyncio.sleep(2)

    def _start(self, why):
        ws = self.web_server
        if ws is None or self.started:
            return
        self.started = True
        mark(why)
        ws.config["timeout"] = self.idle_timeout  # read by wslink each time its last client leaves
        if not any(h.connections for h in getattr(ws, "_ws_handlers", ())):  # its browser has not come yet
            ws.shutdown_schedule()


def _ready(clock, server, port):
    clock.attach(server._server)  # wslink's web server (trame keeps it there)
    mark(f"listening on port {port}")
    print(READY_LINE, flush=True)


def _mark_first_contacts(server):
    """Timeline lines for the first view image drawn, the browser's first request of the page's state and
    the first view image sent to it."""
    from trame_rca.protocol import StreamManager

    get_state, push = server.get_server_state, StreamManager.push_content
    seen = set()

    def once(what):
        if what not in seen:
            seen.add(what)
            mark(what)

    def state_asked(*args, **kwargs):
        once("the browser connected and asked for the page's state")
        return get_state(*args, **kwargs)

    def pushed(self, *args, **kwargs):
        once("first view image rendered")  # before any browser: drawn at the start, sent to nobody
        if "the browser connected and asked for the page's state" in seen:
            once("first view image sent to the browser")
        return push(self, *args, **kwargs)

    server.get_server_state = state_asked
    StreamManager.push_content = pushed


def main(argv=None) -> int:
    faulthandler.enable()  # a crash (e.g. in rendering) leaves its stack in the session's log (launcher.report_end)
    faulthandler.register(signal.SIGUSR2, all_threads=True)  # a slow start: the launcher asks where it is
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True, help="the session options the launcher wrote (JSON)")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--write-www", default=None, help="write the page's static files here and exit")
    args, _trame_args = ap.parse_known_args(argv)  # --authKey is read by trame/wslink themselves
    mark("Python started")
    with open(args.config, encoding="utf-8") as f:
        options = json.load(f)
    if args.write_www:
        app = make_app(options)
        try:
            write_www(app, args.write_www)
        finally:
            app.uploads.cleanup()
        return 0
    serve(options, args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
