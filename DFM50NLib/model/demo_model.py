"""The bundled DEMO forest: a default random forest fitted on synthetic data, reproducibly.

The trained DFM50N forest is not public (METHOD.md §5); this stands in so that the whole pipeline runs. Its
scores mean nothing clinically and every result made with it is labelled DEMO. Same seed and same
scikit-learn version -> byte-identical files (the forest file is written with fixed zip metadata).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from DFM50NLib.constants import DEMO_LABEL, DFM50N_FEATURE_INDICES, THRESHOLD

N_CASES = 300


def synthetic_cohort(seed=0, n=N_CASES):
    """(X, y): n cases of the 9 features (non-negative, FCIB-like scale) and 0/1 labels.

    The label follows a logistic model of the first two features, so predicted probabilities spread
    over [0, 1] and about a quarter of the cases are positive (roughly the OLM rate in the paper).
    """
    rng = np.random.default_rng(seed)
    X = rng.gamma(shape=2.0, scale=0.25, size=(n, len(DFM50N_FEATURE_INDICES)))
    z = (X - X.mean(axis=0)) / X.std(axis=0)
    logit = -1.3 + 1.6 * z[:, 0] - 1.1 * z[:, 1]
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int64)
    return X, y


def make_demo_model(out_dir, seed=0) -> Path:
    """Fit RandomForestClassifier(random_state=seed) on `synthetic_cohort(seed)`, write a model folder."""
    import sklearn
    from sklearn.ensemble import RandomForestClassifier

    from DFM50NLib.model.forest_io import forest_to_arrays, write_model_folder

    X, y = synthetic_cohort(seed)
    model = RandomForestClassifier(random_state=seed).fit(X, y)
    arrays = forest_to_arrays(model, DFM50N_FEATURE_INDICES)
    return write_model_folder(
        out_dir,
        arrays,
        threshold=THRESHOLD,
        is_demo=True,
        name=f"DFM50N demo forest (synthetic data, seed {seed})",
        description=f"{DEMO_LABEL}. A default scikit-learn random forest fitted on {N_CASES} synthetic cases; "
        "its scores carry no clinical meaning. It exists so that the pipeline runs end to end. "
        "Geometry and orientation are null: it was not trained on image cubes.",
        threshold_note="The published DFM50N Youden cutoff (0.25), reused for the demo forest.",
        provenance={
            "how": "DFM50NLib.model.demo_model.make_demo_model",
            "command": f"python -m DFM50NLib make-demo-model --out models --seed {seed}",
            "seed": seed,
            "n_cases": N_CASES,
            "n_positive": int(y.sum()),
            "estimator": "RandomForestClassifier (default hyper-parameters)",
            "sklearn_version": sklearn.__version__,
        },
    )
