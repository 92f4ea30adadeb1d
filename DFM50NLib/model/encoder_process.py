"""FCIB in a child process: the scoring service of the Slicer panel, the browser app and the Slicer console, and
the one-shot encoder of the CLI's `score`, `features` and `demo`.

Why a process. Inside Slicer the main thread keeps Python's GIL while it idles in Qt's event loop, so a Python
worker thread advances only while the panel's 100 ms poll runs (emulated: one score 78-108 s instead of 2-8 s, a
download at 8 instead of 72 MB/s). A child process runs at full speed whatever this one does with its GIL, and
Cancel can end a model load or a forward by killing it. For a one-shot command it also overlaps torch's import
with reading the case (3.2 s instead of 4.1 s; importing holds the GIL, so a thread could not).

- `shared_encoder(path, device)`: the session's warm child, FCIB loaded once. A re-score sends one 50^3 cube
  (500 KB) and gets 4096 features back. Used by the panel's ScoringJob (scene/jobs.py, polled) and by
  DFM50NLogic.scoreSegment / scoreAllSegments (console, blocking). Cancel kills it; the next score starts another.
- `one_shot_encoder()` / `prestart(argv)`: the CLI's child, started first thing, closed when the command ends.
- `DownloadProcess`: the weights download, its structure check and hash, progress streamed back.
In Slicer the child is `PythonSlicer` (sys.executable is the Slicer application there), elsewhere sys.executable.
`DFM50N_ENCODER_PROCESS=0` makes the CLI load FCIB in its own process instead.

Protocol: length-prefixed pickles over the child's stdin/stdout, between two processes of this package, never
anything from outside. Requests are answered in order, so replies need no ids; a long request may send
("progress", done, total) first. This side never blocks on a read unless asked to: a reader thread only waits
on the pipe (os.read, GIL released) and queues the bytes; `poll()` parses what has arrived. The child exits
when its stdin closes (a parent killed with SIGKILL leaves nothing behind) and runs in its own process group,
so kill() ends it and whatever it started. Its errors come back as the package's own exception types with
their messages; a crash or a kill is a DFM50NError that says so.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import os
import pickle
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

from DFM50NLib import errors
from DFM50NLib.errors import DFM50NError

ENV = "DFM50N_ENCODER_PROCESS"
_HEADER = struct.Struct("<Q")
_NO_TORCH = "--no-torch"  # a download child: torch is imported only for the final structure check
PROGRESS_INTERVAL_S = 0.1  # a download reports at most this often (the pipe is read once per poll)


def _send(stream, obj) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(data)) + data)
    stream.flush()


def _receive(stream):
    """The next message, or None at end of stream (the child's blocking read of its requests)."""
    head = stream.read(_HEADER.size)
    if len(head) < _HEADER.size:
        return None
    (n,) = _HEADER.unpack(head)
    data = stream.read(n)
    if len(data) < n:
        return None
    return pickle.loads(data)


class ChildError(DFM50NError):
    """An exception in the child that is not one of the package's own types; `kind` is its class name."""

    def __init__(self, kind, text):
        super().__init__(f"The FCIB process failed: {kind}: {text}")
        self.kind = kind


class Call:
    """One request's answer, filled in by `ServiceProcess.poll()` when it arrives."""

    def __init__(self, on_done=None):
        self.done = False
        self.value = None
        self.error = None
        self.progress = None  # (done, total) of the last progress message
        self.on_done = on_done  # turns the raw answer into `value` (and caches what the caller keeps)

    def result(self):
        if self.error is not None:
            raise self.error
        return self.value


class ServiceProcess:
    """A child running `serve()` with the calls sent to it, answered in order. Everything except the reader
    thread runs on the caller's thread (Slicer's main thread): `call()` sends, `poll()` takes what arrived."""

    def __init__(self, proc: subprocess.Popen):
        self._proc = proc
        self._calls = collections.deque()  # sent, not answered yet, oldest first
        self._buffer = bytearray()
        self._chunks = collections.deque()  # bytes from the reader thread
        self._arrived = threading.Condition()
        self._eof = False
        self._eof_at = None
        self._dead = None  # the error every later call gets, once the child is gone
        self._reader = threading.Thread(target=self._read, name="dfm50n-pipe-reader", daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self._proc.pid

    def _read(self):
        """The reader thread: waits on the pipe and hands the bytes over, nothing else."""
        fd = self._proc.stdout.fileno()
        while True:
            try:
                data = os.read(fd, 1 << 20)
            except OSError:
                data = b""
            with self._arrived:
                if data:
                    self._chunks.append(data)
                else:
                    self._eof = True
                self._arrived.notify_all()
            if not data:
                return

    def call(self, msg, on_done=None) -> Call:
        """Send a request; its answer arrives in the returned Call. The child reads a request only when it has
        answered the ones before: send a large one (a cube) when `idle`, or the write waits for the child."""
        c = Call(on_done)
        if self._dead is not None:
            c.done, c.error = True, self._dead
            return c
        self._calls.append(c)
        with contextlib.suppress(BrokenPipeError, OSError, ValueError):  # gone: its pipe's end fails the call
            _send(self._proc.stdin, msg)
        return c

    @property
    def idle(self) -> bool:
        """Nothing sent is still unanswered (after the last poll)."""
        return not self._calls

    def alive(self) -> bool:
        return self._dead is None and self._proc.poll() is None

    def poll(self) -> None:
        """Take every answer that has arrived; never blocks. A child that is gone fails the calls left."""
        with self._arrived:
            while self._chunks:
                self._buffer += self._chunks.popleft()
            eof = self._eof
        while (msg := self._take()) is not None:
            self._answer(msg)
        if eof and self._dead is None:
            self._ended(wait=False)

    def wait(self, call: Call, timeout=None):
        """Block until `call` is answered (CLI, console); its value, or its error raised."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self.poll()
            if call.done:
                return call.result()
            if self._eof:
                self._ended(wait=True)
                continue
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise DFM50NError(f"The FCIB process did not answer within {timeout:g} s.")
            with self._arrived:
                if not self._chunks and not self._eof:
                    self._arrived.wait(left)

    def _take(self):
        if len(self._buffer) < _HEADER.size:
            return None
        (n,) = _HEADER.unpack_from(self._buffer)
        end = _HEADER.size + n
        if len(self._buffer) < end:
            return None
        msg = pickle.loads(bytes(self._buffer[_HEADER.size : end]))
        del self._buffer[:end]
        return msg

    def _answer(self, msg):
        if not self._calls:
            return
        c = self._calls[0]
        if msg[0] == "progress":
            c.progress = (msg[1], msg[2])
            return
        self._calls.popleft()
        if msg[0] == "ok":
            c.value = msg[1]
            if c.on_done is not None:
                c.value = c.on_done(c.value)
        else:
            c.error = _child_error(msg[1], msg[2])
        c.done = True

    def _ended(self, wait):
        """The child's output ended: fail the calls left with its exit status (a non-blocking poll gives the
        OS up to 2 s to report it; a blocking wait waits for it)."""
        code = self._proc.poll()
        if code is None:
            if not wait:
                self._eof_at = self._eof_at or time.monotonic()
                if time.monotonic() - self._eof_at < 2.0:
                    return
            else:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    code = self._proc.wait(10)
        self._fail_all(DFM50NError(died_message(code)))
        with self._arrived:
            self._eof = True

    def _fail_all(self, error):
        """The child is gone: every call left, and every later one, gets `error`."""
        self._dead = error
        while self._calls:
            c = self._calls.popleft()
            c.done, c.error = True, error

    def kill(self) -> None:
        """End the child and whatever it started (its process group) now; returns at once. `gone()` says when
        the OS has reaped it."""
        _kill_tree(self._proc)
        if self._dead is None:
            self._fail_all(DFM50NError("The FCIB process was stopped."))

    def gone(self) -> bool:
        return self._proc.poll() is not None

    def close(self) -> None:
        """End the child now. It holds nothing to save (its hash record is written before the hash is sent)
        and a clean exit unloads torch for 0.5 s, so it is killed, then reaped."""
        self.kill()
        _end(self._proc, self._reader)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def died_message(code) -> str:
    signals = {getattr(signal, "SIGKILL", 9): "killed: out of memory?", signal.SIGSEGV: "segmentation fault"}
    how = signals.get(-code if code else None, "out of memory?")  # POSIX: minus the signal number
    return (
        f"The FCIB process ended unexpectedly (exit code {'unknown' if code is None else code}; {how}). Run "
        "again: a new process starts. If it keeps happening, free some memory (the model process needs about "
        f"1 GB), or, for a command line, set {ENV}=0 to load the model in the command's own process and see its "
        "error."
    )


def _child_error(kind, text) -> DFM50NError:
    cls = getattr(errors, kind, None)
    if isinstance(cls, type) and issubclass(cls, DFM50NError):
        return cls(text)
    return ChildError(kind, text)


class EncoderProcess(ServiceProcess):
    """The FCIBEncoder interface (features, weights_path, weights_sha256, device) served by a child process.

    Starting it returns at once; the child imports torch and loads the weights meanwhile. Blocking use:
    `ready()` waits for that and returns the child's stage times, `features()` waits too. Polled use (the
    panel): `poll()`, `loaded`, `features_call()`, `sha256_call()`.
    """

    key = None  # shared_encoder's (path, size, mtime, device) of the weights it loaded

    def __init__(self, weights_path, device="cpu", *, proc=None):
        global _prestarted
        if proc is None:
            proc, _prestarted = (_prestarted or _spawn()), None  # adopt the one prestart() began, if any
        super().__init__(proc)
        self.weights_path = Path(weights_path).expanduser().resolve()
        self.device = device
        self.timings: dict = {}
        self._sha256 = None
        self._load = self.call(("load", str(self.weights_path), device), self._loaded)

    def _loaded(self, timings):
        self.timings.update(timings)
        self.device = timings.get("device", self.device)  # "auto" resolved by the child
        return self.timings

    @property
    def loaded(self) -> bool:
        """The model is in the child (as of the last poll); a failed load is `load_error`."""
        return self._load.done and self._load.error is None

    @property
    def load_error(self):
        return self._load.error

    def ready(self) -> dict:
        """Wait until the model is loaded in the child (raises its error, e.g. a WeightsError); its timings."""
        return self.wait(self._load)

    def features_call(self, cubes_hu, batch_size=None) -> Call:
        """Ask for the features of (50,50,50) or (N,50,50,50) HU cubes; the Call's value is (N, 4096) float32."""
        import numpy as np

        def keep_time(reply):
            feats, self.timings["forward"] = reply
            return feats

        return self.call(("features", np.ascontiguousarray(cubes_hu, dtype=np.float32), batch_size), keep_time)

    def features(self, cubes_hu, batch_size=None):
        """(50,50,50) or (N,50,50,50) HU -> (N, 4096) float32, computed by the child's FCIBEncoder."""
        self.ready()
        return self.wait(self.features_call(cubes_hu, batch_size))

    def sha256_call(self) -> Call:
        def keep(sha):
            self._sha256 = sha
            return sha

        return self.call(("sha256",), keep)

    @property
    def sha256_known(self) -> bool:
        return self._sha256 is not None

    @property
    def weights_sha256(self) -> str:
        if self._sha256 is None:
            self.ready()
            self.wait(self.sha256_call())
        return self._sha256

    def __repr__(self):
        return f"EncoderProcess({str(self.weights_path)!r}, device={self.device!r}, pid={self.pid})"


