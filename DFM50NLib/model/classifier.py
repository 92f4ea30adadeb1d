"""The DFM50N classifier: a model folder -> `Classifier`, a forest evaluated in numpy.

Nothing here unpickles or needs scikit-learn, so scoring works in any Python (Slicer's included) and the
probability does not depend on the installed scikit-learn: the forest file holds the numbers. Every
inconsistency in the folder is a `ModelError` that says what to do.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from DFM50NLib.constants import N_FCIB_FEATURES
from DFM50NLib.errors import InputError, ModelError
from DFM50NLib.model import forest_io
from DFM50NLib.model.featurenames import canonical_name
from DFM50NLib.model.paths import bundled_model_dir as default_model_dir

N_MODEL_FEATURES = 9  # METHOD.md §2.8


class Classifier:
    """A loaded model folder. `predict_proba` returns the DFM50N score(s) = P(class 1)."""

    def __init__(self, forest, *, threshold, is_demo, name, sha256, metadata, path):
        self._forest = forest
        self.feature_indices = tuple(forest.feature_indices)
        self.feature_names = tuple(f"pred_{i}" for i in self.feature_indices)
        self.threshold = float(threshold)
        self.is_demo = bool(is_demo)
        self.name = str(name)
        self.sha256 = str(sha256)
        self.metadata = metadata
        self.path = Path(path)

    @property
    def n_trees(self) -> int:
        return self._forest.n_trees

    def predict_proba(self, X) -> np.ndarray:
        """(N, 9) or (9,) features in `feature_names` order -> (N,) probabilities of OLM."""
        return self._forest.predict_proba(X)

    def predict_from_4096(self, F) -> np.ndarray:
        """(N, 4096) or (4096,) full FCIB vectors -> (N,) probabilities."""
        F = np.asarray(F)
        F2 = F[None, :] if F.ndim == 1 else F
        if F2.ndim != 2 or F2.shape[1] != N_FCIB_FEATURES:
            raise InputError(f"Expected FCIB feature vectors of length {N_FCIB_FEATURES}; got shape {F.shape}.")
        return self.predict_proba(F2[:, list(self.feature_indices)])

    def __repr__(self):
        demo = ", DEMO" if self.is_demo else ""
        return f"Classifier({self.name!r}, {self.n_trees} trees, threshold {self.threshold:g}{demo}, {self.path})"


def load_classifier(model_dir=None) -> Classifier:
    """Load and check a model folder (None = the bundled DEMO model); ModelError if anything is off."""
    folder = Path(model_dir) if model_dir is not None else default_model_dir()
    if not folder.is_dir():
        raise ModelError(
            f"Model folder {folder} does not exist. Give a folder written by 'import-model', "
            "'train' or 'make-demo-model' (python -m DFM50NLib <command> --help)."
        )
    forest_path = folder / forest_io.FOREST_FILE
    if not forest_path.is_file():
        pkls = sorted(p.name for p in folder.glob("*.pkl"))
        if pkls:
            raise ModelError(
                f"{folder} holds a pickled forest ({pkls[0]}) but no {forest_io.FOREST_FILE}. Pickles are not "
                f"loaded directly because unpickling runs code. Convert it once, if you trust its source: "
                f"python -m DFM50NLib import-model {folder / pkls[0]} --trust --out <new folder>"
            )
        raise ModelError(f"{folder} is not a DFM50N model folder: {forest_io.FOREST_FILE} is missing.")
    metadata = _read_json(folder / forest_io.METADATA_FILE)
    if metadata.get("format") != forest_io.METADATA_FORMAT:
        raise ModelError(
            f"{folder / forest_io.METADATA_FILE} is not DFM50N model metadata "
            f"(format {metadata.get('format')!r}). Regenerate the folder with import-model or train."
        )
    if metadata.get("format_version") != forest_io.METADATA_VERSION:
        raise ModelError(
            f"Model folder format version {metadata.get('format_version')!r} is not supported by "
            f"this DFM50N (expects {forest_io.METADATA_VERSION}); update DFM50N or regenerate it."
        )
    sha = forest_io.sha256_file(forest_path)
    if sha != metadata.get("forest_sha256"):
        raise ModelError(
            f"{forest_path} does not match the SHA-256 recorded in metadata.json (the file was "
            "modified or corrupted). Restore it or regenerate the folder; it will not be used."
        )
    forest = forest_io.read_forest(forest_path)
    if forest.n_features != N_MODEL_FEATURES:
        raise ModelError(
            f"The forest in {folder} takes {forest.n_features} features; DFM50N uses exactly {N_MODEL_FEATURES}."
        )
    names = tuple(f"pred_{i}" for i in forest.feature_indices)
    cols = _read_json(folder / forest_io.COLS_FILE).get("feature_cols")
    if not isinstance(cols, list):
        raise ModelError(f'{folder / forest_io.COLS_FILE} must be {{"feature_cols": [the 9 feature names]}}.')
    for label, listed in (("dfm50n_rf.cols.json", cols), ("metadata.json", metadata.get("feature_names"))):
        try:
            ok = isinstance(listed, list) and tuple(canonical_name(c) for c in listed) == names
        except ModelError as exc:
            raise ModelError(f"{folder / label}: {exc}") from None
        if not ok:
            raise ModelError(
                f"{label} lists the features {listed} but the forest was fitted on {list(names)} "
                "(in that order). The folder was edited by hand; restore or regenerate it."
            )
    thresholds = _read_json(folder / forest_io.THRESHOLDS_FILE)
    try:
        threshold = float(thresholds["dfm50n"]["youden"])
    except (KeyError, TypeError, ValueError):
        raise ModelError(
            f'{folder / forest_io.THRESHOLDS_FILE} must be {{"dfm50n": {{"youden": <threshold>, "note": ...}}}}.'
        ) from None
    if not 0.0 < threshold < 1.0:
        raise ModelError(
            f"The threshold in {folder / forest_io.THRESHOLDS_FILE} is {threshold}; it must lie "
            "strictly between 0 and 1."
        )
    if metadata.get("threshold") != threshold:
        raise ModelError(
            f"thresholds.json says {threshold} but metadata.json says {metadata.get('threshold')}; "
            "edit both to the same value (or regenerate the folder)."
        )
    if not isinstance(metadata.get("is_demo"), bool):
        raise ModelError(f'metadata.json in {folder} must say "is_demo": true or false.')
    return Classifier(
        forest,
        threshold=threshold,
        is_demo=metadata["is_demo"],
        name=metadata.get("name") or folder.name,
        sha256=sha,
        metadata=metadata,
        path=folder,
    )


def _read_json(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise ModelError(
            f"{path} is missing; a model folder needs {forest_io.FOREST_FILE}, "
            f"{forest_io.COLS_FILE}, {forest_io.THRESHOLDS_FILE} and {forest_io.METADATA_FILE}."
        ) from None
    except (OSError, ValueError) as exc:
        raise ModelError(f"Cannot read {path}: {exc}.") from None
    if not isinstance(data, dict):
        raise ModelError(f"{path} must hold a JSON object.")
    return data
