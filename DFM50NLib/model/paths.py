"""Where the model files live: the bundled DEMO classifier folder and the FCIB weights cache.

Also the one sentence that tells a user how to provide the weights. Imports nothing from the model package,
so the classifier, its file format, the checkpoint reader and the downloader can all use it.
"""

from __future__ import annotations

import os
from pathlib import Path

from DFM50NLib import constants as C

CACHE_ENV = "DFM50N_CACHE_DIR"  # overrides the per-user cache folder (weights go to <it>/fcib)
DOWNLOAD_COMMAND = "python -m DFM50NLib weights download"


def bundled_model_dir() -> Path:
    """The bundled DEMO classifier: the top-level `models/` folder (beside DFM50NLib/ in a checkout and in Slicer's
    module folder), which an installed wheel carries as `DFM50NLib/models/` (pyproject.toml's package-dir)."""
    package = Path(__file__).resolve().parents[1]
    installed = package / "models"  # first: beside an installed package may lie anybody's `models/`
    return installed if installed.is_dir() else package.parent / "models"


def cache_dir() -> Path:
    """Per-user folder for the downloaded weights and hash records: outside the project and Slicer."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser() / "fcib"
    import platformdirs

    return Path(platformdirs.user_cache_dir("DFM50N", appauthor=False)) / "fcib"


def cached_weights_path() -> Path:
    return cache_dir() / C.FCIB_WEIGHTS_FILENAME


def how_to_provide() -> str:
    """The three ways to give the weights, for every 'not found' message."""
    return (
        f"Provide the FCIB weights ({C.FCIB_WEIGHTS_FILENAME}, {C.FCIB_WEIGHTS_SIZE:,} bytes) in one of 3 ways: "
        f"(1) --weights PATH (in Slicer: the module's 'FCIB weights' setting); "
        f"(2) environment variable {C.FCIB_WEIGHTS_ENV}=PATH; "
        f"(3) download them once into the cache ({cached_weights_path()}): `{DOWNLOAD_COMMAND}` "
        f"(or add --download; in Slicer: the Download button)."
    )
