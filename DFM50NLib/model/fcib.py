"""FCIB foundation-model encoder (SPEC §2.6-2.7): MONAI's ResNet50 trunk -> 4096 features.

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

from DFM50NLib.constants import (CUBE_SIZE, FCIB_PARAMETER_COUNT, FCIB_STATE_DICT_ENTRIES, FCIB_WEIGHTS_SIZE, HU_DIVISOR,
                        HU_SUBTRAHEND, N_FCIB_FEATURES)
from DFM50NLib.errors import DFM50NError, InputError, WeightsError

DEFAULT_BATCH_SIZE = 4  # cubes per forward: ~0.1 GB of activations each on CPU
_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's format since torch 1.6


def build_trunk(device="cpu"):
    """The exact FCIB v1.0.0 trunk (fmcib.models.fmcib_model's MONAI resnet50), without weights.

    device="meta" allocates nothing; weights are then attached with load_state_dict(assign=True).
    """
    import contextlib

    import torch

    from DFM50NLib.model.resnet3d import FCIBTrunk

    skip = _skip_init() if torch.device(device).type == "meta" else contextlib.nullcontext()
    with torch.device(device), skip:
        return FCIBTrunk(in_channels=1)


def _skip_init():
    """Make weight initialisation a no-op (a thread-local torch function mode), for meta-device builds.

    Initialising meta tensors would do nothing anyway, but goes through torch's decompositions, which import
    torch._dynamo on first use: ~1.5 s per process, a third of the load time.
    """
    from torch.overrides import TorchFunctionMode

    class SkipInit(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if getattr(func, "__name__", "") in _INIT_FUNCS:
                return args[0] if args else kwargs["tensor"]
            return func(*args, **kwargs)

    return SkipInit()


_INIT_FUNCS = frozenset({"normal_", "uniform_", "fill_", "zero_", "constant_", "ones_", "zeros_", "kaiming_normal_",
                         "kaiming_uniform_", "xavier_normal_", "xavier_uniform_", "trunc_normal_"})


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


# ----------------------------------------------------------------------------------------------------------------
# strict loading

_spec_lock = threading.Lock()
_spec = None  # {key: (shape, dtype)} and the parameter names of the trunk, computed once


def _expected():
    """(state-dict spec, parameter names) of the trunk, from a meta-device build (no memory, ~0.1 s)."""
    global _spec
    with _spec_lock:
        if _spec is None:
            trunk = build_trunk("meta")
            spec = {k: (tuple(v.shape), v.dtype) for k, v in trunk.state_dict().items()}
            params = frozenset(k for k, _ in trunk.named_parameters())
            n_params = sum(int(np.prod(spec[k][0])) for k in params)
            if len(spec) != FCIB_STATE_DICT_ENTRIES or n_params != FCIB_PARAMETER_COUNT:  # a broken edit
                raise DFM50NError(
                    f"resnet3d.FCIBTrunk has {len(spec)} state-dict entries and {n_params:,} parameters, not "
                    f"FCIB's {FCIB_STATE_DICT_ENTRIES} and {FCIB_PARAMETER_COUNT:,}: the network code was changed; "
                    "restore DFM50NLib/resnet3d.py from the release.")
            _spec = (spec, params)
        return _spec


def _first(items, n=5):
    items = sorted(items)
    more = f" and {len(items) - n} more" if len(items) > n else ""
    return ", ".join(items[:n]) + more


def _torch_load(path: Path, size: int):
    """torch.load, memory-mapped and without running code; failures become WeightsError saying why."""
    import pickle

    import torch

    with open(path, "rb") as f:
        head = f.read(4)
    refetch = ("delete it and download again (python -m DFM50NLib weights download --force), "
               "or point to a good copy")
    try:
        # mmap: tensors stay in the page cache, nothing is copied; only zip-format files can be mapped
        return torch.load(path, map_location="cpu", weights_only=True, mmap=head == _ZIP_MAGIC)
    except pickle.UnpicklingError as exc:
        pickled = head == _ZIP_MAGIC or head[:1] == b"\x80"  # zip, or the legacy format's pickle header
        if pickled and ("weights only" in str(exc).lower() or "weights_only" in str(exc).lower()):
            raise WeightsError(
                f"{path} contains Python objects other than tensors, so it is not the FCIB checkpoint "
                "(refusing to unpickle it: that could run code). " + refetch[0].upper() + refetch[1:] + ".") from None
        cause = exc
    except Exception as exc:  # zip reader errors are RuntimeError; truncated pickles EOFError, ...
        cause = exc
    if head != _ZIP_MAGIC and head[:1] != b"\x80":
        raise WeightsError(
            f"{path} is not a PyTorch checkpoint ({size:,} bytes, starts with {head!r}; an interrupted download "
            f"or an HTML error page saved in its place?): {refetch}.") from None
    raise WeightsError(
        f"{path} is truncated or corrupt ({size:,} bytes; the FCIB v1.0.0 file has {FCIB_WEIGHTS_SIZE:,}): "
        f"{refetch}. [{type(cause).__name__}: {str(cause).strip()[:200]}]") from None


def load_trunk_state(path) -> dict:
    """The FCIB trunk's state dict from `path` (memory-mapped), after strict checks.

    Raises WeightsError naming what is wrong: no file, not a checkpoint, truncated, bare state dict,
    missing / unexpected keys, shape or dtype mismatches, wrong entry or parameter counts.
    """
    import torch

    from DFM50NLib.model.weights import how_to_provide

    path = Path(path).expanduser()
    if not path.exists():
        raise WeightsError(f"FCIB weights not found: {path} does not exist. {how_to_provide()}")
    if path.is_dir():
        raise WeightsError(f"FCIB weights: {path} is a folder; give the file itself (model_weights.torch).")
    size = path.stat().st_size
    if size == 0:
        raise WeightsError(f"{path} is empty (0 bytes): delete it and download again "
                           "(python -m DFM50NLib weights download --force).")
    ckpt = _torch_load(path, size)

    fmt = "FCIB checkpoints are {'trunk_state_dict': <state dict>}"
    if not isinstance(ckpt, dict):
        raise WeightsError(f"{path} holds a {type(ckpt).__name__}, not a dict: {fmt}; this is not the FCIB file.")
    if "trunk_state_dict" not in ckpt:
        if ckpt and all(isinstance(v, torch.Tensor) for v in ckpt.values()):
            raise WeightsError(
                f"{path} looks like a bare state dict ({len(ckpt)} tensors, e.g. {next(iter(ckpt))!r}); {fmt}. "
                "If you saved it yourself, save {'trunk_state_dict': model.state_dict()} instead.")
        raise WeightsError(f"{path} has no 'trunk_state_dict' (top-level keys: {_first(map(str, ckpt))}); {fmt}.")
    state = ckpt["trunk_state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path}: 'trunk_state_dict' is not a dict of tensors; {fmt}.")

    spec, params = _expected()
    problems = []
    missing = set(spec) - set(state)
    unexpected = set(state) - set(spec)
    if missing:
        problems.append(f"{len(missing)} missing key(s): {_first(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s): {_first(unexpected)}")
    wrong = [f"{k} {tuple(state[k].shape)} {str(state[k].dtype)[6:]} (expected {spec[k][0]} {str(spec[k][1])[6:]})"
             for k in sorted(set(spec) & set(state))
             if tuple(state[k].shape) != spec[k][0] or state[k].dtype != spec[k][1]]
    if wrong:
        problems.append(f"{len(wrong)} shape/dtype mismatch(es): {_first(wrong, 3)}")
    n_params = sum(state[k].numel() for k in params if k in state)
    if not problems and (len(state) != FCIB_STATE_DICT_ENTRIES or n_params != FCIB_PARAMETER_COUNT):
        problems.append(f"{len(state)} entries and {n_params:,} parameters "
                        f"(expected {FCIB_STATE_DICT_ENTRIES} and {FCIB_PARAMETER_COUNT:,})")
    if problems:
        raise WeightsError(f"{path} is not the FCIB v1.0.0 trunk: " + "; ".join(problems) +
                           ". Use the published model_weights.torch (python -m DFM50NLib weights download).")
    return state


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
        trunk.to(device)
    return trunk


# ----------------------------------------------------------------------------------------------------------------
# input

def normalize(cubes_hu) -> np.ndarray:
    """FCIB's input x = (HU + 1024) / 3072 in float32, no clipping (SPEC §2.6).

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
        raise InputError(f"FCIB input must be a {CUBE_SIZE}^3 cube or a stack (N, {CUBE_SIZE}, {CUBE_SIZE}, "
                         f"{CUBE_SIZE}) of them, got shape {a.shape}.")
    a = np.asarray(a, dtype=np.float32)
    bad = ~np.isfinite(a)
    if bad.any():
        n = np.flatnonzero(bad.reshape(len(a), -1).any(axis=1))
        raise InputError(f"FCIB input cube(s) {n.tolist()[:10]} contain {int(bad.sum())} NaN/infinite value(s); "
                         "the CT must be finite HU values (fill gaps with -1024, air).")
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
        raise DFM50NError(f"device {device!r} was asked for but this PyTorch ({torch.__version__}) sees no CUDA "
                          "GPU: use device 'cpu', or install a CUDA build of PyTorch on a machine with a GPU.")
    if dev.type not in ("cpu", "cuda"):
        raise DFM50NError(f"device {device!r} is not supported; use 'cpu' or 'cuda'.")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise DFM50NError(f"device {device!r}: only {torch.cuda.device_count()} CUDA GPU(s) visible.")
    return str(dev)


class FCIBEncoder:
    """The loaded FCIB trunk: HU cubes -> 4096 features. Build it with get_encoder() (cached).

    The weights' SHA-256 is computed in a background thread while the model loads and runs; reading
    `weights_sha256` waits for it and raises WeightsError if the file no longer matches the hash recorded
    for it (same path, size and mtime) -- see DFM50NLib.model.weights for the record.
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
            self._hash._run()
        return self._hash.result()

    def features(self, cubes_hu, batch_size=None) -> np.ndarray:
        """(50,50,50) or (N,50,50,50) HU -> (N, 4096) float32 FCIB features, `batch_size` cubes per forward."""
        import torch

        x = _as_batch(cubes_hu)
        out = np.empty((len(x), N_FCIB_FEATURES), dtype=np.float32)
        bs = max(1, int(batch_size or self.batch_size))
        with torch.inference_mode():
            for i in range(0, len(x), bs):
                t = torch.from_numpy(normalize(x[i:i + bs]))[:, None].to(self.device)
                out[i:i + bs] = self.model(t).float().cpu().numpy()
        return out

    def __repr__(self):
        return f"FCIBEncoder({str(self.weights_path)!r}, device={self.device!r})"


class _HashJob:
    """SHA-256 of the weights in a daemon thread, checked against (and else stored in) the hash record."""

    def __init__(self, path: Path, st, start=True):
        self.path, self.st = path, st
        self._sha = self._error = None
        self._thread = threading.Thread(target=self._run, name="dfm50n-sha256", daemon=True)
        if start:
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
    st = path.stat()
    dev = _check_device(device)
    key = (str(path), st.st_size, st.st_mtime_ns, dev)
    with _encoders_lock:
        enc = _encoders.get(key)
        if enc is None:
            for old in [k for k in _encoders if k[0] == key[0] and k[3] == dev]:
                del _encoders[old]  # the file was replaced: drop the stale model
            enc = _encoders[key] = FCIBEncoder(path, dev)
        return enc


def clear_encoder_cache() -> None:
    """Forget every cached encoder (frees the models once nothing else holds them)."""
    with _encoders_lock:
        _encoders.clear()

