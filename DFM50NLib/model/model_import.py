"""Convert a user's pickled scikit-learn forest (upstream ``dfm50n_rf.pkl``) into a safe model folder.

Unpickling runs whatever code the file names, so it happens only here, only with ``trust=True``, and
only once: the folder written holds numbers (``.npz`` + JSON), never a pickle.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np

from DFM50NLib.constants import THRESHOLD
from DFM50NLib.errors import ModelError
from DFM50NLib.model.featurenames import canonical_name

TRUST_WARNING = (
    "Unpickling a .pkl file runs code stored in it: a malicious file can do anything your "
    "account can. Import only a file whose source you trust."
)


def import_model(
    pkl_path,
    out_dir,
    *,
    trust=False,
    cols=None,
    threshold=THRESHOLD,
    geometry=None,
    orientation=None,
    name=None,
    command=None,
) -> Path:
    """Unpickle `pkl_path` (only with trust=True), check it, and write a model folder to `out_dir`.

    `cols`: a JSON file ``{"feature_cols": [...]}`` (upstream dfm50n_rf.cols.json) or a list of names;
    without it the forest's own ``feature_names_in_`` are used. Returns `out_dir`.
    """
    pkl_path = Path(pkl_path)
    if not trust:
        raise ModelError(f"{TRUST_WARNING} Re-run with --trust (trust=True) to import {pkl_path}.")
    from DFM50NLib.io.integrity import check_regular

    check_regular(pkl_path)  # a FIFO would block the read
    if not pkl_path.is_file():
        raise ModelError(f"{pkl_path} does not exist.")
    sklearn = _require_sklearn()
    from sklearn.ensemble import RandomForestClassifier

    from DFM50NLib.model.forest_io import forest_to_arrays, sha256_file, write_model_folder

    obj, pickled_with = _unpickle(pkl_path, sklearn.__version__)
    rf = _unwrap(obj, RandomForestClassifier, pkl_path)
    n_features = int(getattr(rf, "n_features_in_", -1))
    if n_features != 9:
        raise ModelError(
            f"The forest in {pkl_path} takes {n_features} features; a DFM50N classifier takes "
            "exactly the 9 FCIB features of METHOD.md §2.8."
        )
    classes = np.asarray(rf.classes_)
    if classes.tolist() != [0, 1]:
        raise ModelError(
            f"The forest in {pkl_path} has classes {classes.tolist()}; DFM50N needs exactly [0, 1] "
            "(1 = occult lymph-node metastasis). Refit it with 0/1 labels."
        )
    names = _feature_names(rf, cols, pkl_path)
    arrays = forest_to_arrays(rf, [int(n.split("_")[1]) for n in names])
    _check_conversion(rf, arrays)
    return write_model_folder(
        out_dir,
        arrays,
        threshold=threshold,
        is_demo=False,
        name=name or f"imported from {pkl_path.name}",
        geometry=geometry,
        orientation=orientation,
        description=f"Random forest imported from {pkl_path.name} with DFM50N import-model.",
        provenance={
            "how": "import-model",
            "command": command,
            "source_file": pkl_path.name,
            "source_sha256": sha256_file(pkl_path),
            "pickled_with_sklearn_version": pickled_with,
            "imported_with_sklearn_version": sklearn.__version__,
            "estimator": type(rf).__name__,
            "estimator_params": _params(rf),
        },
    )


def _require_sklearn():
    try:
        import sklearn
    except ImportError:
        raise ModelError(
            "import-model needs scikit-learn to read the pickle: pip install scikit-learn "
            "(scoring with the converted folder does not)."
        ) from None
    return sklearn


def _unpickle(path: Path, current_version: str):
    """(object, scikit-learn version that pickled it); the version comes from sklearn's own warning."""
    try:
        import joblib  # reads both joblib.dump and plain pickle.dump files

        load = joblib.load
    except ImportError:  # pragma: no cover - joblib ships with scikit-learn
        import pickle

        def load(p):
            with open(p, "rb") as f:
                return pickle.load(f)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            obj = load(path)
        except Exception as exc:  # unpickling can fail in many ways; all mean "cannot use this file"
            raise ModelError(
                f"Cannot unpickle {path}: {type(exc).__name__}: {exc}. It may need another "
                "scikit-learn version, or not be a pickle at all."
            ) from exc
    versions = [getattr(w.message, "original_sklearn_version", None) for w in caught]
    versions = [v for v in versions if v]
    return obj, (versions[0] if versions else current_version)


