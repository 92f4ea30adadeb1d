"""`score` (one case -> DFM50N score) and `features` (one case -> FCIB features CSV)."""

from __future__ import annotations

import sys
from pathlib import Path

from DFM50NLib.cli.common import add_geometry_arguments, add_model_arguments, geometry_kwargs


def register(sub):
    p = sub.add_parser(
        "score",
        help="score one CT + lesion mask",
        description="Compute the DFM50N score of one lesion: CT + mask -> 50 mm cube -> FCIB -> 9 features "
        "-> random forest. Writes <case>.dfm50n.json and .csv to --out.",
    )
    _add_inputs(p)
    add_geometry_arguments(p)
    add_model_arguments(p)
    c = p.add_argument_group("combined clinical model (METHOD.md §2.10; reported only when all inputs are known)")
    c.add_argument("--smoking", default=None, help="smoking history: yes/no")
    c.add_argument("--spiculated", default=None, help="spiculated margin: yes/no")
    c.add_argument(
        "--short-axis-cm", type=float, default=None, help="short-axis diameter in cm (default: measured from the mask)"
    )
    o = p.add_argument_group("outputs")
    o.add_argument("--out", default="dfm50n-output", help="output folder (default ./dfm50n-output)")
    o.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a result in --out with the same case id that was scored from another CT or mask "
        "(without it, that is refused)",
    )
    o.add_argument(
        "--save-cubes",
        action="store_true",
        help="also write the 50 mm CT and mask cubes (NIfTI, overlay on the CT in Slicer/ITK-SNAP)",
    )
    o.add_argument("--report", action="store_true", help="also write an HTML + PDF report")
    o.add_argument(
        "--stability",
        action="store_true",
        help="also score under +-2 mm centre shifts and 1 mm mask erosion/dilation (8 more forwards) "
        "and warn if the risk label flips; shown in the report",
    )
    o.add_argument("--all-features", action="store_true", help="keep all 4096 FCIB features in the JSON")
    o.add_argument(
        "--dicom-sr",
        default=None,
        metavar="DIR",
        help="also write a DICOM SR (TID 1500 measurement report) and a DICOM SEG of the lesion to DIR; "
        "the CT must be a DICOM series folder",
    )
    p.set_defaults(func=run_score)

    f = sub.add_parser(
        "features",
        help="FCIB features of one case to CSV",
        description="Extract FCIB features of one lesion cube (the 9 DFM50N features, or all 4096) to CSV, "
        "for training your own classifier.",
    )
    _add_inputs(f)
    add_geometry_arguments(f)
    add_model_arguments(f)
    f.add_argument("--all", action="store_true", help="all 4096 features (default: the 9 DFM50N ones)")
    f.add_argument("--out", required=True, help="CSV file to write")
    f.set_defaults(func=run_features)


def _add_inputs(p):
    p.add_argument("--image", required=True, help="CT: NIfTI, NRRD, MHA/MHD file or a DICOM series folder")
    p.add_argument(
        "--mask",
        required=True,
        help="lesion mask: NIfTI, NRRD, MHA, Slicer .seg.nrrd, DICOM-SEG or RTSTRUCT (RS*.dcm, with --segment)",
    )
    p.add_argument(
        "--case-id",
        default=None,
        help="case identifier (default: PatientID + series of a DICOM folder; parent folder + name of a file)",
    )


def run_score(args) -> int:
    from DFM50NLib.atomic import safe_stem
    from DFM50NLib.cli.common import check_output_dir
    from DFM50NLib.errors import InputError
    from DFM50NLib.model.encoder_process import one_shot_encoder
    from DFM50NLib.scoring.case_id import default_case_id, refuse_replacing_another_input
    from DFM50NLib.scoring.clinical import parse_yes_no
    from DFM50NLib.scoring.pipeline import normalise_options, score_case

    clinical = {
        "smoking": parse_yes_no(args.smoking, "--smoking"),
        "spiculated": parse_yes_no(args.spiculated, "--spiculated"),
        "short_axis_cm": args.short_axis_cm,
    }
    if args.short_axis_cm is not None and not (0 < args.short_axis_cm < 30):
        raise InputError(f"--short-axis-cm must be a diameter in cm between 0 and 30, got {args.short_axis_cm:g}.")
    geo = geometry_kwargs(args)
    normalise_options(**geo)  # every option checked before any file is read
    check_output_dir(args.out)
    if args.dicom_sr is not None:
        check_output_dir(args.dicom_sr, "--dicom-sr")  # before the score, not after it
    case_id = args.case_id or default_case_id(args.image)
    if not args.overwrite:
        refuse_replacing_another_input(Path(args.out) / f"{safe_stem(case_id)}.dfm50n.json", args.image, args.mask)
    with one_shot_encoder(args.weights, args.device) as encoder:  # loads while the case is read
        result = score_case(
            args.image,
            args.mask,
            case_id=case_id,
            weights=args.weights,
            model=args.model,
            device=args.device,
            download=args.download,
            encoder=encoder,
            clinical=clinical,
            keep_features=4096 if args.all_features else 9,
            out_dir=args.out,
            write_cubes=args.save_cubes,
            report=args.report,
            stability=args.stability,
            dicom_sr=args.dicom_sr,
            **geo,
        )
    print(format_result(result))
    print(f"results written to {Path(args.out).resolve()}")
    return 0


