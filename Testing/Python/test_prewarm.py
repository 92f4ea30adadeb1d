"""The background FCIB pre-warm (model/prewarm.py) fills get_encoder's cache and never raises itself."""

from __future__ import annotations

import numpy as np

from DFM50NLib.model import fcib
from DFM50NLib.model.prewarm import Prewarm


def test_prewarm_caches_the_encoder_the_scoring_code_then_uses(random_weights):
    fcib.clear_encoder_cache()
    warm = Prewarm(random_weights, "cpu")
    warm.wait()
    assert warm.error is None
    assert len(fcib._encoders) == 1
    enc = fcib.get_encoder(random_weights)
    assert enc is next(iter(fcib._encoders.values()))
    cube = np.full((50, 50, 50), -1024.0, dtype=np.float32)
    cube[20:30, 20:30, 20:30] = 40.0
    # warm-up forward changed nothing: the same features as a freshly loaded encoder
    fresh = fcib.FCIBEncoder(random_weights, verify=False)
    assert np.array_equal(enc.features(cube), fresh.features(cube))


def test_prewarm_failure_is_kept_not_raised(tmp_path):
    warm = Prewarm(tmp_path / "missing.torch", "cpu")
    warm.wait()
    assert warm.error is not None and "not found" in str(warm.error)
