"""`import-model`, `train`, `make-demo-model`: the commands that write a classifier folder."""

from __future__ import annotations

import argparse
import shlex
import sys

from DFM50NLib.constants import THRESHOLD

_FOLDER = (
    "A model folder holds dfm50n_rf.forest.npz (the forest as plain arrays, no pickle), "
    "dfm50n_rf.cols.json, thresholds.json and metadata.json; score with it via --model FOLDER."
)


def register(sub):
    p = sub.add_parser(
        "import-model",
        help="convert your pickled scikit-learn forest (.pkl) into a model folder",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Convert a fitted scikit-learn RandomForestClassifier saved with pickle/joblib (e.g. the "
        "upstream models/dfm50n_rf.pkl) into a safe DFM50N model folder. The forest must take the 9 "
        "FCIB features and have classes [0, 1].\n\nWARNING: unpickling runs code stored in the file. "
        "Only import files you trust; --trust is required. The pickle is read once, here; the "
        "folder written contains no pickle.\n\n" + _FOLDER,
        epilog="example: python -m DFM50NLib import-model dfm50n_rf.pkl --trust --cols dfm50n_rf.cols.json "
        "--out models/mine",
    )
    p.add_argument("pkl", metavar="PKL", help="the pickled forest (.pkl, pickle or joblib)")
    p.add_argument("--trust", action="store_true", help="I trust this file (unpickling can run arbitrary code)")
    p.add_argument(
        "--cols",
        default=None,
        help="JSON file naming the 9 features in the forest's input order, upstream format "
        '{"feature_cols": ["pred_1105", ...]} (default: the names stored in the forest)',
    )
    p.add_argument(
        "--threshold",
        type=float,
        default=THRESHOLD,
        help=f"high-risk cut-off for this forest (default {THRESHOLD}, the published Youden cut-off)",
    )
    p.add_argument("--out", required=True, help="model folder to write (created; files in it replaced)")
    _add_model_context(p)
    p.set_defaults(func=run_import)

    t = sub.add_parser(
        "train",
        help="train your own forest from a CSV of FCIB features + 0/1 labels",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Fit a default scikit-learn RandomForestClassifier (as in the paper) on the 9 DFM50N "
        "features of a table with one row per case. The CSV needs a 0/1 label column and either the "
        "9 features or all 4096 pred_ columns (as written by 'features --all'); feature columns "
        "may be spelled pred_1105, FCIB50N_F1105 or pred_F1105. Reports the training AUC and a "
        "5-fold cross-validated AUC (the honest one).\n\nThe threshold is the Youden cut-off on "
        "the training cohort, like the paper's 0.25. On a forest's in-sample probabilities that "
        "is optimistic; --youden-on oob uses out-of-bag probabilities instead.\n\n" + _FOLDER,
        epilog="example: python -m DFM50NLib train --features cohort.csv --label olm --out models/mine",
    )
    t.add_argument("--features", required=True, metavar="CSV", help="feature table, one row per case")
    t.add_argument("--label", default="olm", help="name of the 0/1 outcome column (default olm)")
    t.add_argument("--out", default="models/mine", help="model folder to write (default models/mine)")
    t.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="fix the high-risk cut-off instead of computing the Youden cut-off",
    )
    t.add_argument(
        "--youden-on",
        choices=("train", "oob"),
        default="train",
        help="probabilities the Youden cut-off is computed on: 'train' = in-sample (default, as "
        "the paper), 'oob' = out-of-bag (less optimistic)",
    )
    t.add_argument("--seed", type=int, default=0, help="random_state of the forest and the CV split (default 0)")
    t.add_argument(
        "--id-column", default=None, help="case identifier column, used in error messages (default: case_id if present)"
    )
    _add_model_context(t)
    t.set_defaults(func=run_train)

    d = sub.add_parser(
        "make-demo-model",
        help="regenerate the bundled DEMO forest (synthetic data)",
        description="Write the DEMO model folder: a default random forest fitted on synthetic data with a fixed "
        "seed. Its scores mean nothing clinically; it only lets the pipeline run end to end. Same "
        "seed + same scikit-learn version = byte-identical files.",
    )
    d.add_argument("--out", default=None, help="folder to write (default: the bundled models/ folder)")
    d.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    d.set_defaults(func=run_demo)


def _add_model_context(p):
    g = p.add_argument_group("what the forest expects (recorded in metadata.json; scoring warns on a mismatch)")
    g.add_argument(
        "--geometry",
        choices=("physical", "reference"),
        default=None,
        help="cube geometry the training features were computed with (see 'score --help')",
    )
    g.add_argument("--orientation", default=None, help="orientation code of those cubes, e.g. LPS")
    g.add_argument("--name", default=None, help="a human-readable name for the model")


def _command(args, positional=()) -> str:
    """The command line as parsed (for metadata.json), independent of how Python was started."""
    parts = ["python -m DFM50NLib", args.command] + [shlex.quote(str(getattr(args, k))) for k in positional]
    for key, value in vars(args).items():
        if key in ("func", "command", *positional) or value is None or value is False:
            continue
        flag = "--" + key.replace("_", "-")
        parts += [flag] if value is True else [flag, shlex.quote(str(value))]
    return " ".join(parts)


def _summary(folder) -> str:
    from DFM50NLib.model.classifier import load_classifier

    clf = load_classifier(folder)
    return (
        f"model folder {clf.path}: {clf.n_trees} trees, features {', '.join(clf.feature_names)}, "
        f"threshold {clf.threshold:.4g}, sha256 {clf.sha256[:12]}…"
    )


def run_import(args) -> int:
    from DFM50NLib.cli.common import check_output_dir
    from DFM50NLib.model.model_import import TRUST_WARNING, import_model

    check_output_dir(args.out)
    if args.trust:
        print(f"note: {TRUST_WARNING}", file=sys.stderr)
    folder = import_model(
        args.pkl,
        args.out,
        trust=args.trust,
        cols=args.cols,
        threshold=args.threshold,
        geometry=args.geometry,
        orientation=args.orientation,
        name=args.name,
        command=_command(args, ("pkl",)),
    )
    print(_summary(folder))
    return 0


def run_train(args) -> int:
    from DFM50NLib.cli.common import check_output_dir
    from DFM50NLib.model.classifier import load_classifier
    from DFM50NLib.model.train import train_model

    check_output_dir(args.out)
    folder = train_model(
        args.features,
        args.out,
        label=args.label,
        threshold=args.threshold,
        seed=args.seed,
        id_column=args.id_column,
        youden_on=args.youden_on,
        geometry=args.geometry,
        orientation=args.orientation,
        name=args.name,
        command=_command(args),
    )
    tr = load_classifier(folder).metadata["training"]
    cv = tr["cross_validation"]
    print(
        f"{tr['n_cases']} cases ({tr['n_positive']} positive); training AUC {tr['training_auc']:.3f}"
        + (
            f"; {cv['n_splits']}-fold cross-validated AUC {cv['mean_auc']:.3f} ± {cv['sd_auc']:.3f}"
            if "mean_auc" in cv
            else ""
        )
    )
    print(_summary(folder))
    return 0


def run_demo(args) -> int:
    from DFM50NLib.model.classifier import default_model_dir
    from DFM50NLib.model.demo_model import make_demo_model

    folder = make_demo_model(args.out or default_model_dir(), seed=args.seed)
    print("DEMO " + _summary(folder))
    return 0
