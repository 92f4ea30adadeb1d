"""Load FCIB and run one throw-away forward in a background thread while the case is being read.

Why: a cold score spent, one after another, ~0.7 s reading the CT, ~1 s importing torch and mapping the
weights, and a first forward ~3x slower than a warm one (weight pages faulted in, oneDNN primitives
created). The torch work releases the GIL, so it runs while the main thread reads and cuts the cube; the
encoder lands in `fcib.get_encoder`'s cache, so the scoring code then picks it up warm. Failures here are
ignored: the normal load path runs afterwards and reports them.

Opt-in (``DFM50N_PREWARM=1``, see scoring/pipeline.py): importing torch and unpickling the checkpoint hold
the GIL, as does the ISA-L/ITK read, so only the warm-up forward overlaps anything; the benchmark measured
no gain on the shared 2-core machine and 90 MB more peak RSS.
"""

from __future__ import annotations

import atexit
import threading


class Prewarm:
    def __init__(self, weights=None, device="cpu"):
        self._thread = threading.Thread(target=self._run, args=(weights, device), name="dfm50n-prewarm", daemon=True)
        self.error = None
        self._thread.start()
        # if the caller fails before waiting (bad input), let the warm-up end before the interpreter does:
        # a daemon thread killed inside torch at shutdown can abort the process
        atexit.register(self.wait)

    def _run(self, weights, device):
        try:
            import numpy as np

            from DFM50NLib.constants import CUBE_SIZE
            from DFM50NLib.model.fcib import get_encoder
            from DFM50NLib.model.weights import resolve_weights

            path = resolve_weights(weights, download=False)
            enc = get_encoder(path, device=device)
            enc.features(np.full((CUBE_SIZE,) * 3, -1024.0, dtype=np.float32))
        except BaseException as exc:
            self.error = exc

    def wait(self, timeout=None) -> None:
        """Wait for the warm-up forward (so the real one does not share the cores with it)."""
        self._thread.join(timeout)
        if not self._thread.is_alive():
            atexit.unregister(self.wait)
