"""`batch`: score a cohort (manifest CSV or two folders), resumable, locally or on a Dask cluster."""

from __future__ import annotations

import sys

from DFM50NLib.cli.common import add_geometry_arguments, add_model_arguments, geometry_kwargs

EPILOG = """\
manifest CSV: columns case_id,image,mask; optional label, segment, center (dt_peak | centroid | 'R A S'
point in RAS mm), smoking, spiculated (yes/no), short_axis_cm; every other column (outcomes, ...) is copied
to results.csv. Relative paths are relative to the manifest's folder. Images: NIfTI, NRRD, MHA/MHD or a
DICOM series folder; masks: the same, Slicer .seg.nrrd or a DICOM-SEG .dcm file (--segment / label
column; a DICOM-SEG's label is its segment number; DICOM-SEG needs: pip install highdicom).

--images/--masks pairing: base name = file name without extension (a DICOM series folder: its name);
a mask pairs with the image of the same base name, optionally followed by _mask, _seg, _segmentation,
_label(s), _lesion (or with '-'): ct01.nii.gz <-> ct01_seg.nrrd. Unpaired files go to errors.csv.

Resume: re-running the same command skips every case already scored with the same configuration
(inputs, options, weights, classifier, software version) and redoes the rest. Outputs in --out:
cases/<id>.json, errors/<id>.json, results.csv, errors.csv, features_*.csv (or .parquet).
--stability is part of the configuration: adding it re-scores the cases scored without it.
"""


def register(sub):
    p = sub.add_parser(
        "batch",
        help="score a cohort (manifest or folders), resumable",
        description="Score many cases: one JSON per case as it finishes, results.csv / errors.csv regenerated "
        "at the end; a re-run resumes. Local (in-process or --workers N) or on a Dask cluster "
        "(--scheduler).",
        epilog=EPILOG,
        formatter_class=__import__("argparse").RawDescriptionHelpFormatter,
    )
    src = p.add_argument_group("cases")
    src.add_argument("--manifest", default=None, help="CSV with case_id,image,mask[,...] (see below)")
    src.add_argument("--images", default=None, help="folder of CTs (with --masks), paired by file name")
    src.add_argument("--masks", default=None, help="folder of lesion masks (may be the --images folder)")
    add_geometry_arguments(p)
    add_model_arguments(p)
    r = p.add_argument_group("run")
    r.add_argument("--out", required=True, help="output folder (re-use it to resume)")
    r.add_argument("--batch-size", type=int, default=4, help="cubes per network forward (default 4)")
    r.add_argument(
        "--workers",
        type=int,
        default=None,
        help="reader processes that prepare the cubes (read CT and mask, cut the cube) for the one network in "
        "this process (~0.2 GB each); default: cores - 1 with --device cuda, else 1 = a prefetch thread",
    )
    r.add_argument(
        "--scheduler", default=None, help="Dask scheduler address (tcp://host:8786): run on that cluster instead"
    )
    r.add_argument(
        "--save-features",
        type=int,
        choices=(9, 4096),
        default=None,
        help="also write features_9.csv (and features_4096.csv with 4096)",
    )
    r.add_argument(
        "--features-format",
        choices=("csv", "parquet"),
        default="csv",
        help="format of the --save-features tables (parquet needs pyarrow; default csv)",
    )
    r.add_argument("--report", action="store_true", help="also write a report per case in OUT/reports")
    r.add_argument(
        "--stability",
        action="store_true",
        help="also run the stability panel per case (centre moved ±2 mm, mask ±1 mm: 8 more cubes "
        "through FCIB); min/median/max/n_flipped go to results.csv and the reports",
    )
    r.add_argument(
        "--dicom-sr",
        default=None,
        metavar="DIR",
        help="also write a DICOM SR (TID 1500) + DICOM SEG per case to DIR (cases whose CT is a DICOM series; "
        "the others get a warning)",
    )
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_batch)


def run_batch(args) -> int:
    from DFM50NLib.batch.cohort import score_cohort
    from DFM50NLib.errors import InputError

    if bool(args.manifest) == bool(args.images or args.masks):
        raise InputError("Give either --manifest CSV or both --images DIR and --masks DIR.")
    if (args.images and not args.masks) or (args.masks and not args.images):
        raise InputError("--images and --masks go together (they may name the same folder).")
    from DFM50NLib.cli.common import check_output_dir

    geo = geometry_kwargs(args)  # options first, then the output folder, then the inputs
    check_output_dir(args.out)
    if args.dicom_sr is not None:
        check_output_dir(args.dicom_sr, "--dicom-sr")
    if (args.workers is not None and args.workers < 1) or args.batch_size < 1:
        raise InputError("--workers and --batch-size must be at least 1.")
    source = args.manifest or (args.images, args.masks)
    bar = None if args.no_progress else _Bar()
    try:
        summary = score_cohort(
            source,
            args.out,
            progress=bar,
            workers=args.workers,
            scheduler=args.scheduler,
            batch_size=args.batch_size,
            save_features=args.save_features,
            weights=args.weights,
            model=args.model,
            device=args.device,
            report=args.report,
            download=args.download,
            stability=args.stability,
            features_format=args.features_format,
            dicom_sr=args.dicom_sr,
            on_result=CaseWarnings(bar),
            **geo,
        )
    finally:
        if bar is not None:
            bar.close()
    print(summary)
    if summary.n_failed:
        print(f"{summary.n_failed} case(s) failed or unpaired: see {summary.paths['errors_csv']}", file=sys.stderr)
    return 1 if summary.n_failed else 0


class CaseWarnings:
    """Each scored case's warnings on the console as it finishes (`warning: <case>: text`), above the progress
    bar; those of the whole job (the DEMO label, unverified weights) once, as `score` shows them."""

    def __init__(self, bar=None):
        self.bar, self.shown = bar, set()

    def __call__(self, result):
        from DFM50NLib.cli import already_shown

        job_wide = {result.demo_banner, result.fcib_weights}
        for note in result.warnings:
            key = note if note in job_wide else (result.case_id, note)
            if key in self.shown or already_shown(note):
                continue
            self.shown.add(key)
            line = f"warning: {note}" if note in job_wide else f"warning: {result.case_id}: {note}"
            if self.bar is not None and self.bar.bar is not None:
                self.bar.bar.write(line, file=sys.stderr)
            else:
                print(line, file=sys.stderr)


class _Bar:
    """tqdm on stderr (rate and ETA), created on the first progress call."""

    def __init__(self):
        self.bar = None

    def __call__(self, done, total, case_id):
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=done, unit="case", file=sys.stderr, dynamic_ncols=True, smoothing=0.1)
        else:
            self.bar.update(done - self.bar.n)
        if case_id:
            self.bar.set_postfix_str(str(case_id)[:24], refresh=False)

    def close(self):
        if self.bar is not None:
            self.bar.close()
