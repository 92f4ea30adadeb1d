"""The numpy forest against scikit-learn's own predict_proba, and the model folder's checks."""

import hashlib
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from DFM50NLib.constants import DFM50N_FEATURE_INDICES, DFM50N_FEATURE_NAMES
from DFM50NLib.errors import InputError, ModelError
from DFM50NLib.model import forest_io
from DFM50NLib.model.classifier import default_model_dir, load_classifier
from DFM50NLib.model.demo_model import make_demo_model

ROOT = Path(__file__).resolve().parents[2]
BUNDLED = ROOT / "models"
import sklearn
from sklearn.ensemble import RandomForestClassifier


def _data(seed=0, n=300):
    rng = np.random.default_rng(seed)
    X = rng.gamma(2.0, 0.25, size=(n, 9))
    y = ((X[:, 0] - X[:, 1] + rng.normal(0, 0.3, n)) > 0).astype(int)
    return X, y


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"max_depth": 4},
        {"class_weight": "balanced"},
        {"bootstrap": False},
        {"n_estimators": 7, "max_features": None, "min_samples_leaf": 3},
    ],
)
def test_numpy_forest_equals_sklearn(params):
    X, y = _data()
    rf = RandomForestClassifier(random_state=1, **params).fit(X, y)
    forest = forest_io.Forest(forest_io.forest_to_arrays(rf, DFM50N_FEATURE_INDICES))
    Xt = np.random.default_rng(2).gamma(2.0, 0.25, size=(1000, 9))
    expected = rf.predict_proba(Xt)[:, 1]
    got = forest.predict_proba(Xt)
    assert 0.05 < expected.std()  # probabilities actually spread: the comparison is not between constants
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)


def test_values_on_thresholds_follow_sklearn():
    """x == threshold goes left, and x is compared after rounding to float32, as in sklearn."""
    rng = np.random.default_rng(3)
    X = rng.integers(0, 8, size=(400, 9)) * 0.5  # thresholds become exact midpoints k*0.5 + 0.25
    y = ((X[:, 0] + X[:, 3] + rng.normal(0, 1, 400)) > 3.5).astype(int)
    rf = RandomForestClassifier(n_estimators=30, random_state=0).fit(X, y)
    forest = forest_io.Forest(forest_io.forest_to_arrays(rf, DFM50N_FEATURE_INDICES))
    cuts = np.arange(8) * 0.5 + 0.25
    on = cuts[rng.integers(0, 8, size=(1000, 9))]
    nudged = on + rng.choice([-1e-12, 0.0, 1e-12], size=on.shape)  # same float32, different float64
    thresholds = np.concatenate([e.tree_.threshold[e.tree_.children_left >= 0] for e in rf.estimators_])
    assert np.isin(on, thresholds).mean() > 0.5 and (nudged != on).mean() > 0.5
    for Xt in (on, nudged):
        np.testing.assert_allclose(forest.predict_proba(Xt), rf.predict_proba(Xt)[:, 1], rtol=0, atol=1e-12)
    # rows just above the cuts score differently: going right at x == threshold, or comparing the nudged
    # rows in float64, would fail the check above
    above = np.nextafter(on.astype(np.float32), np.float32(np.inf))
    assert (rf.predict_proba(on)[:, 1] != rf.predict_proba(above)[:, 1]).mean() > 0.5


def test_non_finite_features_and_bad_shapes_refused():
    clf = load_classifier()
    x = np.full((2, 9), 0.5)
    x[1, 4] = np.nan
    with pytest.raises(InputError, match="row 1"):
        clf.predict_proba(x)
    with pytest.raises(InputError, match="9 features"):
        clf.predict_proba(np.zeros((3, 8)))
    with pytest.raises(InputError, match="4096"):
        clf.predict_from_4096(np.zeros(9))


def test_shipped_demo_model():
    clf = load_classifier()
    assert clf.path == BUNDLED == default_model_dir()
    assert clf.is_demo is True and "demo" in clf.name.lower()
    assert clf.feature_names == DFM50N_FEATURE_NAMES and clf.feature_indices == DFM50N_FEATURE_INDICES
    assert clf.threshold == 0.25 and clf.n_trees == 100
    forest_file = BUNDLED / forest_io.FOREST_FILE
    assert clf.sha256 == hashlib.sha256(forest_file.read_bytes()).hexdigest()
    assert forest_file.stat().st_size < 2_000_000
    cols = json.loads((BUNDLED / forest_io.COLS_FILE).read_text())
    assert cols == {"feature_cols": list(DFM50N_FEATURE_NAMES)}
    F = np.random.default_rng(0).gamma(2.0, 0.25, size=(5, 4096))
    p = clf.predict_from_4096(F)
    assert p.shape == (5,) and np.all((0 <= p) & (p <= 1))
    np.testing.assert_array_equal(p, clf.predict_proba(F[:, list(DFM50N_FEATURE_INDICES)]))
    np.testing.assert_array_equal(clf.predict_proba(F[0, list(DFM50N_FEATURE_INDICES)]), p[:1])


