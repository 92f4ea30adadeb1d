"""Arguments shared by `score`, `features`, `batch` and `demo`, so they read the same everywhere."""

from __future__ import annotations

from DFM50NLib.constants import CENTER_METHODS, DEFAULT_CENTER_METHOD, DEFAULT_ORIENTATION, FCIB_WEIGHTS_ENV


def add_geometry_arguments(p):
    g = p.add_argument_group("cube geometry (METHOD.md §2-3)")
    g.add_argument(
        "--label",
        type=label_value,
        default=None,
        help="mask label value of the lesion, >= 1 (default: every non-zero voxel); segment number (DICOM-SEG) "
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
        default=None,
        help="cube centre: 'dt_peak' = the lesion's deepest point (default, as the upstream CLI), "
        "'centroid' = centre of mass (as the paper's methods), 'point' = --point (implied by --point)",
    )
    g.add_argument(
        "--point",
        type=float,
        nargs=3,
        metavar=("R", "A", "S"),
        default=None,
        help="centre in RAS millimetres (Slicer's coordinates); implies --center point (with --center "
        "dt_peak or centroid it is an error, never silently ignored)",
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
        help="classifier folder (default: the bundled DEMO forest in the models/ folder, which is NOT "
        "the published DFM50N classifier)",
    )
    g.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where FCIB runs (default cpu)")


def label_value(text) -> int:
    """--label: a whole number >= 1 (0 is the background: scoring it would score everything but the lesion)."""
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number (the lesion's value in the mask)") from None
    if value < 1:
        raise argparse.ArgumentTypeError(
            f"{value} is not a lesion label: label values start at 1 (0 is the background)"
        )
    return value


def center_method(args) -> str:
    """--point implies --center point; --point with --center dt_peak/centroid is refused (never ignored)."""
    from DFM50NLib.errors import InputError

    if args.point is not None:
        if args.center not in (None, "point"):
            raise InputError(
                f"--point is given with --center {args.center}: the point would be ignored. Drop --center "
                "(--point implies --center point) or drop --point."
            )
        return "point"
    if args.center == "point":
        raise InputError("--center point needs --point R A S (the centre in RAS millimetres).")
    return args.center or DEFAULT_CENTER_METHOD


def geometry_kwargs(args) -> dict:
    return dict(
        label=args.label,
        segment=args.segment,
        center=center_method(args),
        point_ras=args.point,
        orientation=args.orientation,
        geometry=args.geometry,
    )


def check_output_dir(path, option="--out") -> None:
    """Before any work: `path` is a folder, or can be created as one, and is writable (else InputError)."""
    _check_writable(path, option, want_dir=True)


def check_output_file(path, option="--out") -> None:
    """Before any work: `path` can be written as a file (not a folder; its folder creatable and writable)."""
    _check_writable(path, option, want_dir=False)


def _check_writable(path, option, want_dir):
    import os
    from pathlib import Path

    from DFM50NLib.errors import InputError

    p = Path(path).expanduser()
    if p.is_symlink() and not p.exists():
        raise InputError(
            f"{option} {p} is a symbolic link to {os.readlink(p)}, which does not exist; remove the link or "
            "create its target."
        )
    if p.exists():
        if want_dir and not p.is_dir():
            raise InputError(f"{option} {p} is a file; give a folder (it is created if missing).")
        if not want_dir and p.is_dir():
            raise InputError(f"{option} {p} is a folder; give the name of the file to write.")
    probe = p if (want_dir and p.is_dir()) else p.parent
    while not probe.exists():  # the first existing ancestor decides whether the folders can be created
        if probe == probe.parent:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise InputError(f"{option} {p} lies under {probe}, which is a file, not a folder; choose another place.")
    if probe.exists() and os.statvfs(probe).f_flag & os.ST_RDONLY:
        raise InputError(f"{option} {p}: {probe} is on a read-only file system; choose another place.")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise InputError(f"{option} {p}: cannot write in {probe} (permission denied); choose another place.")
