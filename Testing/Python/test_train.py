"""train: a feature CSV + labels -> a model folder that load_classifier uses, with honest numbers."""

import argparse
import csv
import json

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from DFM50NLib.cli import models as models_cli
from DFM50NLib.constants import DFM50N_FEATURE_INDICES, DFM50N_FEATURE_NAMES
from DFM50NLib.errors import ModelError
from DFM50NLib.model.classifier import load_classifier
from DFM50NLib.model.train import read_feature_table, train_model, youden_threshold


def _cohort(n=160, seed=0, separation=1.5):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(int)
    X = rng.gamma(2.0, 0.25, size=(n, 9))
    X[:, 0] += separation * y  # pred_1105 carries the signal
    return X, y


def _write(path, header, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def _csv(path, X, y, names=DFM50N_FEATURE_NAMES, label="olm"):
    rows = [[f"case{i:03d}", *(repr(float(v)) for v in X[i]), int(y[i])] for i in range(len(y))]
    return _write(path, ["case_id", *names, label], rows)


def test_train_on_separable_cohort(tmp_path):
    X, y = _cohort()
    csv_path = _csv(tmp_path / "cohort.csv", X, y, names=[f"FCIB50N_F{i}" for i in DFM50N_FEATURE_INDICES])
    clf = load_classifier(train_model(csv_path, tmp_path / "mine", label="olm", seed=0))
    p = clf.predict_proba(X)
    auc = roc_auc_score(y, p)
    tr = clf.metadata["training"]
    assert auc > 0.9 and tr["training_auc"] == pytest.approx(auc, abs=1e-12)
    assert 0 < clf.threshold < 1 and clf.threshold == tr["threshold"]["value"]
    # the threshold is a Youden cut-off: no other cut-off on the training scores does better
    j = lambda t: (p[y == 1] >= t).mean() + (p[y == 0] < t).mean() - 1
    assert j(clf.threshold) >= max(j(t) for t in np.unique(p)) - 1e-12
    assert tr["n_cases"] == 160 and tr["n_positive"] == int(y.sum()) and tr["seed"] == 0
    cv = tr["cross_validation"]
    assert cv["n_splits"] == 5 and len(cv["fold_auc"]) == 5 and 0.8 < cv["mean_auc"] <= 1
    assert clf.is_demo is False and clf.feature_names == DFM50N_FEATURE_NAMES
    # the same fit in scikit-learn gives the same probabilities: the folder holds that forest
    from sklearn.ensemble import RandomForestClassifier

    rf = RandomForestClassifier(random_state=0).fit(X, y)
    np.testing.assert_allclose(p, rf.predict_proba(X)[:, 1], rtol=0, atol=1e-12)


def test_youden_threshold_by_hand():
    y = np.array([0, 0, 0, 1, 0, 1, 1])
    p = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.8, 0.9])
    # cut 0.35: sens 3/3, spec 3/4 -> J 0.75; cut 0.65: sens 2/3, spec 4/4 -> J 0.667
    assert youden_threshold(y, p) == pytest.approx((0.35, 1.0, 0.75))
    with pytest.raises(ModelError, match="do not separate"):
        youden_threshold([1, 0], [0.2, 0.8])


def test_all_4096_columns_oob_threshold_and_cli(tmp_path, capsys):
    X9, y = _cohort(n=80, seed=1)
    full = np.random.default_rng(2).random((80, 4096))
    full[:, list(DFM50N_FEATURE_INDICES)] = X9
    rows = [[*(repr(float(v)) for v in full[i]), int(y[i])] for i in range(80)]
    csv_path = _write(tmp_path / "all.csv", [*(f"pred_{i}" for i in range(4096)), "label"], rows)
    parser = argparse.ArgumentParser()
    models_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(
        [
            "train",
            "--features",
            str(csv_path),
            "--label",
            "label",
            "--out",
            str(tmp_path / "m"),
            "--youden-on",
            "oob",
            "--seed",
            "3",
            "--geometry",
            "physical",
            "--orientation",
            "LPS",
        ]
    )
    assert args.func(args) == 0
    clf = load_classifier(tmp_path / "m")
    assert clf.metadata["training"]["threshold"]["on"] == "oob" and 0 < clf.threshold < 1
    assert clf.metadata["geometry"] == "physical" and "--youden-on oob" in clf.metadata["provenance"]["command"]
    np.testing.assert_array_equal(clf.predict_from_4096(full), clf.predict_proba(X9))
    assert "training AUC" in capsys.readouterr().out


def test_given_threshold(tmp_path):
    X, y = _cohort(n=60)
    clf = load_classifier(train_model(_csv(tmp_path / "c.csv", X, y), tmp_path / "m", threshold=0.4))
    assert clf.threshold == 0.4 and clf.metadata["training"]["threshold"]["method"] == "given"
    with pytest.raises(ModelError, match="strictly between"):
        train_model(tmp_path / "c.csv", tmp_path / "m2", threshold=1.0)


def test_clear_errors(tmp_path):
    X, y = _cohort(n=20)
    good = _csv(tmp_path / "good.csv", X, y)
    with pytest.raises(ModelError, match="no label column 'outcome'.*case_id"):
        read_feature_table(good, label="outcome")
    with pytest.raises(ModelError, match=r"lacks the feature columns \['pred_1790'\]"):
        read_feature_table(_csv(tmp_path / "a.csv", X, y, names=DFM50N_FEATURE_NAMES[:8] + ("pred_7",)))
    y2 = y.copy()
    y2[3] = 2
    with pytest.raises(ModelError, match="case003.*must be 0"):
        read_feature_table(_csv(tmp_path / "b.csv", X, y2))
    with pytest.raises(ModelError, match="only the class 0"):
        read_feature_table(_csv(tmp_path / "c.csv", X, np.zeros_like(y)))
    Xn = X.astype(object)
    Xn[5, 2] = ""
    rows = [[f"case{i:03d}", *Xn[i], int(y[i])] for i in range(len(y))]
    with pytest.raises(ModelError, match=r"1 missing.*case005 \(pred_2857\)"):
        read_feature_table(_write(tmp_path / "d.csv", ["case_id", *DFM50N_FEATURE_NAMES, "olm"], rows))
    with pytest.raises(ModelError, match="both name FCIB feature 93"):
        read_feature_table(_csv(tmp_path / "e.csv", np.c_[X, X[:, 7]], y, names=(*DFM50N_FEATURE_NAMES, "FCIB50N_F93")))
    with pytest.raises(ModelError, match="youden_on"):
        train_model(good, tmp_path / "m", youden_on="test")


def test_ids_and_x_order_do_not_matter(tmp_path):
    """Columns in any order and spelling give the same model as the METHOD.md §2.8 order."""
    X, y = _cohort(n=60, seed=4)
    a = load_classifier(train_model(_csv(tmp_path / "a.csv", X, y), tmp_path / "a"))
    perm = np.random.default_rng(0).permutation(9)
    names = [f"pred_F{DFM50N_FEATURE_INDICES[j]}" for j in perm]
    b = load_classifier(train_model(_csv(tmp_path / "b.csv", X[:, perm], y, names=names), tmp_path / "b"))
    assert a.sha256 == b.sha256
    meta = json.loads((tmp_path / "b" / "metadata.json").read_text())
    assert meta["training"]["features_csv"] == "b.csv"