class DownloadProcess(ServiceProcess):
    """`weights.download_weights(dest, **kwargs)` in a child: network, structure check and hash off this
    process. `call.progress` is (bytes done, total); the answer is the checked file's path. kill() keeps the
    partial file (written as it arrives), which the next download resumes."""

    def __init__(self, dest=None, **kwargs):
        super().__init__(_spawn(preload_torch=False))
        self.download = self.call(("download", str(dest) if dest else None, kwargs), Path)


def child_python() -> str:
    """The interpreter for the child: inside Slicer sys.executable is the Slicer application, whose Python
    is `PythonSlicer` (on PATH in Slicer's environment, else beside the application)."""
    if not _inside_slicer():
        return sys.executable
    exe = shutil.which("PythonSlicer") or shutil.which("PythonSlicer", path=str(Path(sys.executable).parent))
    if not exe:
        raise DFM50NError(
            f"PythonSlicer, Slicer's Python interpreter, was found neither on PATH nor beside {sys.executable}: "
            "the model runs in it. Reinstall Slicer, or start Slicer with its own launcher."
        )
    return exe


def _inside_slicer() -> bool:
    return getattr(sys.modules.get("slicer"), "app", None) is not None or Path(sys.executable).name.lower().startswith(
        "slicer"
    )


def _spawn(preload_torch=True) -> subprocess.Popen:
    cmd = [child_python(), "-m", "DFM50NLib.model.encoder_process"] + ([] if preload_torch else [_NO_TORCH])
    group = {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP} if os.name == "nt" else {"start_new_session": True}
    return subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=_child_env(), **group)


