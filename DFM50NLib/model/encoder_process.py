"""FCIB in a sibling process for commands that score once: torch loads while the case is being read.

Why: a cold `score` imported torch (~1.5 s) and read the CT (~1.4 s) one after the other. Importing holds
the GIL, so a thread could not overlap the two (measured: 3.2 s instead of 4.1 s); a second process can,
on the second core. The CLI's one-shot commands (`score`, `features`, `demo`) use it when this process
has not loaded the model yet; Slicer, the browser app and `batch` keep one in-process encoder for many
cases (model/fcib.get_encoder). `DFM50N_ENCODER_PROCESS=0` turns it off.

The child runs `python -m DFM50NLib.model.encoder_process` and talks over its stdin/stdout: length-prefixed
pickles between two processes of this package, never anything from outside. It exits when its stdin
closes, so a parent killed with SIGKILL does not leave it behind; a parent done with it kills it. Its
errors come back as the package's own exception types with their messages; anything else (a crash, a
kill) is a DFM50NError saying so.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import struct
import subprocess
import sys
import time
from pathlib import Path

from DFM50NLib import errors
from DFM50NLib.errors import DFM50NError

ENV = "DFM50N_ENCODER_PROCESS"
_HEADER = struct.Struct("<Q")


def _send(stream, obj) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(data)) + data)
    stream.flush()


def _receive(stream):
    """The next message, or None at end of stream."""
    head = stream.read(_HEADER.size)
    if len(head) < _HEADER.size:
        return None
    (n,) = _HEADER.unpack(head)
    data = stream.read(n)
    if len(data) < n:
        return None
    return pickle.loads(data)


class EncoderProcess:
    """The FCIBEncoder interface (features, weights_path, weights_sha256, device) served by a child process.

    Starting it returns at once; the child imports torch and loads the weights meanwhile. `ready()` waits
    for that and returns the child's own stage times; `features()` waits for it too.
    """

    def __init__(self, weights_path, device="cpu"):
        self.weights_path = Path(weights_path).expanduser().resolve()
        self.device = device
        self.timings: dict = {}
        self._sha256 = None
        self._loaded = False
        self._load_error = None
        global _prestarted
        self._proc, _prestarted = (_prestarted or _spawn()), None  # adopt the one prestart() began, if any
        self._request(("load", str(self.weights_path), device))

    def ready(self) -> dict:
        """Wait until the model is loaded in the child (raises its error, e.g. a WeightsError); its timings."""
        if self._load_error is not None:
            raise self._load_error
        if not self._loaded:
            try:
                self.timings.update(self._reply())
            except DFM50NError as exc:
                self._load_error = exc  # asked again, the same error (the child sent it once)
                raise
            self._loaded = True
        return self.timings

    def features(self, cubes_hu, batch_size=None):
        """(50,50,50) or (N,50,50,50) HU -> (N, 4096) float32, computed by the child's FCIBEncoder."""
        import numpy as np

        self.ready()
        self._request(("features", np.ascontiguousarray(cubes_hu, dtype=np.float32), batch_size))
        feats, seconds = self._reply()
        self.timings["forward"] = seconds
        return feats

    @property
    def weights_sha256(self) -> str:
        if self._sha256 is None:
            self.ready()
            self._request(("sha256",))
            self._sha256 = self._reply()
        return self._sha256

    def close(self) -> None:
        """End the child now. It holds nothing to save (its hash record is written before the hash is sent)
        and a clean exit unloads torch for 0.5 s, so it is killed, then reaped."""
        _end(self._proc)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return f"EncoderProcess({str(self.weights_path)!r}, device={self.device!r}, pid={self._proc.pid})"

    def _request(self, msg) -> None:
        try:
            _send(self._proc.stdin, msg)
        except (BrokenPipeError, OSError, ValueError):
            self._died()

    def _reply(self):
        msg = _receive(self._proc.stdout)
        if msg is None:
            self._died()
        if msg[0] == "ok":
            return msg[1]
        _, kind, text = msg
        cls = getattr(errors, kind, None)
        if isinstance(cls, type) and issubclass(cls, DFM50NError):
            raise cls(text)
        raise DFM50NError(f"The FCIB process failed: {kind}: {text}")

    def _died(self):
        code = self._proc.wait()
        raise DFM50NError(
            f"The FCIB process ended unexpectedly (exit code {code}; out of memory?). Run again; if it keeps "
            f"happening, set {ENV}=0 to load the model in this process and see its error."
        )


def _spawn() -> subprocess.Popen:
    cmd = [sys.executable, "-m", "DFM50NLib.model.encoder_process"]
    return subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=_child_env())


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
        _end(proc)


def _end(proc: subprocess.Popen) -> None:
    """Close the pipes, kill the child if it still runs, reap it."""
    for stream in (proc.stdin, proc.stdout):
        with contextlib.suppress(OSError):
            stream.close()
    if proc.poll() is None:
        proc.kill()
    proc.wait()


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


# ---------------------------------------------------------------------------------------------------- child
def serve(inp, out, import_s=None, import_error=None) -> None:
    """The child's loop: load once, then answer features / sha256 requests until the input ends."""
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
                    encoder = get_encoder(msg[1], device=msg[2])
                import torch

                reply = {"model_import": import_s, "model_load": time.perf_counter() - t}
                reply["threads"] = torch.get_num_threads()  # features are bit-equal at equal thread counts
            elif msg[0] == "features":
                t = time.perf_counter()
                feats = encoder.features(msg[1], batch_size=msg[2])
                reply = (feats, time.perf_counter() - t)
            elif msg[0] == "sha256":
                reply = encoder.weights_sha256
            else:
                raise DFM50NError(f"unknown request {msg[0]!r}")
            _send(out, ("ok", reply))
        except Exception as exc:
            _send(out, ("error", type(exc).__name__, str(exc)))


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


def main() -> int:
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # a stray print must not corrupt the replies
    t, import_error = time.perf_counter(), None
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
