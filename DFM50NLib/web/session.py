"""One user's session: a process of its own with its own Slicer scene, started by the launcher (launcher.py)
for each browser that opens the page, so no user sees or changes another's case.

    python -m DFM50NLib.web.session --config SESSION.json --port PORT --authKey SECRET

The secret is the launcher's random one for this session (the page gets it from the launcher's answer); a
client without it may send at most wslink's 512-byte hello. Messages from an authenticated client are capped
at MAX_MESSAGE_BYTES: wslink would otherwise allocate whatever size a frame header declares (up to 4 GB).
The process ends `idle_timeout` seconds after its last client left (wslink's timeout); its uploads go with it.
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import os
import signal
import sys

MAX_MESSAGE_BYTES = 8 << 20  # the largest client message: an upload piece (1 MiB) and a state update fit well
READY_LINE = "DFM50N session ready"


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
    bound_websocket_messages()
    app = make_app(options)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # the launcher's stop: clean up like an idle end
    app.server.controller.on_server_ready.add(lambda **_: print(READY_LINE, flush=True))
    try:
        app.server.start(
            host="127.0.0.1",
            port=port,
            timeout=int(options.get("idle_timeout", 300)),
            open_browser=False,
            show_connection_info=False,
        )
    finally:
        app.uploads.cleanup()


def main(argv=None) -> int:
    faulthandler.enable()  # a crash (e.g. in rendering) leaves its stack in the session's log (launcher.report_end)
    faulthandler.register(signal.SIGUSR2, all_threads=True)  # a slow start: the launcher asks where it is
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True, help="the session options the launcher wrote (JSON)")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--write-www", default=None, help="write the page's static files here and exit")
    args, _trame_args = ap.parse_known_args(argv)  # --authKey is read by trame/wslink themselves
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
