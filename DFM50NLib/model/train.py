"""Train your own DFM50N forest from a feature table (CSV) and write a model folder.

Default RandomForestClassifier(random_state=seed) on the 9 features of METHOD.md §2.8, no scaling, no imputation
(METHOD.md §2.9). The threshold is the Youden cut-off on the training cohort, as in the paper; it is optimistic
on in-sample probabilities of a forest, so ``youden_on="oob"`` (out-of-bag probabilities) is offered too.
"""

from __future__ import annotations

import csv
import math
import warnings
from pathlib import Path

import numpy as np

from DFM50NLib.constants import DFM50N_FEATURE_INDICES, DFM50N_FEATURE_NAMES
from DFM50NLib.errors import DFM50NWarning, ModelError
from DFM50NLib.model.featurenames import column_map

YOUDEN_ON = ("train", "oob")
_MISSING = {"", "nan", "na", "n/a", "null", "none"}


def read_feature_table(path, label="olm", id_column=None):
    """(X (N, 9) float64 in METHOD.md §2.8 order, y (N,) int 0/1, ids list) from a CSV; ModelError on any problem."""
    from DFM50NLib.io.integrity import check_regular

    path = Path(path)
    check_regular(path)  # a FIFO would block the read
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    except OSError as exc:
        raise ModelError(f"Cannot read the feature table {path}: {exc}.") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise ModelError(
            f"{path} is not a UTF-8 CSV text file ({type(exc).__name__}: {exc}); a pickle or a spreadsheet? "
            "Give the features CSV (e.g. features_9.csv from batch --save-features 9)."
        ) from None
    if len(rows) < 2:
        raise ModelError(f"{path} has no data rows.")
    header, rows = [h.strip() for h in rows[0]], [r for r in rows[1:] if any(c.strip() for c in r)]
    if label not in header:
        others = [h for h in header if h not in _feature_columns(header)]
        raise ModelError(
            f"{path} has no label column {label!r}; its non-feature columns are {others}. "
            "Name the 0/1 outcome column with --label."
        )
    if id_column is None and "case_id" in header:
        id_column = "case_id"
    if id_column is not None and id_column not in header:
        raise ModelError(f"{path} has no id column {id_column!r}.")
    found = column_map(header)
    missing = [n for n, i in zip(DFM50N_FEATURE_NAMES, DFM50N_FEATURE_INDICES) if i not in found]
    if missing:
        raise ModelError(
            f"{path} lacks the feature columns {missing} (accepted spellings: pred_1105, "
            "FCIB50N_F1105, pred_F1105). Give the 9 DFM50N features or all 4096 pred_ columns."
        )
    for r_no, row in enumerate(rows, start=2):
        if len(row) != len(header):
            raise ModelError(f"{path} line {r_no} has {len(row)} fields, the header has {len(header)}.")
    ids = [row[header.index(id_column)] if id_column else f"line {n}" for n, row in enumerate(rows, start=2)]
    X = np.empty((len(rows), len(DFM50N_FEATURE_INDICES)))
    for j, index in enumerate(DFM50N_FEATURE_INDICES):
        col = found[index]
        for i, row in enumerate(rows):
            X[i, j] = _number(row[col], path, header[col], ids[i])
    bad = np.argwhere(~np.isfinite(X))
    if len(bad):
        where = ", ".join(f"{ids[i]} ({DFM50N_FEATURE_NAMES[j]})" for i, j in bad[:10])
        raise ModelError(
            f"{path} has {len(bad)} missing or non-finite feature values, e.g. {where}. The forest "
            "takes no missing values (no imputation, METHOD.md §2.9): fix or drop those cases."
        )
    y = np.array([_label(row[header.index(label)], path, label, ids[i]) for i, row in enumerate(rows)])
    if len(set(y.tolist())) < 2:
        raise ModelError(f"Column {label!r} of {path} holds only the class {int(y[0])}; both 0 and 1 are needed.")
    if id_column and len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})[:5]
        warnings.warn(f"{path}: case ids occur more than once ({dup}); check for duplicated cases.", DFM50NWarning)
    return X, y, ids


def _feature_columns(header):
    from DFM50NLib.model.featurenames import is_feature_name

    return {h for h in header if is_feature_name(h)}


def _number(text, path, column, case):
    text = text.strip()
    if text.lower() in _MISSING:
        return math.nan
    try:
        return float(text)
    except ValueError:
        raise ModelError(f"{path}: {column} of {case} is {text!r}, not a number.") from None


def _label(text, path, column, case):
    try:
        value = float(text.strip())
    except ValueError:
        value = math.nan
    if value not in (0.0, 1.0):
        raise ModelError(
            f"{path}: the label {column!r} of {case} is {text!r}; labels must be 0 (no occult "
            "lymph-node metastasis) or 1 (metastasis)."
        )
    return int(value)


