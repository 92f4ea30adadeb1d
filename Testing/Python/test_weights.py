"""Locating, downloading (from a local HTTP server on 127.0.0.1) and verifying the FCIB weights, and the CLI.

The server runs in a thread, serves files from memory-mapped disk, supports Range requests, can cut a
response short, counts requests, and shuts itself down after 120 s at most.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import mmap
import os
import threading
import zipfile
from pathlib import Path

import pytest
import torch

from DFM50NLib.errors import WeightsError
from DFM50NLib.model import fcib, weights


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """Private cache; no weights from the environment; requests never goes through a proxy."""
    monkeypatch.setenv("DFM50N_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("DFM50N_FCIB_WEIGHTS", raising=False)
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setattr(weights.time, "sleep", lambda s: None)  # no back-off waits between retries


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """A valid-structure checkpoint of ~100 KB (every tensor a stride-0 view of one element)."""
    state = {
        k: torch.zeros((), dtype=v.dtype).expand(v.shape) for k, v in fcib.build_trunk("meta").state_dict().items()
    }
    path = tmp_path_factory.mktemp("tiny") / "tiny.torch"
    torch.save({"trunk_state_dict": state}, path)
    return path


class Server:
    """What to serve: `files[name] = (path, mode)`; mode "ok", "short:N" (a complete N-byte response),
    "drop:N" (announce the whole file, send N bytes, close), "drop-once:N" (drop the first time only)."""

    def __init__(self):
        self.files, self.requests, self.ranges = {}, [], []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = 30

            def log_message(self, *a):
                pass

            def do_GET(self):
                name = self.path.lstrip("/").split("?")[0]
                outer.requests.append(name)
                outer.ranges.append(self.headers.get("Range"))
                if name not in outer.files:
                    self.send_error(404)
                    return
                path, mode = outer.files[name]
                with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                    self._send(mm, name, path, mode)  # slices of an mmap are copies: 1 MiB at a time

            def _send(self, data, name, path, mode):
                total, start = len(data), 0
                rng = self.headers.get("Range")
                if rng and mode != "no-range":
                    start = int(rng.split("=")[1].split("-")[0])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{total - 1}/{total}")
                else:
                    self.send_response(200)
                end = stop = total
                if mode.startswith("short:"):
                    end = stop = start + int(mode.split(":")[1])
                elif mode.startswith("drop"):
                    stop = start + int(mode.split(":")[1])
                    if mode.startswith("drop-once"):
                        outer.files[name] = (path, "ok")
                self.send_header("Content-Length", str(end - start))
                self.send_header("Connection", "close")
                self.end_headers()
                for i in range(start, stop, 1 << 20):
                    self.wfile.write(data[i : min(i + (1 << 20), stop)])
                self.close_connection = True

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        self.timer = threading.Timer(120, self.httpd.shutdown)  # bounded even if a test hangs
        self.timer.daemon = True
        self.timer.start()

    def stop(self):
        self.timer.cancel()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.stop()


def sha(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def dl(server, name, dest, size, **kw):
    return weights.download_weights(f"{server.url}/{name}?download=1", dest, expected_size=size, **kw)


# ---------------------------------------------------------------------------------------------- resolve


def test_resolve_order_and_errors(tmp_path, tiny, monkeypatch):
    with pytest.raises(WeightsError) as info:
        weights.resolve_weights()
    msg = str(info.value)
    for needle in (
        "--weights PATH",
        "DFM50N_FCIB_WEIGHTS",
        "Slicer",
        "python -m DFM50NLib weights download",
        str(weights.cached_weights_path()),
    ):
        assert needle in msg
    cached = weights.cached_weights_path()
    cached.parent.mkdir(parents=True)
    cached.write_bytes(tiny.read_bytes())
    assert weights.resolve_weights() == cached
    other = tmp_path / "settings.torch"
    other.write_bytes(b"x")
    assert weights.resolve_weights(settings_path=other) == other
    monkeypatch.setenv("DFM50N_FCIB_WEIGHTS", str(tiny))
    assert weights.resolve_weights(settings_path=other) == tiny
    assert weights.resolve_weights(other) == other
    with pytest.raises(WeightsError, match=r"given by --weights not found: .*nope.torch does not exist"):
        weights.resolve_weights(tmp_path / "nope.torch")
    monkeypatch.setenv("DFM50N_FCIB_WEIGHTS", str(tmp_path / "gone.torch"))
    with pytest.raises(WeightsError, match=r"given by \$DFM50N_FCIB_WEIGHTS not found"):
        weights.resolve_weights()  # a set-but-wrong place is an error, not a silent fall-back to the cache


def test_cache_dir_default_is_per_user(monkeypatch):
    import platformdirs

    monkeypatch.delenv("DFM50N_CACHE_DIR")
    assert weights.cache_dir() == Path(platformdirs.user_cache_dir("DFM50N", appauthor=False)) / "fcib"
    assert Path(__file__).resolve().parents[2] not in weights.cache_dir().parents


def test_no_network_without_download(server):
    with pytest.raises(WeightsError):
        weights.resolve_weights()
    assert server.requests == []


# ---------------------------------------------------------------------------------------------- download


def test_download_full_size_checkpoint(server, random_weights, tmp_path, monkeypatch):
    """The real-size file: progress reported, checked, put in place, hash recorded; then a cache hit."""
    server.files["model_weights.torch"] = (random_weights, "ok")
    monkeypatch.setattr(weights.C, "FCIB_WEIGHTS_URL", f"{server.url}/model_weights.torch")
    size = random_weights.stat().st_size
    calls = []
    dest = weights.cached_weights_path()
    try:
        got = weights.download_weights(
            f"{server.url}/model_weights.torch", expected_size=size, progress=lambda d, t: calls.append((d, t))
        )
        assert got == dest and dest.stat().st_size == size
        assert calls[0] == (0, size) and calls[-1] == (size, size) and len(calls) > 10
        assert all(b[0] >= a[0] for a, b in zip(calls, calls[1:]))
        assert not dest.with_name(dest.name + ".part").exists()
        assert server.requests == ["model_weights.torch"]
        rec = weights.read_record(dest)
        assert rec["sha256"] == weights.file_sha256(random_weights) and rec["size"] == size
        # second call: found in the cache, no request at all
        assert weights.resolve_weights(download=True) == dest
        assert weights.download_weights(f"{server.url}/model_weights.torch", expected_size=size) == dest
        assert server.requests == ["model_weights.torch"]
    finally:
        dest.unlink(missing_ok=True)  # 738 MB: do not leave it in pytest's kept temp folders


def test_download_tiny_and_resolve(server, tiny):
    server.files["w"] = (tiny, "ok")
    dest = weights.cached_weights_path()
    assert dl(server, "w", None, tiny.stat().st_size) == dest
    assert sha(dest) == sha(tiny) == weights.read_record(dest)["sha256"]
    assert weights.resolve_weights() == dest
    enc = fcib.FCIBEncoder(dest)
    assert enc.weights_sha256 == sha(tiny)


def test_truncated_response_is_rejected(server, tiny, tmp_path):
    """Server sends a complete but short file (e.g. a broken mirror)."""
    size = tiny.stat().st_size
    server.files["w"] = (tiny, f"short:{size - 1000}")
    dest = tmp_path / "w.torch"
    with pytest.raises(WeightsError, match=rf"offers {size - 1000:,} bytes but the FCIB weights file has {size:,}"):
        dl(server, "w", dest, size)
    assert not dest.exists() and not Path(f"{dest}.part").exists()


def test_wrong_file_is_rejected(server, tiny, tmp_path):
    bare = tmp_path / "bare.torch"
    torch.save(torch.load(tiny, weights_only=True)["trunk_state_dict"], bare)
    server.files["w"] = (bare, "ok")
    dest = tmp_path / "w.torch"
    with pytest.raises(WeightsError, match="is not the FCIB checkpoint and was deleted: .*bare state dict"):
        dl(server, "w", dest, bare.stat().st_size)
    assert not dest.exists() and not Path(f"{dest}.part").exists()
    html = tmp_path / "page.html"
    html.write_text("<html>Too many requests</html>")
    server.files["h"] = (html, "ok")
    with pytest.raises(WeightsError, match="offers 30 bytes"):
        dl(server, "h", dest, 12345)
    with pytest.raises(WeightsError, match="is not a PyTorch checkpoint"):
        dl(server, "h", dest, None)  # size unknown: the structure check still refuses it
    assert not dest.exists()
    with pytest.raises(WeightsError, match="HTTP 404"):
        dl(server, "missing", dest, None)


def test_interrupted_download_leaves_nothing_valid_and_resumes(server, tiny, tmp_path):
    size = tiny.stat().st_size
    cut = 1 << 16  # the client writes what it receives in 64 KiB pieces
    assert size > cut + 1000
    server.files["w"] = (tiny, f"drop-once:{cut}")
    dest = weights.cached_weights_path()
    part = Path(f"{dest}.part")
    with pytest.raises(WeightsError, match="interrupted .*run the same command again to resume"):
        dl(server, "w", None, size, retries=0)
    assert not dest.exists() and part.stat().st_size == cut
    with pytest.raises(WeightsError):  # nothing usable is there: not found, and the .part is not loadable
        weights.resolve_weights()
    with pytest.raises(WeightsError, match="truncated or corrupt"):
        fcib.load_trunk_state(part)
    assert dl(server, "w", None, size) == dest  # retry: resumes from the .part
    assert server.ranges == [None, f"bytes={cut}-"]
    assert sha(dest) == sha(tiny) and not part.exists()


def test_retry_within_one_call_and_restart_without_range(server, tiny, tmp_path):
    size = tiny.stat().st_size
    server.files["w"] = (tiny, f"drop-once:{1 << 16}")
    dest = tmp_path / "a.torch"
    assert dl(server, "w", dest, size, retries=2) == dest and sha(dest) == sha(tiny)
    assert server.ranges == [None, f"bytes={1 << 16}-"]
    # a server that ignores Range (200) restarts cleanly instead of appending
    server.files["n"] = (tiny, "no-range")
    dest2 = tmp_path / "b.torch"
    Path(f"{dest2}.part").write_bytes(b"\0" * 100)
    assert dl(server, "n", dest2, size) == dest2 and sha(dest2) == sha(tiny)


def test_force_redownloads_and_lock_blocks_a_second_downloader(server, tiny, tmp_path):
    server.files["w"] = (tiny, "ok")
    dest = tmp_path / "w.torch"
    dl(server, "w", dest, tiny.stat().st_size)
    dl(server, "w", dest, tiny.stat().st_size)
    assert server.requests == ["w"]
    dl(server, "w", dest, tiny.stat().st_size, force=True)
    assert server.requests == ["w", "w"]
    if os.name != "nt":
        import fcntl

        with open(f"{dest}.lock", "a+b") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            with pytest.raises(WeightsError, match="another process is downloading"):
                dl(server, "w", dest, tiny.stat().st_size, force=True)


# ---------------------------------------------------------------------------------------------- hash records


def test_hash_record_detects_changed_content(tiny, tmp_path):
    path = tmp_path / "w.torch"
    path.write_bytes(tiny.read_bytes())
    assert fcib.FCIBEncoder(path).weights_sha256 == sha(tiny)
    rec = weights.read_record(path)
    assert rec["sha256"] == sha(tiny) and rec["mtime_ns"] == path.stat().st_mtime_ns
    # same size and mtime, other content (bit rot / tampering): the score must not go through
    st = path.stat()
    with zipfile.ZipFile(path) as z:  # flip a byte of the stored tensor data, keep the archive readable
        info = next(i for i in z.infolist() if i.filename.endswith("/data/0"))
        offset = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x3F
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    with pytest.raises(WeightsError, match="has changed since its SHA-256 was recorded"):
        fcib.FCIBEncoder(path).weights_sha256
    with pytest.raises(WeightsError, match="differs from the .* recorded"):
        weights.verify_weights(path)
    # a file with a new mtime is a new file: its hash becomes the record
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    info = weights.verify_weights(path)
    assert info["sha256"] == sha(path) != sha(tiny) and info["record_matched"] is None
    assert weights.verify_weights(path)["record_matched"] is True


def test_unchanged_file_is_not_hashed_again_but_any_write_is(tiny, tmp_path, monkeypatch):
    """The record is trusted while path, size, mtime, ctime and inode are unchanged (no 738 MB read beside the
    first forward); a rewrite, even with the mtime put back, changes ctime: hashed again and checked."""
    path = tmp_path / "w.torch"
    path.write_bytes(tiny.read_bytes())
    first = fcib.FCIBEncoder(path)
    assert first.weights_sha256 == sha(tiny) and first._hash._thread.ident is not None  # hashed in a thread
    rec = weights.read_record(path)
    st = path.stat()
    assert (rec["ctime_ns"], rec["inode"]) == (st.st_ctime_ns, st.st_ino)
    hashed = []
    real = weights.file_digests
    monkeypatch.setattr(weights, "file_digests", lambda *a, **k: hashed.append(a[0]) or real(*a, **k))
    again = fcib.FCIBEncoder(path)
    assert again._hash._thread.ident is None and again.weights_sha256 == sha(tiny) and hashed == []
    assert fcib.FCIBEncoder(path, verify=False).weights_sha256 == sha(tiny) and hashed == []
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # same mtime, new ctime: no longer trusted
    assert weights.trusted_sha256(path) is None
    assert fcib.FCIBEncoder(path).weights_sha256 == sha(tiny) and hashed == [path]
    assert weights.trusted_sha256(path) == sha(tiny)  # the refreshed record is trusted again
    # a record written before ctime/inode were kept is not trusted, then refreshed by the next full hash
    old = {k: v for k, v in weights.read_record(path).items() if k not in ("ctime_ns", "inode")}
    weights._record_path(path).write_text(json.dumps(old))
    assert weights.trusted_sha256(path) is None
    assert fcib.FCIBEncoder(path).weights_sha256 == sha(tiny) and len(hashed) == 2
    assert weights.trusted_sha256(path) == sha(tiny)


def test_verify_rejects_bad_structure(tmp_path):
    bad = tmp_path / "bad.torch"
    torch.save({"trunk_state_dict": {"conv1.weight": torch.zeros(2)}}, bad)
    with pytest.raises(WeightsError, match="321 missing key"):
        weights.verify_weights(bad)


# ---------------------------------------------------------------------------------------------- CLI


def run_cli(*argv):
    from DFM50NLib.cli import main

    return main(list(argv))


def test_cli_status_path_verify(tiny, capsys, monkeypatch):
    assert run_cli("weights", "path") == 1
    assert "python -m DFM50NLib weights download" in capsys.readouterr().err
    assert run_cli("weights", "status") == 1
    out = capsys.readouterr().out
    assert "(not set)" in out and "missing" in out and "in use: none" in out
    monkeypatch.setenv("DFM50N_FCIB_WEIGHTS", str(tiny))
    assert run_cli("weights", "path") == 0
    assert capsys.readouterr().out.strip() == str(tiny)
    assert run_cli("weights", "verify") == 1  # intact, but not the published file: one verdict, exit 1
    out = capsys.readouterr().out
    assert out.startswith("NOT THE PUBLISHED FILE: ") and "OK" not in out
    assert f"sha256:    {sha(tiny)}" in out and "recorded now" in out
    assert run_cli("weights", "status") == 0
    out = capsys.readouterr().out
    assert f"sha256 {sha(tiny)}" in out and f"in use: {tiny}" in out
    assert run_cli("weights", "verify", str(tiny)) == 1
    assert "matches the hash recorded" in capsys.readouterr().out


def test_cli_download_progress_bar(server, tiny, capsys, monkeypatch):
    server.files["w"] = (tiny, "ok")
    monkeypatch.setattr(weights.C, "FCIB_WEIGHTS_SIZE", tiny.stat().st_size)
    assert run_cli("weights", "download", "--url", f"{server.url}/w") == 0
    captured = capsys.readouterr()
    assert "100.0%" in captured.err and "downloaded and checked" in captured.out
    assert run_cli("weights", "download", "--url", f"{server.url}/w") == 0
    assert "already downloaded" in capsys.readouterr().out and server.requests == ["w"]
    bad = tiny.with_name("short.bin")
    bad.write_bytes(b"nope")
    server.files["b"] = (bad, "ok")
    assert run_cli("weights", "download", "--url", f"{server.url}/b", "--force") == 2
    assert "offers 4 bytes" in capsys.readouterr().err


def test_cli_help_is_readable(capsys):
    with pytest.raises(SystemExit):
        run_cli("weights", "--help")
    out = capsys.readouterr().out
    assert "3 ways" in out and "DFM50N_FCIB_WEIGHTS" in out and "Offline" in out


def test_complete_leftover_part_is_checked_not_refetched(server, tiny, tmp_path):
    server.files["w"] = (tiny, "ok")
    dest = tmp_path / "w.torch"
    Path(f"{dest}.part").write_bytes(tiny.read_bytes())  # e.g. killed during the structure check
    assert dl(server, "w", dest, tiny.stat().st_size) == dest and server.requests == []
    garbage = tmp_path / "g.torch"
    Path(f"{garbage}.part").write_bytes(b"\0" * tiny.stat().st_size)  # same size, not a checkpoint
    with pytest.raises(WeightsError, match="not the FCIB checkpoint and was deleted"):
        dl(server, "w", garbage, tiny.stat().st_size)
    assert not garbage.exists() and not Path(f"{garbage}.part").exists()
