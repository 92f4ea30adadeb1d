"""FCIB foundation-model encoder (SPEC §2.6-2.7): MONAI ResNet50 trunk -> 4096 features.

torch and monai are imported inside functions: importing this module is free.
"""

from __future__ import annotations


def build_trunk(device="cpu"):
    """The exact FCIB v1.0.0 trunk (fmcib.models.fmcib_model), without weights.

    device="meta" allocates nothing; weights are then attached with load_state_dict(assign=True).
    """
    import torch
    from monai.networks.nets import resnet50

    with torch.device(device):
        return resnet50(
            pretrained=False,
            n_input_channels=1,
            widen_factor=2,
            conv1_t_stride=2,
            feed_forward=False,
            bias_downsample=True,
        )


def save_random_checkpoint(path, seed=0):
    """Write a randomly initialised trunk in the real checkpoint format {"trunk_state_dict": ...}.

    For tests and the Slicer self-test: exercises the real loading code without the 738 MB download.
    """
    import torch

    from .atomic import atomic_path

    torch.manual_seed(seed)
    trunk = build_trunk("cpu")
    with atomic_path(path) as tmp:
        torch.save({"trunk_state_dict": trunk.state_dict()}, tmp)
    return path
