"""A random forest as plain numpy arrays: written without pickle, read with allow_pickle=False, evaluated
exactly as scikit-learn's ``RandomForestClassifier.predict_proba`` does, without scikit-learn.

File (``.npz``, one zip of ``.npy`` arrays, every tree's nodes concatenated):
  format_version  int64 ()       1
  classes         int64 (2,)     must be [0, 1]
  feature_indices int64 (F,)     FCIB index (0..4095) of each model input column, in input order
  tree_offsets    int64 (T+1,)   nodes of tree t are [tree_offsets[t], tree_offsets[t+1])
  children_left   int32 (nodes,) child index *within the tree*, -1 at leaves (sklearn's TREE_LEAF)
  children_right  int32 (nodes,)
  feature         int32 (nodes,) input column tested at the node (0..F-1), -2 at leaves
  threshold       float64 (nodes,) go left when float32(x[feature]) <= threshold
  value           float64 (nodes, 2) class probabilities of the node (what sklearn's tree returns)
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import numpy as np

from DFM50NLib import atomic
from DFM50NLib.errors import InputError, ModelError
from DFM50NLib.model.paths import bundled_model_dir

FORMAT_VERSION = 1
_KEYS = (
    "format_version",
    "classes",
    "feature_indices",
    "tree_offsets",
    "children_left",
    "children_right",
    "feature",
    "threshold",
    "value",
)
_CHUNK = 4096  # rows evaluated at once
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed: the same forest always gives the same bytes (and sha256)


def sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def forest_to_arrays(model, feature_indices) -> dict:
    """The arrays of a fitted scikit-learn RandomForestClassifier (duck-typed: sklearn is not imported).

    Leaf values are taken as stored: scikit-learn >= 1.4 keeps class fractions in ``tree_.value`` and
    returns them unchanged. Forests pickled by older versions keep weighted counts, which their
    ``predict_proba`` divided by the row sum; those are normalised here the same way.
    """
    feature_indices = np.asarray(feature_indices, dtype=np.int64)
    if int(getattr(model, "n_outputs_", 1)) != 1:
        raise ModelError("The forest predicts several outputs; DFM50N needs one binary output (classes 0, 1).")
    classes = np.asarray(model.classes_)
    if classes.shape != (2,) or not np.array_equal(classes, [0, 1]):
        raise ModelError(
            f"The forest's classes are {classes.tolist()}; DFM50N needs exactly [0, 1] "
            "(1 = occult lymph-node metastasis). Refit it with 0/1 labels."
        )
    n_features = int(model.n_features_in_)
    if n_features != len(feature_indices):
        raise ModelError(f"The forest takes {n_features} features but {len(feature_indices)} names were given.")
    offsets, parts = [0], {k: [] for k in ("children_left", "children_right", "feature", "threshold", "value")}
    for tree in (est.tree_ for est in model.estimators_):
        value = np.asarray(tree.value, dtype=np.float64)
        if value.ndim != 3 or value.shape[1] != 1 or value.shape[2] != 2:
            raise ModelError(f"A tree of the forest has leaf values of shape {value.shape}; expected (nodes, 1, 2).")
        value = value[:, 0, :]
        sums = value.sum(axis=1)
        leaves = np.asarray(tree.children_left) == -1
        if not np.allclose(sums[leaves], 1.0, rtol=0, atol=1e-9):
            value = value / np.where(sums == 0, 1.0, sums)[:, None]  # pre-1.4 pickles: counts -> fractions
        parts["children_left"].append(np.asarray(tree.children_left, dtype=np.int32))
        parts["children_right"].append(np.asarray(tree.children_right, dtype=np.int32))
        parts["feature"].append(np.where(leaves, -2, np.asarray(tree.feature)).astype(np.int32))
        parts["threshold"].append(np.asarray(tree.threshold, dtype=np.float64))
        parts["value"].append(value)
        offsets.append(offsets[-1] + int(tree.node_count))
    arrays = {k: np.concatenate(v) for k, v in parts.items()}
    arrays.update(
        format_version=np.int64(FORMAT_VERSION),
        classes=np.array([0, 1], dtype=np.int64),
        feature_indices=feature_indices,
        tree_offsets=np.asarray(offsets, dtype=np.int64),
    )
    Forest(arrays)  # validate what we are about to write
    return arrays


def write_forest(path, arrays: dict) -> Path:
    """Write the arrays as a compressed .npz, byte-for-byte reproducibly (fixed zip dates, sorted)."""
    with atomic.atomic_path(path) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for name in sorted(arrays):
                buf = io.BytesIO()
                np.lib.format.write_array(buf, np.array(arrays[name], order="C"), allow_pickle=False)
                info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_DATE)
                info.compress_type = zipfile.ZIP_DEFLATED
                info.create_system = 3
                info.external_attr = 0o644 << 16
                zf.writestr(info, buf.getvalue(), compresslevel=9)
    return Path(path)


def read_forest(path) -> Forest:
    """Load a forest file without unpickling anything; ModelError if it is not a valid forest."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in _KEYS if k not in npz.files]
            if missing:
                raise ModelError(f"{path} is not a DFM50N forest file (missing {', '.join(missing)}).")
            arrays = {k: npz[k] for k in _KEYS}
    except ModelError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise ModelError(
            f"Cannot read the forest file {path}: {exc}. Regenerate the model folder "
            "(make-demo-model, import-model or train)."
        ) from exc
    return Forest(arrays, source=path)


