"""Slicer's ``.seg.nrrd`` segmentations: the segment table from the header, one segment as a `Volume`."""

from __future__ import annotations

import re

import numpy as np

from DFM50NLib.errors import InputError
from DFM50NLib.geometry.volume import Volume
from DFM50NLib.io.itk_image import read_itk, to_volume
from DFM50NLib.io.values import as_integer_labels


def is_seg_nrrd(path) -> bool:
    return str(path).lower().endswith(".seg.nrrd")


def read_segment_table(path) -> list:
    """Segments of a ``.seg.nrrd`` from its header: dicts with index, id, name, label_value, layer."""
    header = _nrrd_header(path)
    n_layers = _nrrd_layers(header.fields)
    segs = {}
    for key, value in header.keyvalues.items():
        m = re.fullmatch(r"Segment(\d+)_(\w+)", key)
        if m:
            segs.setdefault(int(m.group(1)), {})[m.group(2)] = value
    table = []
    for idx in sorted(segs):
        s = segs[idx]
        # files from before Slicer 4.11 have no LabelValue/Layer: one layer per segment, value 1
        layer = int(s.get("Layer", idx if n_layers > 1 else 0))
        table.append(
            {
                "index": idx,
                "id": s.get("ID", f"Segment_{idx}"),
                "name": s.get("Name", s.get("ID", "")),
                "label_value": int(s.get("LabelValue", 1)),
                "layer": layer,
            }
        )
    return table


def _nrrd_header(path):
    """The NRRD header (io/nrrd_header.py); InputError when the file is not NRRD or cannot be read."""
    import DFM50NLib.io.nrrd_header as nrrd_header

    try:
        header = nrrd_header.read(path)
    except OSError as exc:
        raise InputError(f"Cannot read {path}: {exc.strerror}.") from None
    if header is None:
        raise InputError(
            f"{path}: is not a NRRD file (no NRRD magic line); export the segmentation from Slicer as .seg.nrrd."
        )
    return header


def _nrrd_layers(fields) -> int:
    sizes = fields.get("sizes", "").split()
    return int(sizes[0]) if fields.get("dimension") == "4" and len(sizes) == 4 else 1


def read_seg_nrrd(path, label, segment) -> Volume:
    import SimpleITK as sitk

    table = read_segment_table(path)
    described = ", ".join(f"{s['name']!r} (label {s['label_value']}, layer {s['layer']})" for s in table) or "none"
    if segment is not None:
        chosen = [s for s in table if s["name"] == segment] or [s for s in table if s["id"] == segment]
        if not chosen:
            raise InputError(f"{path}: has no segment named {segment!r}. Segments: {described}.")
    elif label is not None:
        chosen = [s for s in table if s["label_value"] == int(label)]
        layers = {s["layer"] for s in table}
        if len(layers) > 1 and len(chosen) != 1:
            raise InputError(
                f"{path}: label {label} does not name exactly one segment in this multi-layer "
                f"segmentation. Choose by name (--segment NAME). Segments: {described}."
            )
        if not chosen and table:
            raise InputError(f"{path}: no segment has label value {label}. Segments: {described}.")
    else:
        if len(table) > 1:
            raise InputError(
                f"{path}: holds {len(table)} segments; say which one is the lesion with "
                f"--segment NAME (or --label N). Segments: {described}."
            )
        chosen = table
    img = read_itk(path)
    ncomp = img.GetNumberOfComponentsPerPixel()
    layer = chosen[0]["layer"] if chosen else 0
    if layer >= ncomp:
        raise InputError(
            f"{path}: segment layer {layer} is missing (the file has {ncomp} layer(s)); "
            "re-save the segmentation from Slicer."
        )
    if ncomp > 1:
        img = sitk.VectorIndexSelectionCast(img, layer)
    vol = to_volume(img, path)
    vol.meta.update(segments=table, segment=chosen[0]["name"] if chosen else None, layer=layer)
    if segment is not None or (chosen and ncomp > 1 and label is None):
        value = chosen[0]["label_value"]
        out = vol.with_array((vol.array == value).astype(np.uint8))
        out.meta["label_value"] = value
        return out
    return as_integer_labels(vol, path)