_prestarted = None  # a child begun by prestart(): importing torch, not yet told which weights
ONE_SHOT_COMMANDS = ("score", "features", "demo")


def prestart(argv) -> None:
    """Start the child first thing when the command line will need it, so torch imports while the command
    itself starts up (0.15 s of argument parsing, numpy and the weights lookup). The first EncoderProcess
    adopts it; `discard_prestarted()` ends it when nothing did (a bad option, missing weights)."""
    global _prestarted
    words = [a for a in argv if not a.startswith("-")]
    wanted = bool(words) and words[0] in ONE_SHOT_COMMANDS and not {"-h", "--help"} & set(argv)
    # torch already in this process (Python calling main() again): its cached encoder may serve instead
    if _prestarted is None and wanted and use_process() and not _torch_loaded():
        with contextlib.suppress(OSError):  # cannot start a process here: the command loads FCIB itself
            _prestarted = _spawn()


def _torch_loaded() -> bool:
    return "torch" in sys.modules


def discard_prestarted() -> None:
    global _prestarted
    proc, _prestarted = _prestarted, None
    if proc is not None:
        _kill_tree(proc)
        _end(proc)


def _kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL to the child's process group (it leads its own session), i.e. to it and whatever it started."""
    if proc.poll() is not None:
        return
    if os.name == "nt":
        subprocess.run(["taskkill", "/F", "/T", "/PID", str(proc.pid)], capture_output=True, check=False)
    else:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(OSError):
        proc.kill()