def format_result(r) -> str:
    lines = []
    if r.classifier_is_demo:
        lines.append(f"*** {r.demo_banner} ***")
    lines.append(f"case {r.case_id}: DFM50N = {r.score:.4f} (threshold {r.threshold:g}) -> {r.risk_label}")
    if r.combined_probability is not None:
        lines.append(
            f"combined clinical model: p = {r.combined_probability:.4f} -> "
            f"{'OLM positive' if r.combined_positive else 'OLM negative'} (threshold 0.254)"
        )
    c = r.center_ras
    lines.append(
        f"centre ({r.center_method}) RAS = ({c[0]:.1f}, {c[1]:.1f}, {c[2]:.1f}) mm; "
        f"orientation {r.orientation}; geometry {r.geometry}"
    )
    lines.append(
        f"lesion {r.mask_volume_mm3:.0f} mm3, coverage {r.coverage:.1%}"
        + ("; mask touches a cube face" if r.touches_border else "")
        + ("" if r.cube_padded is None else f"; cube padded off the image (upstream touched_border): {r.cube_padded}")
    )
    from DFM50NLib.cli import already_shown

    lines += [f"warning: {w}" for w in r.warnings if w != r.demo_banner and not already_shown(w)]
    lines.append(r.disclaimer)
    return "\n".join(lines)


def features_warnings(prep, prov) -> list:
    """What `score` would warn about the same cube (coverage, out of population, unverified weights, and every
    note from reading the case): features of such a cube train or test a classifier just as badly."""
    from DFM50NLib.scoring.pipeline import population_warnings

    long_axis = None if prep.diameters is None else float(prep.diameters.long_mm)
    notes = list(prep.warnings) + population_warnings(long_axis, float(prep.stats["coverage"]))
    return notes + ([] if prov["verified"] else [prov["text"]])


def run_features(args) -> int:
    import warnings

    from DFM50NLib import atomic
    from DFM50NLib.cli.common import check_output_file
    from DFM50NLib.constants import DFM50N_FEATURE_INDICES
    from DFM50NLib.errors import DFM50NWarning
    from DFM50NLib.model.encoder_process import one_shot_encoder
    from DFM50NLib.model.weights import provenance
    from DFM50NLib.scoring.pipeline import load_encoder, normalise_options, prepare_case
    from DFM50NLib.scoring.result import rows_to_csv

    geo = geometry_kwargs(args)
    normalise_options(**geo)
    check_output_file(args.out)
    with one_shot_encoder(args.weights, args.device) as encoder:  # loads while the case is read
        prep = prepare_case(args.image, args.mask, case_id=args.case_id, **geo)
        encoder = encoder or load_encoder(args.weights, args.device, download=args.download)
        feats = encoder.features(prep.cube.ct)[0]
        prov = provenance(encoder.weights_path, encoder.weights_sha256)  # waits for the CRC + hash check
    for note in features_warnings(prep, prov):
        warnings.warn(note, DFM50NWarning, stacklevel=2)
    idx = range(len(feats)) if args.all else DFM50N_FEATURE_INDICES
    row = {"case_id": prep.case_id, **{f"pred_{i}": float(feats[i]) for i in idx}}
    atomic.write_text(args.out, rows_to_csv([row]))
    print(f"{len(idx)} features of {prep.case_id} written to {args.out}", file=sys.stderr)
    return 0