def youden_threshold(y, p):
    """Cut-off maximising sensitivity + specificity - 1, with 'p >= cut-off' = positive.

    Candidates are midpoints between consecutive distinct probabilities, so the cut-off never equals a
    training score and always lies strictly inside (0, 1); ties go to the highest cut-off.
    Returns (threshold, sensitivity, specificity).
    """
    y, p = np.asarray(y), np.asarray(p, dtype=np.float64)
    values = np.unique(p)
    if len(values) < 2:
        raise ModelError("All training probabilities are equal: no Youden cut-off exists; give --threshold.")
    cuts = (values[:-1] + values[1:]) / 2
    pos, neg = p[y == 1], p[y == 0]
    sens = (pos[None, :] >= cuts[:, None]).mean(axis=1)
    spec = (neg[None, :] < cuts[:, None]).mean(axis=1)
    j = sens + spec - 1
    best = len(cuts) - 1 - int(np.argmax(j[::-1]))  # highest cut among the maxima
    if j[best] <= 0:
        raise ModelError(
            "The training probabilities do not separate the classes (Youden index <= 0); "
            "give --threshold or check the labels."
        )
    return float(cuts[best]), float(sens[best]), float(spec[best])


def train_model(
    features_csv,
    out_dir,
    *,
    label="olm",
    threshold=None,
    seed=0,
    id_column=None,
    youden_on="train",
    geometry=None,
    orientation=None,
    name=None,
    command=None,
) -> Path:
    """Fit the forest, pick the threshold, cross-validate, and write a model folder; returns `out_dir`."""
    if youden_on not in YOUDEN_ON:
        raise ModelError(f"youden_on must be one of {YOUDEN_ON}, not {youden_on!r}.")
    try:
        import sklearn
        from sklearn.ensemble import RandomForestClassifier
        from sklearn.metrics import roc_auc_score
    except ImportError:
        raise ModelError("train needs scikit-learn: pip install scikit-learn.") from None
    from DFM50NLib.model.forest_io import Forest, forest_to_arrays, sha256_file, write_model_folder

    X, y, _ = read_feature_table(features_csv, label=label, id_column=id_column)
    oob = threshold is None and youden_on == "oob"
    model = RandomForestClassifier(random_state=seed, oob_score=oob)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "some inputs do not have OOB scores": handled below
        model.fit(X, y)
    arrays = forest_to_arrays(model, DFM50N_FEATURE_INDICES)
    p_train = Forest(arrays).predict_proba(X)
    if threshold is None:
        if oob:
            p_oob = model.oob_decision_function_[:, 1]
            has = np.isfinite(p_oob)
            cut, sens, spec = youden_threshold(y[has], p_oob[has])
        else:
            cut, sens, spec = youden_threshold(y, p_train)
        thr_record = {"method": "youden", "on": youden_on, "value": cut, "sensitivity": sens, "specificity": spec}
        note = (
            f"Youden cut-off on the {'out-of-bag' if oob else 'training'} probabilities of the training "
            "cohort; reused unchanged for validation/test/inference."
        )
    else:
        cut = float(threshold)
        thr_record = {"method": "given", "value": cut}
        note = "Cut-off given by the user at training time."
    training = {
        "features_csv": Path(features_csv).name,
        "features_csv_sha256": sha256_file(features_csv),
        "label_column": label,
        "n_cases": len(y),
        "n_positive": int(y.sum()),
        "n_negative": int(len(y) - y.sum()),
        "training_auc": float(roc_auc_score(y, p_train)),
        "cross_validation": _cross_validate(X, y, seed, RandomForestClassifier, roc_auc_score),
        "threshold": thr_record,
        "seed": seed,
        "sklearn_version": sklearn.__version__,
    }
    return write_model_folder(
        out_dir,
        arrays,
        threshold=cut,
        is_demo=False,
        name=name or f"trained on {Path(features_csv).name}",
        geometry=geometry,
        orientation=orientation,
        threshold_note=note,
        training=training,
        description="Random forest trained with DFM50N train (default hyper-parameters, 9 FCIB features).",
        provenance={
            "how": "train",
            "command": command,
            "seed": seed,
            "sklearn_version": sklearn.__version__,
            "estimator": "RandomForestClassifier (default hyper-parameters)",
        },
    )


def _cross_validate(X, y, seed, forest_type, auc):
    """Stratified k-fold AUC (k = 5, fewer if a class is rarer), same forest settings as the model."""
    from sklearn.model_selection import StratifiedKFold

    k = min(5, int(min(y.sum(), len(y) - y.sum())))
    if k < 2:
        return {"n_splits": k, "note": "too few cases of one class to cross-validate"}
    oof = np.empty(len(y))
    folds = []
    for train, test in StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(X, y):
        p = forest_type(random_state=seed).fit(X[train], y[train]).predict_proba(X[test])[:, 1]
        oof[test] = p
        folds.append(float(auc(y[test], p)))
    return {
        "n_splits": k,
        "shuffle_seed": seed,
        "fold_auc": folds,
        "mean_auc": float(np.mean(folds)),
        "sd_auc": float(np.std(folds, ddof=1)),
        "out_of_fold_auc": float(auc(y, oof)),
    }
