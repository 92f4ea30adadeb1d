"""FCIB foundation-model encoder (METHOD.md §2.6-2.7): MONAI's ResNet50 trunk -> 4096 features.

Re-implements the ~20 lines of fmcib 1.0.0 (MIT) that build and load the model, because fmcib itself
cannot be installed in Slicer's Python; Testing/Python/test_fcib_equality.py proves the features equal.
The network itself is `resnet3d.FCIBTrunk`, a plain-torch copy of the MONAI ResNet50 fmcib builds
(importing MONAI alone took 1.7 s of a 3 s load budget).
Unlike fmcib's loader (strict=False: a wrong file silently gives random features), loading is strict.

torch is imported inside functions: importing this module is free.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from DFM50NLib.constants import (
    CUBE_SIZE,
    HU_DIVISOR,
    HU_SUBTRAHEND,
    N_FCIB_FEATURES,
)
from DFM50NLib.errors import DFM50NError, InputError
from DFM50NLib.model.checkpoint import build_trunk, load_trunk_state

DEFAULT_BATCH_SIZE = 4  # cubes per forward: ~0.1 GB of activations each on CPU


def save_random_checkpoint(path, seed=0):
    """Write a randomly initialised trunk in the real checkpoint format {"trunk_state_dict": ...}.

    For tests and the Slicer self-test: exercises the real loading code without the 738 MB download.
    """
    import torch

    from DFM50NLib.atomic import atomic_path

    torch.manual_seed(seed)
    trunk = build_trunk("cpu")
    with atomic_path(path) as tmp:
        torch.save({"trunk_state_dict": trunk.state_dict()}, tmp)
    return path


def load_trunk(path, device="cpu"):
    """The FCIB trunk with the weights of `path`, in eval mode, on `device`.

    Built on the meta device and given the memory-mapped tensors themselves (assign=True): no random
    initialisation, no copy; pages are read from the file (or the page cache) when the forward needs them.
    """
    import torch

    state = load_trunk_state(path)
    trunk = build_trunk("meta")
    trunk.load_state_dict(state, strict=True, assign=True)
    trunk.eval()
    for p in trunk.parameters():
        p.requires_grad_(False)
    if torch.device(device).type != "cpu":
        use_full_fp32(device)
        trunk.to(device)
    return trunk


def use_full_fp32(device) -> None:
    """Full FP32 and deterministic cuDNN for a CUDA forward: the same score on every device (METHOD.md §2.6).

    PyTorch lets cuDNN convolutions use TF32 (a 10-bit mantissa) by default on Ampere and newer GPUs:
    FCIB's features then differ from the CPU's by up to 4e-3 and the score by up to 0.02, enough to move
    a lesion near the 0.25 threshold to the other risk class. With TF32 off they agree to ~2e-5 and
    repeat exactly. These are process-wide switches: set when a CUDA encoder is built and again before
    each of its forwards (another library in the process may have turned TF32 back on).
    No-op for the CPU, whose convolutions are FP32 already.
    """
    import torch

    if torch.device(device).type != "cuda":
        return
    # the legacy setters also set torch >= 2.9's per-operator fp32_precision (cuDNN conv, RNN, matmul) to "ieee"
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


# ----------------------------------------------------------------------------------------------------------------
# input


def normalize(cubes_hu) -> np.ndarray:
    """FCIB's input x = (HU + 1024) / 3072 in float32, no clipping (METHOD.md §2.6).

    Bit-equal to fmcib's NormalizeIntensityd(subtrahend=-1024, divisor=3072) on the float32 image its
    LoadImaged yields: cast to float32, subtract, then a true division (not a multiplication by 1/3072,
    which rounds differently) -- all in float32, as MONAI does it in torch.
    """
    x = np.asarray(cubes_hu, dtype=np.float32)
    return (x - np.float32(HU_SUBTRAHEND)) / np.float32(HU_DIVISOR)


def _as_batch(cubes_hu) -> np.ndarray:
    """(50,50,50) or (N,50,50,50) real HU values -> (N,50,50,50) float32; InputError otherwise."""
    a = np.asarray(cubes_hu)
    if a.dtype.kind not in "biuf":
        raise InputError(f"FCIB input must be real numbers (HU), got dtype {a.dtype}.")
    if a.shape == (CUBE_SIZE,) * 3:
        a = a[None]
    if a.ndim != 4 or a.shape[1:] != (CUBE_SIZE,) * 3:
        raise InputError(
            f"FCIB input must be a {CUBE_SIZE}^3 cube or a stack (N, {CUBE_SIZE}, {CUBE_SIZE}, "
            f"{CUBE_SIZE}) of them, got shape {a.shape}."
        )
    a = np.asarray(a, dtype=np.float32)
    bad = ~np.isfinite(a)
    if bad.any():
        n = np.flatnonzero(bad.reshape(len(a), -1).any(axis=1))
        raise InputError(
            f"FCIB input cube(s) {n.tolist()[:10]} contain {int(bad.sum())} NaN/infinite value(s); "
            "the CT must be finite HU values (fill gaps with -1024, air)."
        )
    return a


# ----------------------------------------------------------------------------------------------------------------
# encoder


def _check_device(device) -> str:
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise DFM50NError(f"unknown device {device!r} ({exc}); use 'cpu' or 'cuda'.") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DFM50NError(
            f"device {device!r} was asked for but this PyTorch ({torch.__version__}) sees no CUDA "
            "GPU: use device 'cpu', or install a CUDA build of PyTorch on a machine with a GPU."
        )
    if dev.type not in ("cpu", "cuda"):
        raise DFM50NError(f"device {device!r} is not supported; use 'cpu' or 'cuda'.")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise DFM50NError(f"device {device!r}: only {torch.cuda.device_count()} CUDA GPU(s) visible.")
    return str(dev)


class FCIBEncoder:
    """The loaded FCIB trunk: HU cubes -> 4096 features. Build it with get_encoder() (cached).

    The weights' SHA-256 comes from the record when the file is unchanged since it was hashed (same path,
    size, mtime, ctime, inode), else it is computed in a background thread while the model loads and runs;
    reading `weights_sha256` waits for it and raises WeightsError if the file no longer matches the hash
    recorded for it (same path, size and mtime) -- see DFM50NLib.model.weights for the record.
    """

    def __init__(self, weights_path, device="cpu", *, batch_size=DEFAULT_BATCH_SIZE, verify=True):
        self.weights_path = Path(weights_path).expanduser().resolve()
        self.device = _check_device(device)
        self.batch_size = max(1, int(batch_size))
        st = self.weights_path.stat() if self.weights_path.exists() else None
        self._hash = _HashJob(self.weights_path, st) if (verify and st is not None) else None
        self.model = load_trunk(self.weights_path, self.device)  # hashing overlaps with loading

    @property
    def weights_sha256(self) -> str:
        """SHA-256 of the weights file (waits for the background hash; raises if it mismatches the record)."""
        if self._hash is None:  # verify=False: hash (or read the record) only when asked
            self._hash = _HashJob(self.weights_path, self.weights_path.stat(), start=False)
            if self._hash._sha is None:
                self._hash._run()
        return self._hash.result()

    def features(self, cubes_hu, batch_size=None) -> np.ndarray:
        """(50,50,50) or (N,50,50,50) HU -> (N, 4096) float32 FCIB features, `batch_size` cubes per forward."""
        import torch

        x = _as_batch(cubes_hu)
        out = np.empty((len(x), N_FCIB_FEATURES), dtype=np.float32)
        bs = max(1, int(batch_size or self.batch_size))
        use_full_fp32(self.device)
        with torch.inference_mode():
            for i in range(0, len(x), bs):
                t = torch.from_numpy(normalize(x[i : i + bs]))[:, None].to(self.device)
                out[i : i + bs] = self.model(t).float().cpu().numpy()
        return out

    def __repr__(self):
        return f"FCIBEncoder({str(self.weights_path)!r}, device={self.device!r})"


class _HashJob:
    """SHA-256 of the weights in a daemon thread, checked against (and else stored in) the hash record."""

    def __init__(self, path: Path, st, start=True):
        from DFM50NLib.model.weights import trusted_sha256

        self.path, self.st = path, st
        self._sha = trusted_sha256(path, st)  # unchanged since hashed: no 738 MB read beside the forward
        self._error = None
        self._thread = threading.Thread(target=self._run, name="dfm50n-sha256", daemon=True)
        if start and self._sha is None:
            self._thread.start()

    def _run(self):
        from DFM50NLib.model.weights import check_against_record

        try:
            self._sha = check_against_record(self.path, self.st)
        except BaseException as exc:  # re-raised in the caller's thread by result()
            self._error = exc

    def result(self) -> str:
        if self._thread.ident is not None:
            self._thread.join()
        if self._error is not None:
            raise self._error
        return self._sha


_encoders: dict = {}
_encoders_lock = threading.Lock()


def get_encoder(weights_path, device="cpu") -> FCIBEncoder:
    """The encoder for (weights file, device), built once per process and reused (thread-safe).

    A file replaced on disk (other size or mtime) gets a new encoder.
    """
    path = Path(weights_path).expanduser()
    if not path.exists():
        load_trunk_state(path)  # raises the "not found, here is how to provide it" error
    path = path.resolve()
    dev = _check_device(device)
    key = _cache_key(path, dev)
    with _encoders_lock:
        enc = _encoders.get(key)
        if enc is None:
            for old in [k for k in _encoders if k[0] == key[0] and k[3] == dev]:
                del _encoders[old]  # the file was replaced: drop the stale model
            enc = _encoders[key] = FCIBEncoder(path, dev)
        return enc


def cached_encoder(weights_path, device="cpu"):
    """The encoder get_encoder would return if it is already built in this process, else None (no loading)."""
    import sys

    if "torch" not in sys.modules or not _encoders:
        return None  # nothing loaded: do not import torch just to find out
    try:
        key = _cache_key(Path(weights_path).expanduser().resolve(), _check_device(device))
    except (OSError, DFM50NError):
        return None
    with _encoders_lock:
        return _encoders.get(key)


def _cache_key(path: Path, device: str) -> tuple:
    """(resolved path, size, mtime, device): a file replaced on disk is another key."""
    st = path.stat()
    return (str(path), st.st_size, st.st_mtime_ns, device)


def clear_encoder_cache() -> None:
    """Forget every cached encoder (frees the models once nothing else holds them)."""
    with _encoders_lock:
        _encoders.clear()