class Forest:
    """A validated forest in arrays; `predict_proba` gives P(class 1) exactly as scikit-learn would."""

    def __init__(self, arrays: dict, source=None):
        where = f" in {source}" if source else ""
        try:
            self._check(arrays)
        except ModelError as exc:
            raise ModelError(f"Invalid forest{where}: {exc}") from None
        self.classes = arrays["classes"].astype(np.int64)
        self.feature_indices = tuple(int(i) for i in arrays["feature_indices"])
        self.n_features = len(self.feature_indices)
        offsets = arrays["tree_offsets"].astype(np.int64)
        self.n_trees = len(offsets) - 1
        self.n_nodes = int(offsets[-1])
        base = np.repeat(offsets[:-1], np.diff(offsets))
        left, right = arrays["children_left"].astype(np.int64), arrays["children_right"].astype(np.int64)
        self._roots = offsets[:-1]
        self._left = np.where(left >= 0, left + base, -1)  # global node numbers, -1 at leaves
        self._right = np.where(right >= 0, right + base, -1)
        self._feature = np.maximum(arrays["feature"].astype(np.int64), 0)
        self._threshold = arrays["threshold"].astype(np.float64)
        self._p1 = np.ascontiguousarray(arrays["value"][:, 1], dtype=np.float64)  # class 1 is column 1
        self._max_steps = int(np.diff(offsets).max())

    @staticmethod
    def _check(a):
        def need(ok, msg):
            if not ok:
                raise ModelError(msg)

        for key, kind in (
            ("format_version", "i"),
            ("classes", "i"),
            ("feature_indices", "i"),
            ("tree_offsets", "i"),
            ("children_left", "i"),
            ("children_right", "i"),
            ("feature", "i"),
            ("threshold", "f"),
            ("value", "f"),
        ):
            need(a[key].dtype.kind == kind, f"array {key} has dtype {a[key].dtype}")
        need(
            a["format_version"].shape == () and int(a["format_version"]) == FORMAT_VERSION,
            f"format version {a['format_version']} is not {FORMAT_VERSION}; update DFM50N",
        )
        need(a["classes"].tolist() == [0, 1], f"classes are {a['classes'].tolist()}, DFM50N needs [0, 1]")
        fi = a["feature_indices"]
        need(
            fi.ndim == 1 and len(fi) > 0 and len(set(fi.tolist())) == len(fi) and fi.min() >= 0 and fi.max() < 4096,
            "feature_indices must be distinct FCIB indices 0..4095",
        )
        off = a["tree_offsets"]
        need(
            off.ndim == 1 and len(off) >= 2 and off[0] == 0 and np.all(np.diff(off) > 0),
            "tree_offsets must start at 0 and increase",
        )
        n = int(off[-1])
        for key in ("children_left", "children_right", "feature", "threshold"):
            need(a[key].shape == (n,), f"array {key} has shape {a[key].shape}, expected ({n},)")
        need(a["value"].shape == (n, 2), f"array value has shape {a['value'].shape}, expected ({n}, 2)")
        size = np.repeat(np.diff(off), np.diff(off))
        local = np.arange(n) - np.repeat(off[:-1], np.diff(off))
        left, right, feat = a["children_left"], a["children_right"], a["feature"]
        leaf = left == -1
        need(np.array_equal(leaf, right == -1), "a node has exactly one child")
        inner = ~leaf
        # children after their parent, inside the tree: the descent always ends at a leaf
        need(
            np.all(
                (left[inner] > local[inner])
                & (left[inner] < size[inner])
                & (right[inner] > local[inner])
                & (right[inner] < size[inner])
            ),
            "child index out of range",
        )
        need(np.all((feat[inner] >= 0) & (feat[inner] < len(fi))), "a node tests a feature the model lacks")
        # +inf occurs in forests fitted with missing values ("only NaN goes right"): x <= inf always
        need(not np.any(np.isnan(a["threshold"][inner])), "a threshold is NaN")
        v = a["value"][leaf]
        need(
            np.all(np.isfinite(v)) and np.all(v >= 0) and np.allclose(v.sum(axis=1), 1.0, rtol=0, atol=1e-9),
            "leaf values are not class probabilities",
        )

    def predict_proba(self, X) -> np.ndarray:
        """(N, F) -> (N,) P(class 1): the mean over trees of the leaf's class-1 fraction.

        Like scikit-learn: X is cast to float32, a node sends x left when x <= threshold (compared in
        float64), tree probabilities are added tree by tree in order and divided by the number of trees.
        Non-finite features are refused (a NaN FCIB feature means a broken input, not a missing value).
        """
        X = np.asarray(X)
        if X.ndim == 1:
            X = X[None, :]
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise InputError(
                f"The classifier takes {self.n_features} features per row; got an array of shape {X.shape}."
            )
        X32 = X.astype(np.float32)
        bad = ~np.isfinite(X32)
        if bad.any():
            r, c = np.argwhere(bad)[0]
            raise InputError(
                f"Feature {c} of row {r} is {X32[r, c]} (after conversion to float32): the "
                "classifier needs finite feature values. Check the FCIB features."
            )
        if X32.shape[0] > _CHUNK:  # bound the (rows x trees) work arrays
            return np.concatenate([self.predict_proba(X32[i : i + _CHUNK]) for i in range(0, len(X32), _CHUNK)])
        n = X32.shape[0]
        node = np.broadcast_to(self._roots, (n, self.n_trees)).copy()
        rows = np.broadcast_to(np.arange(n)[:, None], node.shape)
        for _ in range(self._max_steps):
            active = self._left[node] >= 0
            if not active.any():
                break
            at = node[active]
            go_left = X32[rows[active], self._feature[at]] <= self._threshold[at]
            node[active] = np.where(go_left, self._left[at], self._right[at])
        p1 = self._p1[node]
        total = np.zeros(n, dtype=np.float64)
        for t in range(self.n_trees):  # sequential sum, as sklearn accumulates tree by tree
            total += p1[:, t]
        return total / self.n_trees


