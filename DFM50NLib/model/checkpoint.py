"""The FCIB trunk built without weights, and its checkpoint read strictly (every key, shape, dtype and count).

Shared by `fcib` (loading for scoring) and `weights` (checking a download), so neither imports the other.
torch is imported inside functions.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from DFM50NLib.constants import FCIB_PARAMETER_COUNT, FCIB_STATE_DICT_ENTRIES, FCIB_WEIGHTS_SIZE
from DFM50NLib.errors import DFM50NError, WeightsError
from DFM50NLib.model.paths import how_to_provide

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


_INIT_FUNCS = frozenset(
    {
        "normal_",
        "uniform_",
        "fill_",
        "zero_",
        "constant_",
        "ones_",
        "zeros_",
        "kaiming_normal_",
        "kaiming_uniform_",
        "xavier_normal_",
        "xavier_uniform_",
        "trunc_normal_",
    }
)


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
                    "restore DFM50NLib/resnet3d.py from the release."
                )
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
    refetch = "delete it and download again (python -m DFM50NLib weights download --force), or point to a good copy"
    try:
        # mmap: tensors stay in the page cache, nothing is copied; only zip-format files can be mapped
        return torch.load(path, map_location="cpu", weights_only=True, mmap=head == _ZIP_MAGIC)
    except pickle.UnpicklingError as exc:
        pickled = head == _ZIP_MAGIC or head[:1] == b"\x80"  # zip, or the legacy format's pickle header
        if pickled and ("weights only" in str(exc).lower() or "weights_only" in str(exc).lower()):
            raise WeightsError(
                f"{path} contains Python objects other than tensors, so it is not the FCIB checkpoint "
                "(refusing to unpickle it: that could run code). " + refetch[0].upper() + refetch[1:] + "."
            ) from None
        cause = exc
    except Exception as exc:  # zip reader errors are RuntimeError; truncated pickles EOFError, ...
        cause = exc
    if head != _ZIP_MAGIC and head[:1] != b"\x80":
        raise WeightsError(
            f"{path} is not a PyTorch checkpoint ({size:,} bytes, starts with {head!r}; an interrupted download "
            f"or an HTML error page saved in its place?): {refetch}."
        ) from None
    raise WeightsError(
        f"{path} is truncated or corrupt ({size:,} bytes; the FCIB v1.0.0 file has {FCIB_WEIGHTS_SIZE:,}): "
        f"{refetch}. [{type(cause).__name__}: {str(cause).strip()}]"
    ) from None


def load_trunk_state(path) -> dict:
    """The FCIB trunk's state dict from `path` (memory-mapped), after strict checks.

    Raises WeightsError naming what is wrong: no file, not a checkpoint, truncated, bare state dict,
    missing / unexpected keys, shape or dtype mismatches, wrong entry or parameter counts.
    """
    import torch

    path = Path(path).expanduser()
    if not path.exists():
        raise WeightsError(f"FCIB weights not found: {path} does not exist. {how_to_provide()}")
    if path.is_dir():
        raise WeightsError(f"FCIB weights: {path} is a folder; give the file itself (model_weights.torch).")
    size = path.stat().st_size
    if size == 0:
        raise WeightsError(
            f"{path} is empty (0 bytes): delete it and download again (python -m DFM50NLib weights download --force)."
        )
    ckpt = _torch_load(path, size)

    fmt = "FCIB checkpoints are {'trunk_state_dict': <state dict>}"
    if not isinstance(ckpt, dict):
        raise WeightsError(f"{path} holds a {type(ckpt).__name__}, not a dict: {fmt}; this is not the FCIB file.")
    if "trunk_state_dict" not in ckpt:
        if ckpt and all(isinstance(v, torch.Tensor) for v in ckpt.values()):
            raise WeightsError(
                f"{path} looks like a bare state dict ({len(ckpt)} tensors, e.g. {next(iter(ckpt))!r}); {fmt}. "
                "If you saved it yourself, save {'trunk_state_dict': model.state_dict()} instead."
            )
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
    wrong = [
        f"{k} {tuple(state[k].shape)} {str(state[k].dtype)[6:]} (expected {spec[k][0]} {str(spec[k][1])[6:]})"
        for k in sorted(set(spec) & set(state))
        if tuple(state[k].shape) != spec[k][0] or state[k].dtype != spec[k][1]
    ]
    if wrong:
        problems.append(f"{len(wrong)} shape/dtype mismatch(es): {_first(wrong, 3)}")
    n_params = sum(state[k].numel() for k in params if k in state)
    if not problems and (len(state) != FCIB_STATE_DICT_ENTRIES or n_params != FCIB_PARAMETER_COUNT):
        problems.append(
            f"{len(state)} entries and {n_params:,} parameters "
            f"(expected {FCIB_STATE_DICT_ENTRIES} and {FCIB_PARAMETER_COUNT:,})"
        )
    if problems:
        raise WeightsError(
            f"{path} is not the FCIB v1.0.0 trunk: "
            + "; ".join(problems)
            + ". Use the published model_weights.torch (python -m DFM50NLib weights download)."
        )
    return state
