"""DICOM RT Structure Set (RTSTRUCT) -> lesion mask on the referenced CT's grid.

A structure set stores each ROI as closed planar polygons in patient millimetres (LPS), one or more per
CT slice. They are rasterised here with a small numpy even-odd rasteriser instead of a library:

* every contour point is mapped to the CT's *continuous* voxel index (inverse of its index->world affine);
* a voxel is inside when its *centre* is inside the polygon (crossing-number test along each voxel row);
  rt-utils instead fills with OpenCV ``fillPoly``, which also paints every pixel the outline touches and
  so enlarges each slice by about half a pixel all round; highdicom, pydicom and SimpleITK read no
  contours at all;
* all closed contours of the ROI on one slice are combined by the even-odd rule: a contour inside
  another is a hole (DICOM's CLOSED_PLANAR convention, and what CLOSED_PLANAR_XOR states explicitly);
* a contour must lie in a slice plane of the CT: off by up to `slice_tolerance_mm` it is snapped to the
  nearest slice, further off it is refused with the distance (it was drawn on another grid);
* never silently: ContourData that is not x, y, z triples of finite numbers is refused; contours of fewer
  than 3 points are left out with a warning (refused above MAX_SHORT_SHARE of the ROI's contours); outlines
  that cross themselves or each other on a slice are counted with the voxels the even-odd fill gets wrong
  (polygon_fill.py): a warning up to MAX_MISFILL_SHARE of the ROI, refused beyond; the part of the ROI
  outside the CT's field of view is measured (``meta["outside_share"]``), so coverage is not 1.0 after a cut.

The structure set's Frame of Reference must be the CT's; a CT that did not come from DICOM cannot be
checked, and the result carries a warning saying so.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from DFM50NLib.errors import InputError
from DFM50NLib.geometry.volume import RAS_TO_LPS, Volume
from DFM50NLib.io.polygon_fill import crossings, fill_even_odd, misfilled

RTSTRUCT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.481.3"
CLOSED_TYPES = ("CLOSED_PLANAR", "CLOSED_PLANAR_XOR")
MAX_SNAP_MM = 0.5  # contours within this distance of a slice plane (and a quarter slice) are snapped to it
MAX_SHORT_SHARE = 0.1  # contours of fewer than 3 points: left out with a warning up to this share, else refused
MAX_MISFILL_SHARE = 0.05  # voxels the even-odd fill gets wrong (crossing outlines): warned up to this share


def is_rtstruct(path) -> bool:
    """A single DICOM file whose SOP Class is RT Structure Set (header read only up to SOPClassUID)."""
    from DFM50NLib.io.dicom_source import dicom_sop_class

    return dicom_sop_class(path, needs="pip install pydicom") == RTSTRUCT_SOP_CLASS


def rtstruct_rois(ds) -> list:
    """ROIs of a structure set: dicts with number, name, frame_of_reference, contours (count of closed ones)."""
    contours = {}
    for rc in getattr(ds, "ROIContourSequence", None) or []:
        seq = getattr(rc, "ContourSequence", None) or []
        closed = [c for c in seq if str(getattr(c, "ContourGeometricType", "")).upper() in CLOSED_TYPES]
        contours[int(rc.ReferencedROINumber)] = closed
    return [
        {
            "number": int(r.ROINumber),
            "name": str(getattr(r, "ROIName", "")),
            "frame_of_reference": str(getattr(r, "ReferencedFrameOfReferenceUID", "") or ""),
            "contours": contours.get(int(r.ROINumber), []),
        }
        for r in getattr(ds, "StructureSetROISequence", None) or []
    ]


def read_rtstruct(path, ct: Volume | None, label=None, segment=None) -> Volume:
    """One ROI of an RTSTRUCT as a mask on `ct`'s grid (cropped to the ROI's box; same voxel positions).

    `segment`: ROI name (case-insensitive); `label`: ROI number. Chosen by `label`, the voxels hold that
    number (so `prepare_mask(label=N)` finds them), else 1.
    """
    import pydicom

    if ct is None:
        raise InputError(
            f"{path}: is an RT Structure Set; its contours are drawn on a CT and can only be read "
            "together with that CT (give the CT series as the image)."
        )
    try:
        ds = pydicom.dcmread(str(path))
    except Exception as exc:
        raise InputError(f"Cannot read RT Structure Set {path}: {exc}") from None
    rois = rtstruct_rois(ds)
    roi = _choose_roi(path, rois, label, segment)
    if not roi["contours"]:
        raise InputError(
            f"{path}: ROI {roi['number']} {roi['name']!r} has no closed planar contours (only points or "
            "open lines, or nothing); choose the ROI that outlines the lesion."
        )
    warnings = _check_frame_of_reference(path, ds, roi, ct)
    where = f"{path}, ROI {roi['name']!r}"
    polygons, notes = contour_points(roi["contours"], where)
    arr, offset, fill = rasterise(polygons, ct, where=where)
    warnings += notes + fill["warnings"]
    if not arr.any():
        why = (
            "it lies outside the CT's field of view" if fill["outside_share"] > 0 else "contours smaller than a voxel?"
        )
        raise InputError(f"{path}: ROI {roi['name']!r} covers no voxel centre of the CT ({why}).")
    if segment is None and label is not None:
        arr = arr.astype(np.uint8 if roi["number"] < 256 else np.uint16) * roi["number"]
    ijk_to_ras = ct.ijk_to_ras.copy()
    ijk_to_ras[:3, 3] = ct.ijk_to_ras[:3, :3] @ np.asarray(offset, float) + ct.ijk_to_ras[:3, 3]
    meta = {
        "path": str(path),
        "format": "RTSTRUCT",
        "segments": [{"number": r["number"], "label": r["name"]} for r in rois],
        "segment": roi["name"],
        "segment_number": roi["number"],
        "label_value": int(arr.max(initial=0)) or 1,
        "offset_ijk": tuple(int(v) for v in offset),
        "outside_share": fill["outside_share"],
        "warnings": warnings,
    }
    return Volume(arr, ijk_to_ras, name=Path(str(path)).stem, meta=meta)


def _choose_roi(path, rois, label, segment) -> dict:
    described = ", ".join(f"{r['number']}: {r['name']!r}" for r in rois) or "none"
    if segment is not None:
        want = str(segment).strip().casefold()
        found = [r for r in rois if r["name"].strip().casefold() == want]
        if len(found) != 1:
            what = "no ROI" if not found else f"{len(found)} ROIs"
            raise InputError(
                f"{path}: the RT Structure Set has {what} named {segment!r} (names compared ignoring "
                f"case). ROIs present (number: name): {described}. Give one of these names with "
                "--segment, or the number with --label."
            )
        return found[0]
    if label is not None:
        found = [r for r in rois if r["number"] == int(label)]
        if not found:
            raise InputError(f"{path}: the RT Structure Set has no ROI number {label}. ROIs present: {described}.")
        return found[0]
    drawn = [r for r in rois if r["contours"]]
    if len(drawn) != 1:
        raise InputError(
            f"{path}: the RT Structure Set holds {len(drawn)} ROIs with contours; say which one is the "
            f"lesion with --segment NAME (e.g. the GTV) or --label NUMBER. ROIs present: {described}."
        )
    return drawn[0]


def _check_frame_of_reference(path, ds, roi, ct) -> list:
    from DFM50NLib.io.dicom_source import ct_frame_of_reference

    ss_for = roi["frame_of_reference"]
    if not ss_for:
        refs = getattr(ds, "ReferencedFrameOfReferenceSequence", None) or []
        ss_for = str(getattr(refs[0], "FrameOfReferenceUID", "")) if len(refs) else ""
    ct_for = ct_frame_of_reference(ct)
    if ct_for is None:
        return [
            "The CT is not a DICOM series, so the RT Structure Set's Frame of Reference could not be "
            "checked against it: the contours were placed by patient coordinates alone. Give the CT "
            "as its DICOM series folder to have this checked."
        ]
    if ss_for and ss_for != ct_for:
        raise InputError(
            f"{path}: the RT Structure Set was drawn in Frame of Reference {ss_for}, but the CT's is "
            f"{ct_for}: it belongs to another scan (or another registration). Give the CT series the "
            "structure set was drawn on."
        )
    return []


def contour_points(contours, where) -> tuple:
    """Each contour's ContourData as an (n, 3) LPS array, and warnings; malformed data is refused.

    Contours of fewer than 3 points enclose nothing: they are left out, said in a warning with their count,
    and refused when they are more than MAX_SHORT_SHARE of the ROI's contours (a damaged structure set).
    """
    polygons, short = [], []
    for n, c in enumerate(contours, start=1):
        raw = getattr(c, "ContourData", None)
        try:
            values = np.array([float(v) for v in (raw or [])], float)
        except (TypeError, ValueError):
            raise InputError(f"{where}: contour {n}: ContourData is not a list of numbers ({raw!r:.80}).") from None
        if values.size % 3:
            raise InputError(
                f"{where}: contour {n}: ContourData holds {values.size} numbers, not a multiple of 3 (x, y, z of "
                "each point): the structure set is damaged. Export it again from the planning system or Slicer."
            )
        if not np.all(np.isfinite(values)):
            bad = int(np.flatnonzero(~np.isfinite(values))[0]) // 3 + 1
            raise InputError(
                f"{where}: contour {n}: ContourData holds NaN or infinite coordinates (first at point {bad} of "
                f"{values.size // 3}): the structure set is damaged. Export it again."
            )
        if values.size < 9:
            short.append(n)
            continue
        polygons.append(values.reshape(-1, 3))
    if not short:
        return polygons, []
    listed = ", ".join(map(str, short[:10])) + (", ..." if len(short) > 10 else "")
    what = f"{len(short)} of {len(contours)} contours have fewer than 3 points (contour {listed})"
    if len(short) > MAX_SHORT_SHARE * len(contours):
        raise InputError(
            f"{where}: {what}, more than {MAX_SHORT_SHARE:.0%}: such a contour encloses nothing, so the lesion "
            "would be scored from the rest alone. The structure set is damaged; export it again."
        )
    return polygons, [f"{where}: {what}; they enclose nothing and were left out."]


def rasterise(polygons_lps, ct: Volume, where="contours"):
    """Closed planar polygons (each (n, 3) LPS mm) -> (uint8 mask cropped to their box and to the CT, its CT
    ijk offset, {"outside_share", "warnings"}).

    Voxel centres inside an odd number of the polygons on their slice are set (even-odd rule). The fill
    reaches up to one CT width beyond the CT's field of view, so the share of the ROI cut off is measured.
    """
    lps_to_ijk = np.linalg.inv(RAS_TO_LPS @ ct.ijk_to_ras)
    dz = float(ct.spacing[2])
    tol = min(MAX_SNAP_MM, 0.25 * dz)
    nk = ct.shape[2]
    by_slice: dict = {}
    for n, pts in enumerate(polygons_lps):
        if len(pts) < 3:
            continue
        ijk = (lps_to_ijk[:3, :3] @ pts.T).T + lps_to_ijk[:3, 3]
        k = int(np.round(np.median(ijk[:, 2])))
        off_mm = float(np.max(np.abs(ijk[:, 2] - k))) * dz
        if off_mm > tol:
            raise InputError(
                f"{where}: contour {n + 1} (z = {pts[0, 2]:.2f} mm) lies {off_mm:.2f} mm off the nearest "
                f"CT slice plane (tolerance {tol:.2f} mm). It was drawn on another CT grid or is not axial; "
                "give the CT series the structure set was drawn on."
            )
        if not 0 <= k < nk:
            raise InputError(
                f"{where}: contour {n + 1} (z = {pts[0, 2]:.2f} mm) is outside the CT's slices "
                f"(index {k}, the CT has {nk}); give the CT series the structure set was drawn on."
            )
        by_slice.setdefault(k, []).append(ijk[:, :2])
    if not by_slice:
        raise InputError(f"{where}: no contour with at least 3 points.")
    allpts = np.concatenate([p for polys in by_slice.values() for p in polys])
    n_ij = np.asarray(ct.shape[:2])
    lo = np.clip(np.floor(allpts.min(axis=0)).astype(int), -n_ij, 2 * n_ij - 1)
    hi = np.clip(np.ceil(allpts.max(axis=0)).astype(int) + 1, lo + 1, 2 * n_ij)
    ks = sorted(by_slice)
    out = np.zeros((hi[0] - lo[0], hi[1] - lo[1], ks[-1] - ks[0] + 1), np.uint8)
    crossed = []  # (slice, contour a, contour b, point, voxels filled wrongly)
    for k, polys in by_slice.items():
        out[:, :, k - ks[0]] = fill_even_odd(polys, lo, hi)
        pairs = crossings(polys)
        crossed += [(k, a, b, point, misfilled(polys, [(a, b, point)], lo, hi)) for a, b, point in pairs]
    total = int(out.sum(dtype=np.int64))
    cut_lo, cut_hi = np.maximum(lo, 0), np.maximum(np.minimum(hi, n_ij), np.maximum(lo, 0) + 1)
    inside = out[cut_lo[0] - lo[0] : cut_hi[0] - lo[0], cut_lo[1] - lo[1] : cut_hi[1] - lo[1]]
    fill = {"outside_share": 1.0 - int(inside.sum(dtype=np.int64)) / max(total, 1), "warnings": []}
    if crossed:
        fill["warnings"].append(_crossing_report(crossed, total, ct, where))
    return inside, (int(cut_lo[0]), int(cut_lo[1]), ks[0]), fill


def _crossing_report(crossed, total, ct: Volume, where) -> str:
    """Warning text for outlines that cross; InputError when they change more than MAX_MISFILL_SHARE of the ROI."""
    selfs = sum(1 for _, a, b, _, _ in crossed if a == b)
    wrong = sum(c[4] for c in crossed)
    k, a, b, point, _ = crossed[0]
    lps = RAS_TO_LPS @ ct.ijk_to_ras
    at = lps[:3, :3] @ [point[0], point[1], k] + lps[:3, 3]
    text = (
        f"{where}: {selfs} contour(s) cross themselves and {len(crossed) - selfs} pair(s) of contours overlap on "
        f"one slice (first near LPS ({at[0]:.1f}, {at[1]:.1f}, {at[2]:.1f}) mm); the even-odd fill differs from "
        f"the drawn outlines in {wrong} of {total} voxels ({wrong / max(total, 1):.1%})"
    )
    if wrong > MAX_MISFILL_SHARE * total:
        raise InputError(
            f"{text}, more than {MAX_MISFILL_SHARE:.0%}: an overlap would be filled as a hole, a loop drawn twice "
            "left empty. Correct the contours (one simple outline per part) and export the structure set again."
        )
    return text + "; the even-odd fill (the DICOM convention) was used."
