"""CT + lesion mask -> DFM50N `Result`, in three stages so batch jobs can overlap I/O and batch forwards.

prepare_case: everything before the network (read, mask, centre, cube)  -> PreparedCase
encoder.features: the FCIB forward (batched by callers that have many cubes)
finish_case: 9 features -> forest -> Result with every METHOD.md §4 field
"""

from __future__ import annotations

import datetime as _dt
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import numpy as np

from DFM50NLib import __version__
from DFM50NLib.atomic import safe_stem
from DFM50NLib.constants import (
    CENTER_METHODS,
    CUBE_SIZE,
    DEFAULT_CENTER_METHOD,
    DEFAULT_ORIENTATION,
    GEOMETRY_MODES,
    REFERENCE_PAD_VALUE,
    RISK_HIGH,
    RISK_LOW,
)
from DFM50NLib.errors import DFM50NWarning, InputError
from DFM50NLib.geometry.volume import Volume, ras_to_lps

if TYPE_CHECKING:
    from DFM50NLib.scoring.result import Result


@dataclass
class PreparedCase:
    """Everything computed before the network; enough to finish the score and draw the report."""

    case_id: str
    options: dict
    cube: object  # cube.Cube
    center_ras: np.ndarray
    stats: dict  # mask_voxels, mask_volume_mm3, components_dropped, cube_mask_voxels, coverage, touches_border
    ct: Optional[Volume] = None  # None in reference mode
    prepared_mask: object = None  # mask.PreparedMask, None in reference mode
    diameters: object = None  # diameters.Diameters when measurable
    timings: dict = field(default_factory=dict)
    warnings: list = field(default_factory=list)


def normalise_options(
    center=DEFAULT_CENTER_METHOD,
    orientation=DEFAULT_ORIENTATION,
    geometry="physical",
    label=None,
    segment=None,
    point_ras=None,
) -> dict:
    """Validate the options that change the cube; fail before any heavy work."""
    from DFM50NLib.geometry.orientation import normalise_code

    if center not in CENTER_METHODS:
        raise InputError(f"Unknown centre method {center!r}: use one of {', '.join(CENTER_METHODS)}.")
    if geometry not in GEOMETRY_MODES:
        raise InputError(
            f"Unknown geometry mode {geometry!r}: use 'physical' (default) or 'reference' "
            "(upstream-script parity, METHOD.md §3)."
        )
    if label is not None and (isinstance(label, bool) or int(label) != label or int(label) < 1):
        raise InputError(
            f"label must be a whole number >= 1 (the lesion's value in the mask), got {label!r}: 0 is the "
            "background, so label 0 would score everything outside the lesion."
        )
    if point_ras is not None and center != "point":
        raise InputError(
            f"A centre point was given but the centre method is {center!r}: the point would be ignored. "
            "Give the point alone (it implies --center point) or drop it."
        )
    if center == "point":
        if point_ras is None:
            raise InputError("Centre method 'point' needs a point: give --point R A S (RAS mm).")
        point_ras = [float(v) for v in point_ras]
        if len(point_ras) != 3 or not np.all(np.isfinite(point_ras)):
            raise InputError(f"The centre point must be 3 finite RAS coordinates in mm, got {point_ras!r}.")
        if geometry == "reference":
            raise InputError(
                "Reference geometry reproduces the upstream scripts, which only know "
                "'dt_peak' and 'centroid'; use physical geometry with a given point."
            )
    orientation = normalise_code(orientation) if geometry == "physical" else "file-ijk"
    return {
        "center": center,
        "orientation": orientation,
        "geometry": geometry,
        "label": None if label is None else int(label),
        "segment": segment,
        "point_ras": point_ras,
    }


def prepare_case(
    image,
    mask,
    *,
    case_id=None,
    label=None,
    segment=None,
    center=DEFAULT_CENTER_METHOD,
    point_ras=None,
    orientation=DEFAULT_ORIENTATION,
    geometry="physical",
) -> PreparedCase:
    """Read (if paths), check, mask, centre and cut the cube. No network involved."""
    options = normalise_options(center, orientation, geometry, label, segment, point_ras)
    case_id = case_id or _case_id_from(image)
    if geometry == "reference":
        return _prepare_reference(image, mask, case_id, options)
    return _prepare_physical(image, mask, case_id, options)


def prepare_as_scored(ct: Volume, mask: Volume, result) -> PreparedCase:
    """The case prepared again with the options `result` was scored with (centre method and point,
    orientation, geometry): for the cube, the report and the DICOM SR drawn after the score."""
    return prepare_case(
        ct,
        mask,
        center=result.center_method,
        point_ras=result.center_ras if result.center_method == "point" else None,
        orientation=result.orientation,
        geometry=result.geometry,
    )