# ---- the model folder: forest + the three upstream-style JSON files ------------------------------------
FOREST_FILE = "dfm50n_rf.forest.npz"
COLS_FILE = "dfm50n_rf.cols.json"  # upstream format: {"feature_cols": [...]}
THRESHOLDS_FILE = "thresholds.json"  # upstream format: {"dfm50n": {"youden": 0.25, "note": ...}}
METADATA_FILE = "metadata.json"
METADATA_FORMAT = "dfm50n-model"
METADATA_VERSION = 1


def dumps(obj) -> str:
    """JSON as the model folder stores it: stable bytes for the same content."""
    import json

    return json.dumps(obj, indent=2, ensure_ascii=True) + "\n"


def write_model_folder(
    out_dir,
    arrays: dict,
    *,
    threshold: float,
    is_demo: bool,
    name: str,
    geometry=None,
    orientation=None,
    provenance=None,
    training=None,
    threshold_note="Training-derived cutoff; reused unchanged for validation/test/inference.",
    description="",
) -> Path:
    """Write a complete model folder that `classifier.load_classifier` reads; returns the folder.

    metadata.json is written last and holds the forest's sha256, so a folder left half-written by a crash
    is refused on load rather than silently mixing two models.
    """
    from DFM50NLib import __version__
    from DFM50NLib.constants import FCIB_VERSION
    from DFM50NLib.model.featurenames import canonical_name

    out_dir = Path(out_dir)
    if not is_demo and out_dir.resolve() == bundled_model_dir().resolve():
        raise ModelError(
            f"{out_dir} is the bundled DEMO model folder; write your model to another folder "
            "(e.g. --out models/mine) and pass that folder with --model."
        )
    names = [canonical_name(int(i)) for i in arrays["feature_indices"]]
    threshold = float(threshold)
    if not 0.0 < threshold < 1.0:
        raise ModelError(f"The threshold must lie strictly between 0 and 1; got {threshold}.")
    if geometry not in (None, "physical", "reference"):
        raise ModelError(f"geometry must be 'physical' or 'reference' (or unknown); got {geometry!r}.")
    if orientation is not None:
        from DFM50NLib.geometry.orientation import normalise_code

        try:
            orientation = normalise_code(orientation)
        except InputError as exc:
            raise ModelError(f"The model's orientation: {exc}") from None
    Forest(arrays)
    forest_path = write_forest(out_dir / FOREST_FILE, arrays)
    atomic.write_text(out_dir / COLS_FILE, dumps({"feature_cols": names}))
    atomic.write_text(out_dir / THRESHOLDS_FILE, dumps({"dfm50n": {"youden": threshold, "note": threshold_note}}))
    metadata = {
        "format": METADATA_FORMAT,
        "format_version": METADATA_VERSION,
        "name": name,
        "is_demo": bool(is_demo),
        "description": description,
        "feature_names": names,
        "threshold": threshold,
        "classes": [0, 1],
        "n_trees": int(len(arrays["tree_offsets"]) - 1),
        "geometry": geometry,
        "orientation": orientation,
        "fcib_version": FCIB_VERSION,
        "dfm50n_version": __version__,
        "forest_file": FOREST_FILE,
        "forest_sha256": sha256_file(forest_path),
        "provenance": provenance or {},
    }
    if training is not None:
        metadata["training"] = training
    atomic.write_text(out_dir / METADATA_FILE, dumps(metadata))
    return out_dir
