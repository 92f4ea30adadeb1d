"""resnet3d.FCIBTrunk is MONAI's resnet50 as fmcib 1.0.0 builds it: same state dict, init and outputs.

MONAI is a test-only dependency; scoring never imports it (checked in a fresh interpreter below).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from DFM50NLib.constants import FCIB_PARAMETER_COUNT, FCIB_STATE_DICT_ENTRIES, N_FCIB_FEATURES
from DFM50NLib.model.resnet3d import FCIBTrunk

ROOT = Path(__file__).resolve().parents[2]


def monai_trunk():
    """fmcib.models.fmcib_model's network, built by MONAI itself."""
    from monai.networks.nets import resnet50

    return resnet50(
        pretrained=False, n_input_channels=1, widen_factor=2, conv1_t_stride=2, feed_forward=False, bias_downsample=True
    )


@pytest.fixture(scope="module")
def pair():
    torch.manual_seed(123)
    theirs = monai_trunk().eval()
    torch.manual_seed(123)
    ours = FCIBTrunk().eval()
    return ours, theirs


def test_state_dict_has_monai_keys_order_shapes_and_seeded_values(pair):
    ours, theirs = pair
    a, b = ours.state_dict(), theirs.state_dict()
    assert list(a) == list(b)  # same names in the same order
    assert len(a) == FCIB_STATE_DICT_ENTRIES
    assert sum(p.numel() for p in ours.parameters()) == FCIB_PARAMETER_COUNT
    for k in a:
        assert a[k].shape == b[k].shape and a[k].dtype == b[k].dtype, k
        assert torch.equal(a[k], b[k]), k  # same initialisation, RNG draw for RNG draw
    assert a["layer1.0.downsample.0.bias"].abs().sum() > 0  # the projection convs carry a bias


def test_forward_is_bit_identical_to_monai_with_real_statistics(pair):
    """Non-trivial batch-norm statistics, so every layer's arithmetic matters."""
    ours, theirs = pair
    gen = torch.Generator().manual_seed(7)
    state = {}
    for k, v in theirs.state_dict().items():
        if k.endswith("running_var"):
            state[k] = torch.rand(v.shape, generator=gen) + 0.5
        elif k.endswith(("running_mean", "bn1.bias", "bn2.bias", "bn3.bias")):
            state[k] = torch.randn(v.shape, generator=gen) * 0.1
        else:
            state[k] = v
    ours.load_state_dict(state, strict=True)
    theirs.load_state_dict(state, strict=True)
    x = torch.randn(2, 1, 50, 50, 50, generator=gen)
    with torch.inference_mode():
        got, want = ours(x), theirs(x)
    assert got.shape == (2, N_FCIB_FEATURES)
    assert torch.equal(got, want)
    assert got.std() > 0


def test_scoring_never_imports_monai(random_weights):
    """The encoder builds, loads and runs in a process where MONAI cannot be imported at all."""
    code = (
        "import sys, numpy as np\n"
        "sys.modules['monai'] = None  # any 'import monai' now raises ImportError\n"
        "from DFM50NLib.model import fcib\n"
        f"enc = fcib.get_encoder({str(random_weights)!r})\n"
        "f = enc.features(np.full((50, 50, 50), -200.0, np.float32))\n"
        "print(f.shape, [m for m in sys.modules if m.startswith('monai.')])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["(1,", f"{N_FCIB_FEATURES})", "[]"]