def _prepare_physical(image, mask, case_id, options) -> PreparedCase:
    from DFM50NLib import io
    from DFM50NLib.geometry.center import find_center
    from DFM50NLib.geometry.cube import cube_stats, extract_cube, fill_fraction
    from DFM50NLib.geometry.mask import prepare_mask
    from DFM50NLib.scoring import guards

    timings, notes = {}, []
    t = time.perf_counter()
    ct = image if isinstance(image, Volume) else io.read_volume(image)
    guards.check_ct_extent(ct.shape, ct.spacing, image if isinstance(image, (str, Path)) else ct.name or "CT")
    notes += io.check_ct_intensities(ct)
    mask_vol = (
        mask
        if isinstance(mask, Volume)
        else io.read_mask(mask, label=options["label"], segment=options["segment"], reference=ct)
    )
    notes += list(mask_vol.meta.get("warnings", []))
    timings["read"] = time.perf_counter() - t

    t = time.perf_counter()
    label = options["label"] if isinstance(mask, Volume) or options["segment"] is None else None
    pm = prepare_mask(mask_vol, ct, label=label)
    timings["mask"] = time.perf_counter() - t

    t = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:  # e.g. a given point outside the lesion
        warnings.simplefilter("always", DFM50NWarning)
        center_ras = np.asarray(find_center(pm, options["center"], options["point_ras"]), dtype=float)
    notes += [str(w.message) for w in caught if issubclass(w.category, DFM50NWarning)]
    timings["center"] = time.perf_counter() - t

    t = time.perf_counter()
    cube = extract_cube(ct, pm, center_ras, options["orientation"])
    stats = dict(cube_stats(cube, pm))
    timings["cube"] = time.perf_counter() - t
    stats.update(
        mask_voxels=int(pm.voxels),
        mask_volume_mm3=float(pm.volume_mm3),
        components_dropped=int(pm.components_dropped),
        cube_fill_share=fill_fraction(ct, cube.cube_to_ras),
    )

    diam = _measure_diameters(pm, notes)
    notes += guards.physical_warnings(ct, pm, stats["cube_fill_share"], _lesion_name(mask, mask_vol, options))
    notes += _geometry_warnings(stats)
    return PreparedCase(case_id, options, cube, center_ras, stats, ct, pm, diam, timings, notes)


def _prepare_reference(image, mask, case_id, options) -> PreparedCase:
    from DFM50NLib.io.nifti_source import reference_cube_from_files

    if isinstance(image, Volume) or isinstance(mask, Volume):
        raise InputError(
            "Reference geometry reproduces the upstream scripts on files: give file paths "
            "(NIfTI as the upstream scripts read it), not in-memory volumes."
        )
    from DFM50NLib.io.integrity import check_image_file
    from DFM50NLib.io.values import hu_range_warnings
    from DFM50NLib.scoring import guards

    for path in (image, mask):  # nibabel reads these: the same completeness checks as every other read
        check_image_file(path)
    t = time.perf_counter()
    ref = reference_cube_from_files(
        image,
        mask,
        center_method=options["center"],
        label=options["label"],
        check_ct=lambda ct: guards.check_ct_extent(ct.shape, ct.zooms, image, REFERENCE_PAD_VALUE),
    )
    timings = {"cube": time.perf_counter() - t}
    cube = ref.cube
    center_ras = np.asarray(ref.center_ras, dtype=float)
    stats = {
        k: ref.stats[k]
        for k in (
            "mask_voxels",
            "mask_volume_mm3",
            "components_dropped",
            "cube_mask_voxels",
            "coverage",
            "touches_border",
        )
    }
    stats["cube_padded"] = upstream_padded(ref.center_ijk, ref.zoomed_shape)
    stats["cube_fill_share"] = guards.reference_fill_share(ref.center_ijk, ref.zoomed_shape)
    notes = hu_range_warnings(*ref.stats["ct_range"])
    notes += _geometry_warnings(stats)
    if stats["cube_padded"]:
        notes.append(
            f"The 50-voxel cube runs off the image: {stats['cube_fill_share']:.1%} of it was padded with 0 (the "
            "upstream scripts' own QC flag `touched_border`); the network sees an artificial edge."
        )
    name = f"'{Path(str(mask)).name}'"
    notes += guards.edge_warning(name, *ref.stats["mask_box"], ref.stats["ct_shape"])
    under = cube.ct[cube.mask > 0]
    notes += guards.lesion_warnings(
        name,
        stats["mask_volume_mm3"],
        stats["mask_voxels"],
        float(under.mean()) if under.size else None,
    )
    notes.append(
        "Reference geometry (METHOD.md §3): upstream-script arithmetic, not 1 mm isotropic; "
        "use only with a classifier trained on upstream cubes."
    )
    return PreparedCase(case_id, options, cube, center_ras, stats, None, None, None, timings, notes)