def _end(proc: subprocess.Popen, reader=None) -> None:
    """Reap a killed child and close its pipes (the read end only once the reader thread has seen its end:
    closing a descriptor another thread reads from could hand it a reused one)."""
    proc.wait()
    if reader is not None:
        reader.join(2.0)
    for stream in (proc.stdin, proc.stdout):
        if stream is proc.stdout and reader is not None and reader.is_alive():
            continue
        with contextlib.suppress(OSError):
            stream.close()


def _child_env() -> dict:
    """The child imports this package from wherever the parent did (a source tree not installed)."""
    import DFM50NLib

    env = dict(os.environ)
    root = Path(DFM50NLib.__file__).resolve().parents[1]
    if root.name not in ("site-packages", "dist-packages"):  # installed: found without help (and kept last)
        env["PYTHONPATH"] = os.pathsep.join([str(root)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    return env


def use_process() -> bool:
    """Off with DFM50N_ENCODER_PROCESS=0, or where there is no Python executable to start (embedded)."""
    return os.environ.get(ENV, "1") != "0" and bool(sys.executable)


@contextlib.contextmanager
def one_shot_encoder(weights=None, device="cpu"):
    """The encoder for a command that scores once: this process's cached one when already loaded (e.g.
    `main()` called again from Python), else an EncoderProcess, closed on exit. None when the weights are
    not where they are looked for: the command then reads the case first and reports a bad input before
    the missing weights (or downloads them after reading, with --download), as without this process."""
    from DFM50NLib.errors import WeightsError
    from DFM50NLib.model.fcib import cached_encoder
    from DFM50NLib.model.weights import resolve_weights

    try:
        path = resolve_weights(weights, download=False)
    except WeightsError:
        discard_prestarted()
        yield None
        return
    enc = cached_encoder(path, device)
    if enc is not None or not use_process():
        discard_prestarted()
        yield enc  # None: the caller loads it in this process
        return
    try:
        proc = EncoderProcess(path, device)
    except OSError:  # no process could be started: load FCIB in this one
        yield None
        return
    try:
        yield proc
    finally:
        proc.close()


_shared = None  # the session's warm EncoderProcess


def shared_encoder(weights_path, device="cpu") -> EncoderProcess:
    """The session's warm FCIB process for (weights file, device): the running one, or a new one (loading in
    the background) when there is none, the file changed on disk, another file or device is asked for, the
    last one was killed (Cancel) or died, or its load failed. One at a time: a model takes ~1 GB."""
    from DFM50NLib.model.fcib import _cache_key

    global _shared
    path = Path(weights_path).expanduser().resolve()
    key = _cache_key(path, device)
    if _shared is not None:
        _shared.poll()
        if _shared.key != key or not _shared.alive() or _shared.load_error is not None:  # e.g. torch installed since
            close_shared()
    if _shared is None:
        _shared = EncoderProcess(path, device, proc=_spawn())
        _shared.key = key
    return _shared


def close_shared() -> None:
    """End the warm process (at exit; tests use it to start cold)."""
    global _shared
    enc, _shared = _shared, None
    if enc is not None:
        enc.close()


atexit.register(close_shared)


# ---------------------------------------------------------------------------------------------------- child
def serve(inp, out, import_s=None, import_error=None) -> None:
    """The child's loop: load once, then answer features / sha256 / download requests until the input ends."""
    encoder = None
    while (msg := _receive(inp)) is not None:
        try:
            if msg[0] == "load":
                if import_error is not None:
                    raise DFM50NError(
                        f"PyTorch cannot be imported by {sys.executable} ({import_error}): install it with "
                        'pip install "torch>=2.2" (in Slicer the module offers to install it).'
                    )
                from DFM50NLib.model.fcib import get_encoder

                t = time.perf_counter()
                with _no_gc():
                    encoder = get_encoder(msg[1], device=_device(msg[2]))
                import torch

                reply = {"model_import": import_s, "model_load": time.perf_counter() - t, "device": encoder.device}
                reply["threads"] = torch.get_num_threads()  # features are bit-equal at equal thread counts
            elif msg[0] == "features":
                t = time.perf_counter()
                feats = _require(encoder).features(msg[1], batch_size=msg[2])
                reply = (feats, time.perf_counter() - t)
            elif msg[0] == "sha256":
                reply = _require(encoder).weights_sha256
            elif msg[0] == "download":
                reply = _download(out, msg[1], msg[2])
            else:
                raise DFM50NError(f"unknown request {msg[0]!r}")
            _send(out, ("ok", reply))
        except Exception as exc:
            _send(out, ("error", type(exc).__name__, str(exc)))


def _device(device) -> str:
    """The panel's "auto": the GPU when this process's torch sees one (decided here, not by importing torch
    in Slicer)."""
    if device in (None, "", "auto"):
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def _require(encoder):
    if encoder is None:
        raise DFM50NError("The FCIB model is not loaded (its load failed; that error was sent first).")
    return encoder


def _download(out, dest, kwargs) -> str:
    from DFM50NLib.model.weights import download_weights

    last = [0.0]

    def progress(done, total):
        now = time.monotonic()
        if now - last[0] >= PROGRESS_INTERVAL_S or (total and done >= total):
            last[0] = now
            _send(out, ("progress", done, total))

    return str(download_weights(dest=dest, progress=progress, **kwargs))


@contextlib.contextmanager
def _no_gc():
    """Python's cyclic GC off while torch imports and the model loads: they allocate ~10^6 objects that are
    never garbage, and the collections it triggers cost ~0.1 s (median of 8 cold imports here)."""
    import gc

    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # a stray print must not corrupt the replies
    t, import_error = time.perf_counter(), None
    if _NO_TORCH not in argv:
        try:
            with _no_gc():
                import torch  # noqa: F401  (at once, before the first request: the parent reads the case meanwhile)
        except ImportError as exc:
            import_error = exc
    try:
        serve(inp, out, import_s=time.perf_counter() - t, import_error=import_error)
    except (BrokenPipeError, KeyboardInterrupt):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
