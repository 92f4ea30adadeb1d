"""import-model: a trusted pickled forest becomes a folder that scores exactly like the pickle."""

import argparse
import json
import pickle

import joblib
import numpy as np
import pytest
import sklearn
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from DFM50NLib.cli import models as models_cli
from DFM50NLib.constants import DFM50N_FEATURE_INDICES, DFM50N_FEATURE_NAMES
from DFM50NLib.errors import ModelError
from DFM50NLib.model.classifier import load_classifier
from DFM50NLib.model.model_import import import_model


def _fit(n_features=9, labels=(0, 1), seed=0, **params):
    rng = np.random.default_rng(seed)
    X = rng.gamma(2.0, 0.25, size=(250, n_features))
    y = np.where(X[:, 0] + rng.normal(0, 0.2, 250) > 0.5, labels[1], labels[0])
    return RandomForestClassifier(random_state=seed, **params).fit(X, y)


def _pickle(obj, path, how="pickle"):
    if how == "joblib":
        joblib.dump(obj, path)
    else:
        path.write_bytes(pickle.dumps(obj))
    return path


@pytest.fixture
def cols_file(tmp_path):
    path = tmp_path / "dfm50n_rf.cols.json"
    path.write_text(json.dumps({"feature_cols": list(DFM50N_FEATURE_NAMES)}))
    return path


@pytest.mark.parametrize("how", ["pickle", "joblib"])
def test_imported_forest_scores_like_the_pickle(tmp_path, cols_file, how):
    rf = _fit(min_samples_leaf=2)
    pkl = _pickle(rf, tmp_path / "dfm50n_rf.pkl", how)
    clf = load_classifier(import_model(pkl, tmp_path / "out", trust=True, cols=cols_file, threshold=0.3))
    X = np.random.default_rng(5).gamma(2.0, 0.25, size=(1000, 9))
    expected = rf.predict_proba(X)[:, 1]
    assert expected.std() > 0.05
    np.testing.assert_allclose(clf.predict_proba(X), expected, rtol=0, atol=1e-12)
    assert clf.is_demo is False and clf.threshold == 0.3
    assert clf.feature_names == DFM50N_FEATURE_NAMES
    prov = clf.metadata["provenance"]
    import hashlib

    assert prov["source_sha256"] == hashlib.sha256(pkl.read_bytes()).hexdigest()
    assert prov["pickled_with_sklearn_version"] == sklearn.__version__
    assert prov["estimator_params"]["min_samples_leaf"] == 2


def test_feature_names_from_the_forest_and_upstream_spellings(tmp_path):
    rf = _fit()
    rf.feature_names_in_ = np.array([f"FCIB50N_F{i}" for i in reversed(DFM50N_FEATURE_INDICES)], dtype=object)
    clf = load_classifier(import_model(_pickle(rf, tmp_path / "m.pkl"), tmp_path / "out", trust=True))
    assert clf.feature_indices == tuple(reversed(DFM50N_FEATURE_INDICES))
    assert clf.feature_names[0] == "pred_1790"
    # --cols that disagree with the forest's own names are refused
    with pytest.raises(ModelError, match="same features in the same order"):
        import_model(tmp_path / "m.pkl", tmp_path / "out2", trust=True, cols=list(DFM50N_FEATURE_NAMES))


def test_pipeline_with_only_a_forest_accepted(tmp_path, cols_file):
    rf = _fit()
    pkl = _pickle(Pipeline([("rf", rf)]), tmp_path / "p.pkl")
    clf = load_classifier(import_model(pkl, tmp_path / "out", trust=True, cols=cols_file))
    X = np.random.default_rng(1).gamma(2.0, 0.25, size=(50, 9))
    np.testing.assert_allclose(clf.predict_proba(X), rf.predict_proba(X)[:, 1], rtol=0, atol=1e-12)


def test_pickled_sklearn_version_recorded(tmp_path, cols_file, monkeypatch):
    monkeypatch.setattr("sklearn.base.__version__", "1.4.2")  # what __getstate__ writes into the pickle
    pkl = _pickle(_fit(n_estimators=3), tmp_path / "old.pkl")
    monkeypatch.undo()
    clf = load_classifier(import_model(pkl, tmp_path / "out", trust=True, cols=cols_file))
    assert clf.metadata["provenance"]["pickled_with_sklearn_version"] == "1.4.2"


@pytest.mark.parametrize(
    "obj, message",
    [
        (LogisticRegression(), "not a scikit-learn RandomForestClassifier"),
        ({"model": "x"}, "builtins.dict"),
        (Pipeline([("scale", StandardScaler()), ("rf", RandomForestClassifier())]), "bare random forest"),
        (RandomForestClassifier(), "not fitted"),
        (_fit(n_features=8), "takes 8 features"),
        (_fit(labels=(1, 2)), r"classes \[1, 2\]"),
    ],
)
def test_wrong_objects_refused(tmp_path, cols_file, obj, message):
    pkl = _pickle(obj, tmp_path / "bad.pkl")
    with pytest.raises(ModelError, match=message):
        import_model(pkl, tmp_path / "out", trust=True, cols=cols_file)
    assert not (tmp_path / "out").exists()


def test_untrusted_or_unreadable_refused(tmp_path, cols_file):
    pkl = _pickle(_fit(n_estimators=2), tmp_path / "m.pkl")
    with pytest.raises(ModelError, match="--trust"):
        import_model(pkl, tmp_path / "out", cols=cols_file)
    (tmp_path / "junk.pkl").write_bytes(b"this is not a pickle")
    with pytest.raises(ModelError, match="Cannot unpickle"):
        import_model(tmp_path / "junk.pkl", tmp_path / "out", trust=True, cols=cols_file)
    with pytest.raises(ModelError, match="--cols"):  # numpy-fitted forest: names unknown
        import_model(pkl, tmp_path / "out", trust=True)
    assert not (tmp_path / "out").exists()


def _cli(*argv):
    parser = argparse.ArgumentParser()
    models_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_import_requires_trust(tmp_path, cols_file, capsys):
    pkl = _pickle(_fit(n_estimators=5), tmp_path / "m.pkl")
    with pytest.raises(ModelError, match="runs code"):
        _cli("import-model", str(pkl), "--cols", str(cols_file), "--out", str(tmp_path / "out"))
    assert (
        _cli(
            "import-model",
            str(pkl),
            "--trust",
            "--cols",
            str(cols_file),
            "--out",
            str(tmp_path / "out"),
            "--geometry",
            "reference",
            "--orientation",
            "lps",
        )
        == 0
    )
    clf = load_classifier(tmp_path / "out")
    assert clf.metadata["geometry"] == "reference" and clf.metadata["orientation"] == "LPS"
    assert clf.threshold == 0.25 and clf.metadata["provenance"]["command"].startswith(
        f"python -m DFM50NLib import-model {pkl} --trust --cols"
    )
    assert "5 trees" in capsys.readouterr().out
