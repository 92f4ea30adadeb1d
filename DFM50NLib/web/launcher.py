"""One private session per user, on wslink's launcher (the one trame and ParaView Web deploy with): the page is
served by the launcher; each browser that opens it POSTs to /paraview/, the launcher starts one session
process (session.py) on a free port of its pool and answers that session's websocket URL and random secret,
which trame's client then connects to. The pool size is the session limit (a browser beyond it is answered
503); a session ends `idle_timeout` seconds after its browser left, and its port returns to the pool. A warm
spare session (spares.py) is started ahead, so the next browser does not wait for a cold start.

Two choices of wslink's are replaced here, both for safety: its session secret (16 characters from `random`,
which is not a cryptographic generator) by `secrets.token_urlsafe`, and a secret the client may send in its
POST is dropped (each session always gets the launcher's own).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

from DFM50NLib.errors import DFM50NError
from DFM50NLib.web.session import READY_LINE
from DFM50NLib.web.spares import session_log_tail, with_spares

ENDPOINT = "paraview"  # where trame's client POSTs for a session by default
DIRECT_SESSION_URL = "ws://${host}:${port}/ws"  # the browser reaches the session port itself (same machine)
TRAME_LOADING = '<div class="trame__message">Loading...</div>'
STARTING = "Starting your private session…"  # said under trame's spinner instead of "Loading..."


def free_ports(count: int, host="127.0.0.1") -> list:
    """`count` ports the system calls free now (held open together, so they differ)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def parse_ports(text: str) -> list:
    """'9101-9108' -> [9101, ..., 9108]."""
    try:
        first, _, last = str(text).partition("-")
        ports = list(range(int(first), int(last or first) + 1))
    except ValueError:
        ports = []
    if not ports or ports[0] < 1 or ports[-1] > 65535:
        raise DFM50NError(f"--session-ports {text}: give a range of ports such as 9101-9108.")
    return ports


def launcher_config(work: Path, *, host, port, session_ports, session_url, proxy_file, start_timeout=180):
    """wslink's launcher configuration: one application (a DFM50N session), one resource per session port."""
    return {
        "configuration": {
            "host": host,
            "port": port,
            "endpoint": ENDPOINT,
            "content": str(work / "www"),
            "proxy_file": str(proxy_file or work / "proxy-mapping.txt"),
            "sessionURL": session_url or DIRECT_SESSION_URL,
            "timeout": start_timeout,
            "log_dir": str(work / "logs"),
            "sanitize": {},
            "fields": [],  # only id, sessionURL (and the secret, which the command uses) go to the browser
        },
        "resources": [{"host": "127.0.0.1", "port_range": [p, p]} for p in session_ports],
        "properties": {},
        "apps": {
            "trame": {  # trame's client asks for the application "trame"
                "cmd": [
                    sys.executable,
                    "-m",
                    "DFM50NLib.web.session",
                    "--config",
                    str(work / "session.json"),
                    "--port",
                    "${port}",
                    "--authKey",
                    "${secret}",
                ],
                "ready_line": READY_LINE,
            }
        },
    }


def _replace_wslink_choices(spare_sessions=1):
    """Random secrets from `secrets`, never one chosen by the client (see the module docstring), and
    `spare_sessions` sessions started ahead of their browsers (spares.py)."""
    import aiohttp.web as aiohttp_web
    import wslink.backends.aiohttp.launcher as aiohttp_launcher
    import wslink.launcher

    wslink.launcher.generatePassword = lambda: secrets.token_urlsafe(32)

    class Sessions(wslink.launcher.SessionManager):
        def createSession(self, options):
            options.pop("secret", None)
            return super().createSession(options)

    class Processes(wslink.launcher.ProcessManager):
        started = []  # every manager, so the launcher can stop its sessions when it ends

        def __init__(self, config):
            super().__init__(config)
            Processes.started.append(self)

        def isReady(self, session, count=0):
            """wslink calls a session that died at start 'ready' after 60 s and sends the browser to its port:
            answer 503 at once instead, and put the session's last log lines in the server's output."""
            if self.isRunning(session["id"]):
                return super().isReady(session, count)
            tail = session_log_tail(self, session)
            print(f"DFM50N web: a session ended before it was ready (port {session['port']}):\n{tail}", flush=True)
            raise aiohttp_web.HTTPServiceUnavailable(
                text=json.dumps({"error": "The session could not start; see the server's log."}),
                content_type="application/json",
            )

    aiohttp_launcher.SessionManager = Sessions
    aiohttp_launcher.ProcessManager = Processes
    wslinks_own = getattr(aiohttp_launcher.LauncherResource, "wslinks_own", aiohttp_launcher.LauncherResource)
    aiohttp_launcher.LauncherResource = with_spares(wslinks_own, spare_sessions)
    return Processes


def run_launcher(
    *, host, port, max_sessions, session_ports, idle_timeout, session_url, proxy_file, options, spare_sessions=1
) -> int:
    """Serve the page on host:port until stopped; every session process and upload is gone afterwards."""
    from wslink import backends

    work = Path(tempfile.mkdtemp(prefix="dfm50n-launcher-"))
    os.chmod(work, 0o700)
    processes = _replace_wslink_choices(spare_sessions)
    try:
        (work / "logs").mkdir()
        (work / "uploads").mkdir(mode=0o700)
        session_options = {**options, "idle_timeout": idle_timeout, "upload_root": str(work / "uploads")}
        (work / "session.json").write_text(json.dumps(session_options), encoding="utf-8")
        ports = parse_ports(session_ports) if session_ports else free_ports(max_sessions)
        config = launcher_config(
            work,
            host=host,
            port=port,
            session_ports=ports[:max_sessions],
            session_url=session_url,
            proxy_file=proxy_file,
        )
        _write_www(work)
        print(f"DFM50N web: http://{host}:{port}/ ({len(ports[:max_sessions])} sessions at most)", flush=True)
        backends.launcher_start(SimpleNamespace(debug=False), config, backend="aiohttp")
    finally:
        for manager in processes.started:
            _stop_sessions(manager)
        shutil.rmtree(work, ignore_errors=True)
    return 0


def _write_www(work: Path):
    """The page's static files, written by a throw-away session process (the same modules a session serves)."""
    cmd = [sys.executable, "-m", "DFM50NLib.web.session", "--config", str(work / "session.json")]
    done = subprocess.run([*cmd, "--write-www", str(work / "www")], capture_output=True, text=True)
    if done.returncode != 0 or not (work / "www" / "index.html").is_file():
        raise DFM50NError(f"Could not prepare the page's files:\n{done.stderr[-2000:]}")
    loading = work / "www" / "loading.tpl"  # what trame's page shows until its session answers
    loading.write_text(
        loading.read_text(encoding="utf-8").replace(
            TRAME_LOADING, f'<div class="trame__message" role="status">{STARTING}</div>'
        ),
        encoding="utf-8",
    )


def _stop_sessions(manager):
    for proc in list(manager.processes.values()):
        proc.terminate()
    for proc in list(manager.processes.values()):
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