def test_demo_model_is_reproducible(tmp_path):
    a, b = make_demo_model(tmp_path / "a"), make_demo_model(tmp_path / "b", seed=0)
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in (BUNDLED).iterdir() if p.is_file())
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    shipped = json.loads((BUNDLED / forest_io.METADATA_FILE).read_text())
    if shipped["provenance"]["sklearn_version"] != sklearn.__version__:
        pytest.skip(
            f"shipped demo was fitted with scikit-learn {shipped['provenance']['sklearn_version']}, "
            f"this is {sklearn.__version__}: forests may differ; regenerate the bundled model to compare"
        )
    for name in names:
        if name != forest_io.METADATA_FILE:
            assert (a / name).read_bytes() == (BUNDLED / name).read_bytes(), name
    regenerated = json.loads((a / forest_io.METADATA_FILE).read_text())
    shipped.pop("dfm50n_version"), regenerated.pop("dfm50n_version")  # a release bump alone changes nothing
    assert regenerated == shipped


def test_scoring_needs_no_sklearn():
    code = (
        "import sys; sys.modules['sklearn'] = None\n"
        "from DFM50NLib.model.classifier import load_classifier\n"
        "print(load_classifier().predict_proba([[0.5] * 9])[0])"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert float(out.stdout) == load_classifier().predict_proba([[0.5] * 9])[0]


@pytest.fixture
def model_copy(tmp_path):
    dst = tmp_path / "model"
    shutil.copytree(BUNDLED, dst)
    return dst


def _edit_json(path, change):
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_tampered_forest_refused(model_copy):
    path = model_copy / forest_io.FOREST_FILE
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="SHA-256"):
        load_classifier(model_copy)


def test_forest_with_valid_hash_but_8_features_refused(model_copy):
    X, y = _data()
    rf = RandomForestClassifier(n_estimators=3, random_state=0).fit(X[:, :8], y)
    forest_io.write_forest(model_copy / forest_io.FOREST_FILE, forest_io.forest_to_arrays(rf, range(8)))
    _edit_json(
        model_copy / forest_io.METADATA_FILE,
        lambda m: m.update(forest_sha256=forest_io.sha256_file(model_copy / forest_io.FOREST_FILE)),
    )
    with pytest.raises(ModelError, match="8 features"):
        load_classifier(model_copy)


@pytest.mark.parametrize(
    "file, change, message",
    [
        (forest_io.COLS_FILE, lambda d: d["feature_cols"].reverse(), "edited by hand"),
        (forest_io.COLS_FILE, lambda d: d["feature_cols"].__setitem__(0, "pred_x"), "not an FCIB feature"),
        (forest_io.THRESHOLDS_FILE, lambda d: d["dfm50n"].update(youden=0.3), "edit both"),
        (forest_io.THRESHOLDS_FILE, lambda d: d["dfm50n"].update(youden=1.5), "strictly between 0 and 1"),
        (forest_io.THRESHOLDS_FILE, lambda d: d.clear(), "youden"),
        (forest_io.METADATA_FILE, lambda d: d.update(format_version=99), "not supported"),
        (forest_io.METADATA_FILE, lambda d: d.update(is_demo="yes"), "is_demo"),
    ],
)
def test_inconsistent_folder_refused(model_copy, file, change, message):
    _edit_json(model_copy / file, change)
    with pytest.raises(ModelError, match=message):
        load_classifier(model_copy)


def test_upstream_spellings_in_cols_accepted(model_copy):
    _edit_json(
        model_copy / forest_io.COLS_FILE,
        lambda d: d.update(feature_cols=[f"FCIB50N_F{i}" for i in DFM50N_FEATURE_INDICES]),
    )
    assert load_classifier(model_copy).feature_names == DFM50N_FEATURE_NAMES


