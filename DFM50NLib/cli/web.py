"""`web`: serve DFM50N in the browser (trame-slicer: real Slicer core, segment editor, slice views)."""

from __future__ import annotations


def register(sub):
    p = sub.add_parser(
        "web",
        help="serve the browser app (draw the lesion, score, report)",
        description="Start the DFM50N browser app: open the demo case, upload a CT or open a file under --data, "
        "draw or edit the lesion with Slicer's segment editor, score it, download the report. Every browser gets "
        "a private session (its own process and scene, started by wslink's launcher; at most --max-sessions at "
        "once, each ended --idle-timeout seconds after its browser left). Binds 127.0.0.1: to serve a hospital "
        "network, put it behind a reverse proxy with authentication (README: Browser app). Needs the [web] extra.",
    )
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8080, help="port (default 8080; 0 = any free port)")
    p.add_argument("--data", default=None, help="folder whose files the page may open (nothing else is reachable)")
    p.add_argument("--weights", default=None, help="FCIB model_weights.torch (else $DFM50N_FCIB_WEIGHTS or cache)")
    p.add_argument("--model", default=None, help="classifier folder (default: the bundled DEMO classifier)")
    p.add_argument("--max-upload-mb", type=float, default=1024, help="largest upload accepted (default 1024 MB)")
    p.add_argument("--max-sessions", type=int, default=4, help="users served at once (default 4; 0.6-2 GB each)")
    p.add_argument(
        "--idle-timeout",
        type=int,
        default=300,
        help="end a session this many seconds after its browser left (default 300); its uploads are deleted",
    )
    p.add_argument(
        "--spare-sessions",
        type=int,
        default=1,
        help="sessions started ahead of their browsers, so a page (or a reload) gets its views at once (default 1; "
        "0 = start each session when its browser asks); they count against --max-sessions",
    )
    p.add_argument(
        "--session-start-timeout",
        type=int,
        default=90,
        help="a session not ready after this many seconds (usually 3-10) is stopped and the page tries again; "
        "its Python stack is printed a third of the way (default 90)",
    )
    p.add_argument("--session-ports", default=None, help="ports for the sessions, e.g. 9101-9104 (default: free ones)")
    p.add_argument(
        "--session-url",
        default=None,
        help="websocket URL the browser uses for a session, for a reverse "
        "proxy, e.g. 'ws://USE_HOST/session/${port}/ws' (default: ws://127.0.0.1:PORT/ws)",
    )
    p.add_argument(
        "--proxy-file",
        default=None,
        help="where the launcher writes 'session-id host:port' lines for the reverse proxy's map (with --session-url)",
    )
    p.set_defaults(func=run_web)


def run_web(args) -> int:
    from DFM50NLib.errors import DFM50NError

    try:
        import trame_slicer  # noqa: F401
        import wslink.launcher  # noqa: F401

        from DFM50NLib.web.launcher import run_launcher
    except ImportError as exc:
        raise DFM50NError(f"The browser app needs the [web] extra: pip install 'dfm50n[web]' ({exc}).")
    if args.max_sessions < 1 or args.idle_timeout < 1 or args.session_start_timeout < 3:
        raise DFM50NError("--max-sessions and --idle-timeout must be at least 1, --session-start-timeout at least 3.")
    if args.spare_sessions < 0:
        raise DFM50NError(f"--spare-sessions {args.spare_sessions}: give 0 (none) or more.")
    if args.data is not None:
        from DFM50NLib.web.files import DataFolder

        DataFolder(args.data)  # a wrong --data fails here, not in every session
    from pathlib import Path

    def absolute(path):  # the sessions are other processes: no path may depend on where they start
        return str(Path(path).resolve()) if path else None

    options = {
        "data": absolute(args.data),
        "weights": absolute(args.weights),
        "model": absolute(args.model),
        "max_upload_mb": args.max_upload_mb,
    }
    return run_launcher(
        host=args.host,
        port=args.port,
        max_sessions=args.max_sessions,
        session_ports=args.session_ports,
        idle_timeout=args.idle_timeout,
        start_timeout=args.session_start_timeout,
        session_url=args.session_url,
        proxy_file=args.proxy_file,
        options=options,
        spare_sessions=args.spare_sessions,
    )
