"""One private session per user, on wslink's launcher (the one trame and ParaView Web deploy with): the page is
served by the launcher; each browser that opens it POSTs to /paraview/, the launcher starts one session
process (session.py) on a free port of its pool and answers that session's websocket URL and random secret,
which trame's client then connects to. The pool size is the session limit (a browser beyond it is answered
503); a session ends `idle_timeout` seconds after its browser left, and its port returns to the pool. A warm
spare session (spares.py) is started ahead, so the next browser does not wait for a cold start.

Two choices of wslink's are replaced here, both for safety: its session secret (16 characters from `random`,
which is not a cryptographic generator) by `secrets.token_hex`, and a secret the client may send in its
POST is dropped (each session always gets the launcher's own).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace

from DFM50NLib.errors import DFM50NError
from DFM50NLib.web import waiting_room
from DFM50NLib.web.session import READY_LINE
from DFM50NLib.web.spares import with_spares

ENDPOINT = "paraview"  # where trame's client POSTs for a session by default
DIRECT_SESSION_URL = "ws://${host}:${port}/ws"  # the browser reaches the session port itself (same machine)


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


def launcher_config(work: Path, *, host, port, session_ports, session_url, proxy_file, start_timeout=90):
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

    wslink.launcher.generatePassword = lambda: secrets.token_hex(32)  # never '-...', which argparse takes for an option

    class Sessions(wslink.launcher.SessionManager):
        def createSession(self, options):
            options.pop("secret", None)
            return super().createSession(options)

    class Processes(wslink.launcher.ProcessManager):
        started = []  # every manager, so the launcher can stop its sessions when it ends

        def __init__(self, config):
            super().__init__(config)
            Processes.started.append(self)

        def startProcess(self, session):
            proc = super().startProcess(session)
            if proc is not None:
                log = self._getLogFilePath(session["id"])
                threading.Thread(target=report_end, args=(proc, session["port"], log), daemon=True).start()
            return proc

        def isReady(self, session, count=0):
            """wslink calls a session that died at start 'ready' after 60 s and sends the browser to its port:
            answer 503 at once instead (report_end prints its log's end). A session still not ready a third of
            the way to the start timeout (`count`: seconds since its browser asked) has its threads' stacks
            printed (session.py: faulthandler on SIGUSR2), so a hang shows where it hangs."""
            if self.isRunning(session["id"]):
                ready = super().isReady(session, count)
                if not ready and count >= max(1, self.config["configuration"]["timeout"] // 3):
                    if not session.get("stacks_printed"):  # asked every READY_POLL_S: once is enough
                        session["stacks_printed"] = True
                        self._print_stacks(session, count)
                return ready
            print(f"DFM50N web: a session ended before it was ready (port {session['port']})", flush=True)
            raise aiohttp_web.HTTPServiceUnavailable(
                text=json.dumps({"error": "The session could not start; see the server's log."}),
                content_type="application/json",
            )

        def _print_stacks(self, session, waited):
            proc = self.processes[session["id"]]
            log = self._getLogFilePath(session["id"])
            size = log.stat().st_size
            os.kill(proc.pid, signal.SIGUSR2)
            time.sleep(0.5)  # faulthandler writes at once, from the signal handler
            stacks = log.read_text(encoding="utf-8", errors="replace")[size:][-6000:]
            print(
                f"DFM50N web: the session on port {session['port']} (pid {proc.pid}) is not ready after {waited} s; "
                f"where its threads are:\n{stacks}",
                flush=True,
            )

    aiohttp_launcher.SessionManager = Sessions
    aiohttp_launcher.ProcessManager = Processes
    wslinks_own = getattr(aiohttp_launcher.LauncherResource, "wslinks_own", aiohttp_launcher.LauncherResource)
    aiohttp_launcher.LauncherResource = with_spares(wslinks_own, spare_sessions)
    return Processes


def report_end(proc, port, log: Path):
    """Wait for one session process; when it ends other than by its idle timeout or the launcher's stop (exit
    code 0), say so in the server's output with the end of its log (a crash's traceback is there: session.py
    enables faulthandler), so an administrator, and a failing test, sees why a user's session went away."""
    code = proc.wait()
    if code != 0:
        text = log.read_text(encoding="utf-8", errors="replace") if log.is_file() else "(no log)"
        tail = text.split("\nExtension modules:")[0][-3000:]  # the stack, not faulthandler's list of modules
        how = f"signal {-code}" if code < 0 else f"exit code {code}"
        print(f"DFM50N web: the session on port {port} (pid {proc.pid}) ended with {how}:\n{tail}", flush=True)


def run_launcher(
    *,
    host,
    port,
    max_sessions,
    session_ports,
    idle_timeout,
    session_url,
    proxy_file,
    options,
    start_timeout=90,
    spare_sessions=1,
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
            start_timeout=start_timeout,
        )
        _write_www(work)
        waiting_room.adapt_page(work / "www", places=len(ports[:max_sessions]))
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


def _stop_sessions(manager):
    for proc in list(manager.processes.values()):
        proc.terminate()
    for proc in list(manager.processes.values()):
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