def test_missing_files_and_pickle_folders(tmp_path, model_copy):
    with pytest.raises(ModelError, match="does not exist"):
        load_classifier(tmp_path / "nowhere")
    (model_copy / forest_io.METADATA_FILE).unlink()
    with pytest.raises(ModelError, match="metadata.json is missing"):
        load_classifier(model_copy)
    upstream = tmp_path / "upstream"
    upstream.mkdir()
    (upstream / "dfm50n_rf.pkl").write_bytes(b"not read")
    with pytest.raises(ModelError, match="import-model"):
        load_classifier(upstream)


def test_forest_file_is_not_a_pickle(model_copy):
    with zipfile.ZipFile(model_copy / forest_io.FOREST_FILE) as zf:
        assert all(n.endswith(".npy") for n in zf.namelist())
    with np.load(model_copy / forest_io.FOREST_FILE, allow_pickle=False) as npz:
        assert all(npz[k].dtype != object for k in npz.files)


def test_bundled_folder_protected_from_user_models():
    X, y = _data()
    rf = RandomForestClassifier(n_estimators=2, random_state=0).fit(X, y)
    with pytest.raises(ModelError, match="bundled DEMO"):
        forest_io.write_model_folder(
            BUNDLED, forest_io.forest_to_arrays(rf, DFM50N_FEATURE_INDICES), threshold=0.3, is_demo=False, name="mine"
        )


def test_leaf_counts_from_old_pickles_are_normalised():
    """scikit-learn < 1.4 kept weighted counts in tree_.value and normalised them in predict_proba."""
    from types import SimpleNamespace

    X, y = _data()
    rf = RandomForestClassifier(n_estimators=10, random_state=0).fit(X, y)
    old_trees = [
        SimpleNamespace(
            tree_=SimpleNamespace(
                value=e.tree_.value * e.tree_.weighted_n_node_samples[:, None, None],
                children_left=e.tree_.children_left,
                children_right=e.tree_.children_right,
                feature=e.tree_.feature,
                threshold=e.tree_.threshold,
                node_count=e.tree_.node_count,
            )
        )
        for e in rf.estimators_
    ]
    old = SimpleNamespace(estimators_=old_trees, classes_=rf.classes_, n_outputs_=1, n_features_in_=9)
    assert not np.allclose(old_trees[0].tree_.value.sum(axis=2), 1)
    forest = forest_io.Forest(forest_io.forest_to_arrays(old, DFM50N_FEATURE_INDICES))
    Xt = np.random.default_rng(4).gamma(2.0, 0.25, size=(1000, 9))
    np.testing.assert_allclose(forest.predict_proba(Xt), rf.predict_proba(Xt)[:, 1], rtol=0, atol=1e-12)


def test_forest_fitted_with_missing_values_and_chunked_rows():
    """Forests fitted on NaNs (sklearn >= 1.4) convert; finite rows score as in sklearn, NaN rows are refused.

    We refuse NaN at scoring instead of reproducing ``missing_go_to_left``: a NaN FCIB feature means a
    broken input. 10,000 rows also exercise the chunked evaluation.
    """
    X, y = _data(n=400)
    X[::7, 0] = np.nan
    X[::11, 3] = np.nan
    rf = RandomForestClassifier(n_estimators=20, random_state=0).fit(X, y)
    arrays = forest_io.forest_to_arrays(rf, DFM50N_FEATURE_INDICES)
    forest = forest_io.Forest(arrays)
    Xt = np.random.default_rng(6).gamma(2.0, 0.25, size=(10_000, 9))
    np.testing.assert_allclose(forest.predict_proba(Xt), rf.predict_proba(Xt)[:, 1], rtol=0, atol=1e-12)
    Xt[9_999, 3] = np.nan
    with pytest.raises(InputError, match="row 9999"):
        forest.predict_proba(Xt)


def test_model_orientation_is_validated_and_normalised(tmp_path):
    X, y = _data()
    arrays = forest_io.forest_to_arrays(
        RandomForestClassifier(n_estimators=2, random_state=0).fit(X, y), DFM50N_FEATURE_INDICES
    )
    with pytest.raises(ModelError, match="orientation"):
        forest_io.write_model_folder(
            tmp_path / "bad", arrays, threshold=0.3, is_demo=False, name="m", orientation="LLS"
        )
    forest_io.write_model_folder(tmp_path / "ok", arrays, threshold=0.3, is_demo=False, name="m", orientation="spl")
    assert load_classifier(tmp_path / "ok").metadata["orientation"] == "SPL"
