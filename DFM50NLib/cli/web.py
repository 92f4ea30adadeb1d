"""`web`: serve DFM50N in the browser (trame-slicer: real Slicer core, segment editor, slice views)."""

from __future__ import annotations

import os


def register(sub):
    p = sub.add_parser(
        "web",
        help="serve the browser app (draw the lesion, score, report)",
        description="Start the DFM50N browser app: open the demo case, upload a CT or open a file under --data, "
        "draw or edit the lesion with Slicer's segment editor, score it, download the report. Binds 127.0.0.1: "
        "to serve a hospital network, put it behind a reverse proxy with authentication (the app has no accounts). "
        "Needs the [web] extra.",
    )
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8080, help="port (default 8080; 0 = any free port)")
    p.add_argument("--data", default=None, help="folder whose files the page may open (nothing else is reachable)")
    p.add_argument("--weights", default=None, help="FCIB model_weights.torch (else $DFM50N_FCIB_WEIGHTS or cache)")
    p.add_argument("--model", default=None, help="classifier folder (default: the bundled DEMO classifier)")
    p.add_argument("--max-upload-mb", type=float, default=1024, help="largest upload accepted (default 1024 MB)")
    p.set_defaults(func=run_web)


def run_web(args) -> int:
    from DFM50NLib.errors import DFM50NError

    os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")  # headless: Mesa EGL, no display
    try:
        from trame.app import get_server

        from DFM50NLib.web.app import DFM50NWebApp
    except ImportError as exc:
        raise DFM50NError(f"The browser app needs the [web] extra: pip install 'dfm50n[web]' ({exc}).")
    server = get_server("dfm50n", client_type="vue3")
    app = DFM50NWebApp(
        server, data_dir=args.data, weights=args.weights, model=args.model, max_upload_mb=args.max_upload_mb
    )
    print(f"DFM50N web: http://{args.host}:{args.port}/", flush=True)
    try:
        app.server.start(host=args.host, port=args.port, open_browser=False, show_connection_info=False)
    finally:
        app.uploads.cleanup()
    return 0
