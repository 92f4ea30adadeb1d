"""Optional stability panel: does the risk label survive small, plausible changes of the input?

Perturbations: the centre moved ±2 mm along each patient axis (6), and the mask eroded / dilated
by 1 mm then re-centred with the same method (2). The score depends on the CT cube only, so a
mask change matters through the centre it moves. All perturbed cubes go through FCIB in one batch.
"""

from __future__ import annotations

import dataclasses
import statistics
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from DFM50NLib.errors import InputError

CENTER_SHIFT_MM = 2.0
MASK_MARGIN_MM = 1.0
_AXES = (("R", 0, 1.0), ("L", 0, -1.0), ("A", 1, 1.0), ("P", 1, -1.0), ("S", 2, 1.0), ("I", 2, -1.0))


@dataclass
class Perturbation:
    label: str  # e.g. "centre 2 mm R" (moved toward patient Right), "mask eroded 1 mm"
    kind: str  # "centre" | "mask"
    center_ras: list
    score: float
    crosses: bool  # on the other side of the threshold than the unperturbed score


@dataclass
class StabilityResult:
    base_score: float
    threshold: float
    perturbations: list = field(default_factory=list)
    notes: list = field(default_factory=list)  # perturbations skipped and why

    @property
    def scores(self) -> list:
        return [p.score for p in self.perturbations]

    @property
    def min(self) -> float:
        return float(min(self.scores))

    @property
    def median(self) -> float:
        return float(statistics.median(self.scores))

    @property
    def max(self) -> float:
        return float(max(self.scores))

    @property
    def n_flipped(self) -> int:
        return sum(p.crosses for p in self.perturbations)

    @property
    def warning(self) -> Optional[str]:
        if not self.n_flipped:
            return None
        return (
            f"Unstable near the threshold: {self.n_flipped} of {len(self.perturbations)} small perturbations "
            f"(±{CENTER_SHIFT_MM:g} mm centre, ±{MASK_MARGIN_MM:g} mm mask) move the score across "
            f"{self.threshold:g}. Check the segmentation and interpret the risk label with caution."
        )

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.update(min=self.min, median=self.median, max=self.max, n_flipped=self.n_flipped, warning=self.warning)
        return d


def stability(ct, prepared_mask, center_ras, options, encoder, classifier) -> StabilityResult:
    """Scores of the perturbed cubes; `options` as in PreparedCase.options (center, orientation)."""
    from DFM50NLib.geometry.center import find_center
    from DFM50NLib.geometry.cube import extract_cube

    if ct is None or prepared_mask is None:
        raise InputError(
            "The stability panel needs the CT and the prepared mask (physical geometry); "
            "it is not available in reference geometry."
        )
    options = dict(options or {})
    method = options.get("center", "dt_peak")
    orientation = options.get("orientation", "LPS")
    center = np.asarray(center_ras, float)

    labels, kinds, centers, notes = ["unperturbed"], ["base"], [center], []
    for name, axis, sign in _AXES:
        shifted = center.copy()
        shifted[axis] += sign * CENTER_SHIFT_MM
        labels.append(f"centre {CENTER_SHIFT_MM:g} mm {name}")  # moved toward patient `name`
        kinds.append("centre")
        centers.append(shifted)
    if method == "point":
        notes.append("Mask perturbations skipped: the centre is a given point, so the mask does not move it.")
    else:
        for label, op in (("eroded", "erode"), ("dilated", "dilate")):
            pm2 = perturb_mask(prepared_mask, op, MASK_MARGIN_MM)
            if pm2 is None:
                notes.append(f"Mask {label} by {MASK_MARGIN_MM:g} mm is empty (lesion too small): skipped.")
                continue
            labels.append(f"mask {label} {MASK_MARGIN_MM:g} mm")
            kinds.append("mask")
            centers.append(np.asarray(find_center(pm2, method, options.get("point_ras")), float))

    cubes = np.stack([np.asarray(extract_cube(ct, prepared_mask, c, orientation).ct, np.float32) for c in centers])
    feats = np.asarray(encoder.features(cubes), np.float32).reshape(len(cubes), -1)
    x9 = feats[:, list(classifier.feature_indices)]
    scores = np.asarray(classifier.predict_proba(x9), float).reshape(-1)
    threshold = float(classifier.threshold)
    base = float(scores[0])
    result = StabilityResult(base, threshold, notes=notes)
    for label, kind, c, s in zip(labels[1:], kinds[1:], centers[1:], scores[1:]):
        result.perturbations.append(
            Perturbation(label, kind, [float(v) for v in c], float(s), bool((s >= threshold) != (base >= threshold)))
        )
    return result


def _surface_distance(region, spacing):
    """Distance (mm) from each voxel centre of `region` to its boundary, which lies halfway to the outside.

    The EDT gives the distance to the nearest outside voxel *centre*; the boundary is about half a
    step closer, a step being that displacement's length over its voxel count (exact along an axis).
    So 1 mm on a 2.5 mm axis is less than one slice, not one slice. Checked against voxelised
    spheres of radius r -/+ 1 mm: volumes within ~5 % on 0.5-1.25 mm grids.
    """
    from scipy import ndimage

    dist, ind = ndimage.distance_transform_edt(region, sampling=spacing, return_indices=True)
    counts = np.abs(ind - np.indices(region.shape)).sum(axis=0)
    return np.where(counts > 0, dist - 0.5 * dist / np.maximum(counts, 1), 0.0)


def perturb_mask(pm, op, margin_mm):
    """The prepared mask eroded or dilated by `margin_mm` in physical distance; None when emptied.

    Physical (not voxel) margins, so an anisotropic 0.7 x 0.7 x 2.5 mm grid loses 1 mm, not 1 voxel.
    The result keeps the largest 6-connected component, as prepare_mask does.
    """
    from scipy import ndimage

    vol = pm.volume
    spacing = np.linalg.norm(vol.ijk_to_ras[:3, :3], axis=0)
    pad = np.ceil(margin_mm / spacing).astype(int) + 2
    arr = np.pad(np.asarray(vol.array) > 0, [(p, p) for p in pad])
    if op == "erode":
        out = arr & (_surface_distance(arr, spacing) > margin_mm)
    elif op == "dilate":
        out = arr | (_surface_distance(~arr, spacing) <= margin_mm)
    else:
        raise ValueError(op)
    if not out.any():
        return None
    lab, n = ndimage.label(out)
    if n > 1:
        sizes = np.bincount(lab.ravel())[1:]
        out = lab == (1 + int(np.argmax(sizes)))
    shift = np.eye(4)
    shift[:3, 3] = -pad
    new_vol = vol.with_array(out.astype(np.uint8))
    new_vol = type(vol)(new_vol.array, vol.ijk_to_ras @ shift, vol.name, dict(vol.meta))
    voxels = int(out.sum())
    changes = dict(
        volume=new_vol,
        voxels=voxels,
        volume_mm3=float(voxels * abs(np.linalg.det(vol.ijk_to_ras[:3, :3]))),
        offset_ijk=tuple(int(o) - int(p) for o, p in zip(getattr(pm, "offset_ijk", (0, 0, 0)), pad)),
    )
    if dataclasses.is_dataclass(pm):
        names = {f.name for f in dataclasses.fields(pm)}
        return dataclasses.replace(pm, **{k: v for k, v in changes.items() if k in names})
    from types import SimpleNamespace

    return SimpleNamespace(**{**vars(pm), **changes})
