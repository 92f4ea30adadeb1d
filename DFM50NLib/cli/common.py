"""Arguments shared by `score`, `features`, `batch` and `demo`, so they read the same everywhere."""

from __future__ import annotations

from DFM50NLib.constants import CENTER_METHODS, DEFAULT_CENTER_METHOD, DEFAULT_ORIENTATION, FCIB_WEIGHTS_ENV


def add_geometry_arguments(p):
    g = p.add_argument_group("cube geometry (METHOD.md §2-3)")
    g.add_argument(
        "--label",
        type=int,
        default=None,
        help="mask label value of the lesion (default: every non-zero voxel); segment number (DICOM-SEG) "
        "or ROI number (RTSTRUCT)",
    )
    g.add_argument(
        "--segment",
        default=None,
        help="segment name (Slicer .seg.nrrd), segment label/description (DICOM-SEG) or ROI name (RTSTRUCT, "
        "ignoring case, e.g. GTV-1)",
    )
    g.add_argument(
        "--center",
        choices=CENTER_METHODS,
        default=DEFAULT_CENTER_METHOD,
        help="cube centre: 'dt_peak' = the lesion's deepest point (default, as the upstream CLI), "
        "'centroid' = centre of mass (as the paper's methods), 'point' = --point",
    )
    g.add_argument(
        "--point",
        type=float,
        nargs=3,
        metavar=("R", "A", "S"),
        default=None,
        help="centre in RAS millimetres (Slicer's coordinates), with --center point",
    )
    g.add_argument(
        "--orientation",
        default=DEFAULT_ORIENTATION,
        help="patient axes of the cube's array axes, e.g. LPS (default), LAS (dcm2niix-like), "
        "SPL (FCIB's training order); the score depends on it",
    )
    g.add_argument(
        "--geometry",
        choices=("physical", "reference"),
        default="physical",
        help="'physical' = true 1 mm cube in patient space (default); 'reference' = reproduce the "
        "upstream scripts' arithmetic bit for bit, bugs included (only for classifiers "
        "trained on such cubes)",
    )


def add_model_arguments(p):
    g = p.add_argument_group("models")
    g.add_argument(
        "--weights",
        default=None,
        help=f"FCIB weights file model_weights.torch (else ${FCIB_WEIGHTS_ENV}, else the cached "
        "download; see 'weights --help')",
    )
    g.add_argument(
        "--download", action="store_true", help="download the FCIB weights (738 MB, Zenodo) if they are not found"
    )
    g.add_argument(
        "--model",
        default=None,
        help="classifier folder (default: the bundled DEMO forest in DFM50NLib/model/bundled/, which is NOT "
        "the published DFM50N classifier)",
    )
    g.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where FCIB runs (default cpu)")


def geometry_kwargs(args) -> dict:
    return dict(
        label=args.label,
        segment=args.segment,
        center=args.center,
        point_ras=args.point,
        orientation=args.orientation,
        geometry=args.geometry,
    )
