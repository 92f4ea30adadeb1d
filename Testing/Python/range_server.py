"""A local HTTP server for one file, with Range requests, in its own process (so that the test process's GIL,
held by the Slicer-like event loop, cannot slow it): a stand-in for Zenodo.

    python range_server.py FILE [--stall-after BYTES]

Prints its port on the first line of stdout. With --stall-after, the first request that starts at byte 0 stops
sending after BYTES and keeps the connection open (a download to cancel part-way); later requests are served
in full.
"""

from __future__ import annotations

import argparse
import contextlib
import http.server
import subprocess
import sys
import threading
import time
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("file", type=Path)
    ap.add_argument("--stall-after", type=int, default=None)
    args = ap.parse_args()
    size = args.file.stat().st_size
    stall = {"left": 1 if args.stall_after is not None else 0}
    lock = threading.Lock()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            rng = self.headers.get("Range")
            start = int(rng.split("=")[1].split("-")[0]) if rng else 0
            with lock:
                stalls = start == 0 and stall["left"] > 0
                stall["left"] -= stalls
            self.send_response(206 if start else 200)
            if start:
                self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
            self.send_header("Content-Length", str(size - start))
            self.end_headers()
            end = args.stall_after if stalls else size
            with open(args.file, "rb") as f:
                f.seek(start)
                pos = start
                while pos < end:
                    block = f.read(min(1 << 20, end - pos))
                    self.wfile.write(block)
                    pos += len(block)
            if stalls:
                self.wfile.flush()
                time.sleep(60)  # until the client is killed (and this process with the test)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    server.serve_forever()
    return 0


@contextlib.contextmanager
def serving(path, stall_after=None):
    """Serve `path` from a child process for the `with` block; yields its URL."""
    cmd = [sys.executable, __file__, str(path)] + ([] if stall_after is None else ["--stall-after", str(stall_after)])
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        port = int(proc.stdout.readline())
        yield f"http://127.0.0.1:{port}/{Path(path).name}"
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()


if __name__ == "__main__":
    sys.exit(main())