def _unwrap(obj, forest_type, path):
    """The RandomForestClassifier itself, or the only step of a Pipeline; anything else is refused."""
    steps = getattr(obj, "steps", None)
    if isinstance(steps, list) and type(obj).__name__ == "Pipeline":
        real = [s for _, s in steps if s is not None and s != "passthrough"]
        if len(real) != 1:
            raise ModelError(
                f"{path} holds a Pipeline with steps {[n for n, _ in steps]}; DFM50N uses a bare "
                "random forest on the raw features (no scaling, no imputation). Export the "
                "forest alone."
            )
        obj = real[0]
    if not isinstance(obj, forest_type):
        raise ModelError(
            f"{path} holds a {type(obj).__module__}.{type(obj).__name__}, not a scikit-learn "
            "RandomForestClassifier (or a Pipeline whose only step is one)."
        )
    if not hasattr(obj, "estimators_"):
        raise ModelError(f"The RandomForestClassifier in {path} is not fitted.")
    return obj


def _feature_names(rf, cols, path) -> list:
    own = getattr(rf, "feature_names_in_", None)
    own = [str(n) for n in own] if own is not None else None
    if cols is None:
        if own is None:
            beside = path.parent / "dfm50n_rf.cols.json"
            hint = f" (e.g. --cols {beside})" if beside.is_file() else ""
            raise ModelError(
                f"The forest in {path} does not record its feature names: give the 9 names, in the "
                f"order the forest was fitted on, with --cols{hint}."
            )
        listed, source = own, "the forest's feature_names_in_"
        if not all(_is_name(n) for n in own):
            raise ModelError(
                f"The forest in {path} was fitted on columns {own}, which are not FCIB feature "
                "names: give the 9 FCIB names, in that order, with --cols."
            )
    else:
        listed, source = _read_cols(cols), str(cols) if not isinstance(cols, (list, tuple)) else "--cols"
    if len(listed) != 9:
        raise ModelError(f"{source} lists {len(listed)} features; DFM50N needs 9.")
    names = [canonical_name(n) for n in listed]
    if len(set(names)) != len(names):
        raise ModelError(f"{source} lists a feature twice: {listed}.")
    if own is not None and [canonical_name(n) if _is_name(n) else n for n in own] != names:
        raise ModelError(
            f"The forest was fitted on the columns {own} but {source} lists {listed}; they must "
            "name the same features in the same order."
        )
    return names


def _is_name(n) -> bool:
    from DFM50NLib.model.featurenames import is_feature_name

    return is_feature_name(n)


def _read_cols(cols) -> list:
    if isinstance(cols, (list, tuple)):
        return list(cols)
    try:
        data = json.loads(Path(cols).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"Cannot read the feature list {cols}: {exc}.") from None
    listed = data.get("feature_cols") if isinstance(data, dict) else data
    if not isinstance(listed, list):
        raise ModelError(f'{cols} must be {{"feature_cols": [9 feature names]}} (upstream dfm50n_rf.cols.json).')
    return listed


def _check_conversion(rf, arrays, n=500, seed=0):
    """The converted forest must give the pickled forest's probabilities, on rows spanning its thresholds.

    Reference = mean over trees of each tree's class fractions, which is what the forest's own
    predict_proba computed in the scikit-learn that fitted it (versions < 1.4 stored counts in the trees
    and normalised them at prediction time; a newer scikit-learn would return the raw counts).
    """
    from DFM50NLib.model.forest_io import Forest

    feature, threshold = arrays["feature"], arrays["threshold"]
    rng = np.random.default_rng(seed)
    X = np.zeros((n, rf.n_features_in_))
    for j in range(X.shape[1]):
        cuts = threshold[feature == j]
        lo, hi = (cuts.min(), cuts.max()) if len(cuts) else (0.0, 1.0)
        pad = 0.1 * (hi - lo) + 1e-6
        X[:, j] = rng.uniform(lo - pad, hi + pad, n)
    expected = np.zeros(n)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "X does not have valid feature names": expected here
        for tree in rf.estimators_:
            p = tree.predict_proba(X)
            expected += p[:, 1] / p.sum(axis=1)
    expected /= len(rf.estimators_)
    got = Forest(arrays).predict_proba(X)
    if not np.allclose(got, expected, rtol=0, atol=1e-12):
        raise ModelError(
            "The converted forest does not reproduce the pickled forest's probabilities "
            f"(max difference {np.abs(got - expected).max():.3g}); please report this."
        )


def _params(rf) -> dict:
    """The estimator's hyper-parameters as JSON-safe values (for the record)."""
    out = {}
    for key, value in sorted(rf.get_params(deep=False).items()):
        try:
            json.dumps(value)
            out[key] = value
        except TypeError:
            out[key] = repr(value)
    return out
