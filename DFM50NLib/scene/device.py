"""The compute device the panel's "Device" setting names (Auto / CPU / CUDA), resolved when scoring starts."""

from __future__ import annotations

from DFM50NLib.errors import DFM50NError


def resolve_device(device):
    """auto -> cuda when torch sees a GPU, else cpu; cuda without one is a clear error."""
    if device in (None, "", "auto"):
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise DFM50NError("Device CUDA was chosen but PyTorch sees no CUDA GPU: choose Auto or CPU.")
    return device