def upstream_padded(center_ijk, shape, half=CUBE_SIZE // 2) -> bool:
    """The upstream scripts' `touched_border`: the cube [c - 25, c + 25) leaves the array and had to be padded.

    Not the project's `touches_border` (the mask reaches a face of the cube): a small lesion near the edge of the
    scan pads without touching; a large central lesion touches without padding.
    """
    from DFM50NLib.scoring import guards

    return guards.reference_fill_share(center_ijk, shape, half) > 0  # a clipped axis is a share of padding


def _weights_provenance(result, encoder):
    """Say which FCIB weights made the score: the publisher's file, or an unverified one (with its SHA-256)."""
    from DFM50NLib.model.weights import provenance

    path = getattr(encoder, "weights_path", None)
    prov = provenance(path, result.fcib_weights_sha256) if path else None
    result.fcib_weights = prov["text"] if prov else f"FCIB weights: unverified file sha256 {result.fcib_weights_sha256}"
    if not (prov and prov["verified"]):
        result.warnings.append(result.fcib_weights)


def _measure_diameters(pm, notes):
    try:
        from DFM50NLib.geometry.diameters import axial_diameters
    except ImportError:
        return None
    try:
        return axial_diameters(pm)
    except InputError as exc:  # e.g. a lesion too thin to measure: the score is still valid
        notes.append(f"Short-axis diameter not measured: {exc}")
        return None


def _geometry_warnings(stats) -> list:
    notes = []
    if stats["coverage"] < 0.999:
        notes.append(
            f"Lesion larger than the 50 mm cube: only {stats['coverage']:.1%} of its volume is "
            "inside the cube the model sees."
        )
    if stats["touches_border"]:
        notes.append("The lesion touches the border of the 50 mm cube.")
    if stats["components_dropped"]:
        notes.append(
            f"{stats['components_dropped']} smaller disconnected mask component(s) were ignored; "
            "only the largest (6-connected) component was scored."
        )
    return notes


def finish_case(
    prep: PreparedCase, features_4096, classifier, encoder, *, clinical=None, keep_features=9, device="cpu"
) -> Result:
    """9 features -> forest -> Result (METHOD.md §4). `clinical`: dict(smoking, spiculated, short_axis_cm)."""
    from DFM50NLib.scoring.result import Result

    weights_sha256 = str(encoder.weights_sha256)  # first: a damaged weights file (CRC, hash) beats any later error
    t = time.perf_counter()
    feats = np.asarray(features_4096, dtype=np.float32).reshape(-1)
    x9 = feats[list(classifier.feature_indices)]
    score = float(classifier.predict_proba(x9[None, :])[0])
    timings = dict(prep.timings)
    timings["classify"] = time.perf_counter() - t

    center_ras = [float(v) for v in prep.center_ras]
    s = prep.stats
    result = Result(
        case_id=str(prep.case_id),
        score=score,
        threshold=float(classifier.threshold),
        risk_label=RISK_HIGH if score >= classifier.threshold else RISK_LOW,
        high_risk=bool(score >= classifier.threshold),
        classifier_is_demo=bool(classifier.is_demo),
        classifier_name=str(classifier.name),
        classifier_sha256=str(classifier.sha256),
        fcib_weights_sha256=weights_sha256,
        software_version=__version__,
        geometry=prep.options["geometry"],
        orientation=prep.options["orientation"],
        center_method=prep.options["center"],
        center_ras=center_ras,
        center_lps=[float(v) for v in ras_to_lps(center_ras)],
        cube_to_ras=np.asarray(prep.cube.cube_to_ras, dtype=float).tolist(),
        mask_volume_mm3=float(s["mask_volume_mm3"]),
        mask_voxels=int(s["mask_voxels"]),
        cube_mask_voxels=int(s["cube_mask_voxels"]),
        coverage=float(s["coverage"]),
        touches_border=bool(s["touches_border"]),
        cube_padded=s.get("cube_padded"),
        components_dropped=int(s["components_dropped"]),
        label=None if prep.options["label"] is None else str(prep.options["label"]),
        device=str(device),
        timings=timings,
        warnings=list(prep.warnings),
        features={name: float(v) for name, v in zip(classifier.feature_names, x9)},
        all_features=feats.tolist() if keep_features == 4096 else None,
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    )
    result.warnings += model_geometry_warnings(classifier, prep.options)
    _weights_provenance(result, encoder)
    if classifier.is_demo:
        from DFM50NLib.constants import DEMO_LABEL

        result.warnings.insert(0, DEMO_LABEL)
    if prep.diameters is not None:
        result.long_axis_mm = float(prep.diameters.long_mm)
    _apply_clinical(result, clinical, prep.diameters)
    result.warnings += population_warnings(result.long_axis_mm, result.coverage)
    return result


def population_warnings(long_axis_mm, coverage) -> list:
    """The lesion is outside what DFM50N was built on (cT1-2: up to 5 cm, whole lesion in the cube)."""
    from DFM50NLib.constants import POPULATION_MAX_LONG_AXIS_MM

    why = []
    if long_axis_mm is not None and long_axis_mm > POPULATION_MAX_LONG_AXIS_MM:
        why.append(f"its longest diameter is {long_axis_mm:.0f} mm (more than {POPULATION_MAX_LONG_AXIS_MM:.0f} mm)")
    if coverage < 0.999:
        why.append(f"only {coverage:.1%} of it fits in the 50 mm cube the model sees")
    if not why:
        return []
    return [
        "Out of population: "
        + " and ".join(why)
        + ". DFM50N was developed on cT1-2 lung cancers up to 5 cm; its score is not validated for this lesion."
    ]


def _apply_clinical(result, clinical, diameters):
    from DFM50NLib.scoring.clinical import apply_clinical

    clinical = dict(clinical or {})
    measured = None if diameters is None else float(diameters.short_mm) / 10.0
    apply_clinical(
        result,
        smoking=clinical.get("smoking"),
        spiculated=clinical.get("spiculated"),
        short_axis_cm=clinical.get("short_axis_cm"),
        measured_short_axis_cm=measured,
    )


def load_encoder(weights=None, device="cpu", *, download=False, progress=None, settings_path=None):
    """The FCIB encoder, built once per process per (weights file, device) and reused.

    `settings_path`: the weights path saved in Slicer's settings (looked at after `weights` and the
    environment variable)."""
    from DFM50NLib.model.fcib import get_encoder
    from DFM50NLib.model.weights import resolve_weights

    path = resolve_weights(weights, download=download, progress=progress, settings_path=settings_path)
    return get_encoder(path, device=device)


def load_models(
    weights=None, model=None, device="cpu", *, encoder=None, classifier=None, download=False, progress=None
):
    """The (encoder, classifier) pair; `model` is a classifier folder or a loaded `Classifier`."""
    from DFM50NLib.model.classifier import Classifier, load_classifier

    if classifier is None:
        classifier = model if isinstance(model, Classifier) else load_classifier(model)
    if encoder is None:
        encoder = load_encoder(weights, device, download=download, progress=progress)
    return encoder, classifier


def score_case(
    image,
    mask,
    *,
    case_id=None,
    label=None,
    segment=None,
    center=DEFAULT_CENTER_METHOD,
    point_ras=None,
    orientation=DEFAULT_ORIENTATION,
    geometry="physical",
    weights=None,
    model=None,
    device="cpu",
    clinical=None,
    keep_features=9,
    out_dir=None,
    write_cubes=False,
    report=False,
    stability=False,
    encoder=None,
    classifier=None,
    download=False,
    dicom_sr=None,
) -> Result:
    """Score one case end to end. `image`/`mask`: file paths or `Volume`s.

    With `out_dir`, writes `<case_id>.dfm50n.json/.csv` (and the audit cubes / report when asked) in one
    `atomic.transaction`: each file is verified, and an error leaves the earlier files whole, none replaced.
    With `dicom_sr` (a folder; the CT must be a DICOM series), also a DICOM SR + SEG of the lesion there.
    """
    t0 = time.perf_counter()
    prep = prepare_case(
        image,
        mask,
        case_id=case_id,
        label=label,
        segment=segment,
        center=center,
        point_ras=point_ras,
        orientation=orientation,
        geometry=geometry,
    )
    if dicom_sr is not None:
        from DFM50NLib.report.dicom_sr import refuse_if_not_dicom

        refuse_if_not_dicom(prep.ct)  # before the network runs
    t = time.perf_counter()
    encoder, classifier = load_models(weights, model, device, encoder=encoder, classifier=classifier, download=download)
    if hasattr(encoder, "ready"):  # FCIB loading in a sibling process (model/encoder_process.py): wait for it
        own = encoder.ready()
        prep.timings.update(fcib_process_import=own["model_import"], fcib_process_load=own["model_load"])
    prep.timings["load_models"] = time.perf_counter() - t
    t = time.perf_counter()
    feats = encoder.features(prep.cube.ct)[0]
    prep.timings["forward"] = time.perf_counter() - t
    result = finish_case(
        prep, feats, classifier, encoder, clinical=clinical, keep_features=keep_features, device=device
    )
    if isinstance(image, (str, Path)):
        result.image_path = str(image)
    if isinstance(mask, (str, Path)):
        result.mask_path = str(mask)
    stab = add_stability(result, prep, encoder, classifier) if stability else None
    result.timings["total"] = time.perf_counter() - t0
    for note in result.warnings[1 if result.classifier_is_demo else 0 :]:
        warnings.warn(note, DFM50NWarning, stacklevel=2)
    from DFM50NLib import atomic

    with atomic.transaction():  # JSON, CSV, cubes, report and SR replace the earlier ones together, or none does
        if out_dir is not None:
            write_outputs(result, prep, out_dir, write_cubes=write_cubes, report=report, stability=stab)
        if dicom_sr is not None:
            from DFM50NLib.report.dicom_sr import write_dicom_sr

            write_dicom_sr(result, prep.ct, prep.prepared_mask, dicom_sr, segment=segment)
    return result


def add_stability(result, prep, encoder, classifier):
    """Score the case again under small perturbations (8 more cubes in one batch; off by default) and
    record the summary, a warning when the label flips, and its time in `result`; returns the panel."""
    from DFM50NLib.scoring.stability import stability

    t = time.perf_counter()
    stab = stability(prep.ct, prep.prepared_mask, prep.center_ras, prep.options, encoder, classifier)
    result.timings["stability"] = time.perf_counter() - t
    result.stability = {
        "min": stab.min,
        "median": stab.median,
        "max": stab.max,
        "n_flipped": stab.n_flipped,
        "n": len(stab.perturbations),
    }
    if stab.warning:
        result.warnings.append(stab.warning)
    return stab


def score_volumes(ct: Volume, mask: Volume, **options) -> Result:
    """Slicer entry point: both volumes already in memory (mask on any grid, label or 0/1)."""
    return score_case(ct, mask, **options)


def model_geometry_warnings(classifier, options) -> list:
    """A classifier trained on reference cubes scores physical cubes wrongly, and vice versa: say so."""
    meta = getattr(classifier, "metadata", None) or {}
    notes = []
    for key in ("geometry", "orientation"):
        expected = meta.get(key)
        if expected and expected != options[key]:
            notes.append(
                f"The classifier was trained on cubes with {key} '{expected}' but this case used "
                f"'{options[key]}': its score is not meaningful. Use --{key} {expected}."
            )
    return notes


def write_outputs(result, prep, out_dir, *, write_cubes=False, report=False, stability=None) -> dict:
    """Result JSON + CSV, optional audit cubes (overlay on the CT) and report; each file atomic."""
    from DFM50NLib.scoring.result import write_csv, write_json

    out_dir = Path(out_dir)
    stem = safe_stem(result.case_id)
    paths = {
        "json": write_json(result, out_dir / f"{stem}.dfm50n.json"),
        "csv": write_csv(result, out_dir / f"{stem}.dfm50n.csv"),
    }
    if write_cubes:
        from DFM50NLib.io import write_volume

        paths["ct_cube"] = write_volume(prep.cube.ct_volume(), out_dir / f"{stem}_ct_50cube.nii.gz")
        paths["mask_cube"] = write_volume(prep.cube.mask_volume(), out_dir / f"{stem}_mask_50cube.nii.gz")
    if report:
        from DFM50NLib.report.writer import write_report

        paths.update(
            write_report(
                result,
                out_dir,
                ct=prep.ct,
                prepared_mask=prep.prepared_mask,
                cube=prep.cube,
                diameters=prep.diameters,
                stability=stability,
            )
        )
    return paths


def _lesion_name(mask, mask_vol, options) -> str:
    """The lesion as the user named it: the segment or ROI, else the mask file's name (for warnings)."""
    segment = options.get("segment") or mask_vol.meta.get("segment")
    where = Path(str(mask)).name if isinstance(mask, (str, Path)) else mask_vol.name
    if segment and where:
        return f"'{segment}' in {where}"
    return f"'{segment or where or 'lesion'}'"


def _case_id_from(image) -> str:
    from DFM50NLib.scoring.case_id import default_case_id

    return default_case_id(image)
