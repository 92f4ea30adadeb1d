"""Which cases a cohort job scores: a manifest CSV, or two folders paired by file name.

Pure and cheap (csv + os.stat): nothing here reads an image, so a 5,000-case manifest is checked
in milliseconds and every problem is reported before the first network forward.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from DFM50NLib.atomic import safe_stem
from DFM50NLib.constants import CENTER_METHODS
from DFM50NLib.errors import InputError

# Columns the job understands; every other manifest column is an outcome column passed through as is.
KNOWN_COLUMNS = ("case_id", "image", "mask", "label", "segment", "center", "smoking", "spiculated", "short_axis_cm")
CLINICAL_COLUMNS = ("smoking", "spiculated", "short_axis_cm")
IMAGE_EXTENSIONS = (".nii.gz", ".nii", ".seg.nrrd", ".nrrd", ".nhdr", ".mha", ".mhd")
# A mask may also be one DICOM-SEG file; loose .dcm files are never images (a CT series is a folder)
MASK_EXTENSIONS = IMAGE_EXTENSIONS + (".dcm",)
# A mask named like its image plus one of these (case-insensitive) still pairs: ct01.nii.gz <-> ct01_seg.nrrd
MASK_SUFFIXES = (
    "_mask",
    "-mask",
    ".mask",
    "_seg",
    "-seg",
    "_segmentation",
    "-segmentation",
    "_label",
    "-label",
    "_labels",
    "_lesion",
    "-lesion",
)


@dataclass
class Case:
    """One lesion to score; `options` override the job's options for this case only."""

    case_id: str
    image: str
    mask: str
    options: dict = field(default_factory=dict)  # label, segment, center, point_ras
    clinical: dict = field(default_factory=dict)  # smoking, spiculated, short_axis_cm (None = unknown)
    extra: dict = field(default_factory=dict)  # outcome / other columns, passed through to results.csv
    row: int = 0  # position in the manifest: results.csv follows it


def parse_yes_no(value, column="value") -> Optional[bool]:
    """Same yes/no rule as the single-case CLI (clinical.parse_yes_no); empty = unknown."""
    from DFM50NLib.scoring.clinical import parse_yes_no as parse

    return parse(value, column)


def _parse_float(value, column):
    if value is None or not str(value).strip():
        return None
    try:
        return float(value)
    except ValueError:
        raise InputError(f"{column}: {value!r} is not a number; leave it empty if unknown.") from None


def _parse_center(value):
    """'dt_peak' / 'centroid', or a point 'R A S' (RAS mm, separated by spaces, ';' or ',')."""
    text = (value or "").strip()
    if not text:
        return {}
    if text in CENTER_METHODS and text != "point":
        return {"center": text}
    parts = text.replace(";", " ").replace(",", " ").split()
    try:
        point = [float(p) for p in parts]
    except ValueError:
        point = []
    if len(point) != 3:
        raise InputError(
            f"center: {value!r} is neither a method ({', '.join(CENTER_METHODS[:2])}) nor a "
            "point 'R A S' in RAS millimetres."
        )
    return {"center": "point", "point_ras": point}


DELIMITERS = (",", ";", "\t")  # chosen from the header line alone; quoting is RFC 4180 (csv.excel)


def read_manifest(path) -> list[Case]:
    """Cases of a manifest CSV; the first bad row raises InputError naming it (see read_manifest_rows)."""
    cases, problems = read_manifest_rows(path)
    if problems:
        raise InputError(problems[0]["error"])
    return cases


def read_manifest_rows(path) -> tuple[list[Case], list[dict]]:
    """(cases, problems) of a manifest CSV. Relative image/mask paths are relative to the manifest's folder.

    Dialect, explicit (no sniffing of the data): RFC 4180 quoting (``"a;b,c""d"`` is the id ``a;b,c"d``);
    the delimiter is the first of ``,`` ``;`` tab that splits the header line into columns holding both
    ``image`` and ``mask``. A row with a bad cell (bad yes/no, number, centre) becomes a problem for that row
    only, with the row number; the other rows are scored. A missing column or an unreadable file refuses all.
    """
    from DFM50NLib.io.integrity import check_regular

    path = Path(path)
    check_regular(path)  # a FIFO would block the read
    if not path.is_file():
        raise InputError(f"Manifest {path} not found: give a CSV with columns case_id,image,mask.")
    try:
        with open(path, "rb") as fb:
            raw_bytes = fb.read()
        text = raw_bytes.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(
            f"Manifest {path} is not UTF-8 text (byte {exc.start}: {raw_bytes[exc.start : exc.start + 1]!r}); "
            "is it a spreadsheet or another binary file? Save it as CSV (UTF-8)."
        ) from None
    except OSError as exc:
        raise InputError(f"Cannot read manifest {path}: {exc.strerror or exc}.") from None
    if "\0" in text:
        raise InputError(f"Manifest {path} contains NUL bytes: it is a binary file, not a CSV; save it as CSV (UTF-8).")
    header = text.splitlines()[0] if text else ""
    delimiter = ","
    for d in DELIMITERS:
        names = {c.strip().strip('"') for c in header.split(d)}
        if {"image", "mask"} <= names:
            delimiter = d
            break
    reader = csv.DictReader(io.StringIO(text, newline=""), dialect=csv.excel, delimiter=delimiter)
    try:
        columns = [c.strip() for c in (reader.fieldnames or [])]
    except csv.Error as exc:
        raise InputError(f"Manifest {path}: not a readable CSV ({exc}).") from None
    reader.fieldnames = columns
    missing = [c for c in ("image", "mask") if c not in columns]
    if missing:
        raise InputError(
            f"Manifest {path} lacks column(s) {', '.join(missing)}; it needs at least "
            f"image,mask (and usually case_id). Columns found: {', '.join(columns) or 'none'}."
        )
    base = path.resolve().parent
    cases, problems = [], []
    try:
        for raw in reader:
            line = reader.line_num
            if not any((v or "").strip() for v in raw.values() if isinstance(v, str)):
                continue  # blank line
            try:
                cases.append(_case_from_row(raw, base, len(cases)))
            except InputError as exc:
                get = lambda k, row=raw: str(row.get(k) or "").strip()
                problems.append(
                    {
                        "case_id": get("case_id") or f"row {line}",
                        "image": get("image"),
                        "mask": get("mask"),
                        "stage": "manifest",
                        "error_type": "InputError",
                        "error": f"Manifest {path}, row {line}: {exc}",
                    }
                )
    except csv.Error as exc:
        raise InputError(f"Manifest {path}, line {reader.line_num}: not a readable CSV row ({exc}).") from None
    check_unique(cases)
    return cases, problems


def _case_from_row(raw: dict, base: Path, row: int) -> Case:
    get = lambda k: (raw.get(k) or "").strip()
    image, mask = get("image"), get("mask")
    if not image or not mask:
        raise InputError("image and mask are both required.")
    image, mask = str(_resolve(image, base)), str(_resolve(mask, base))
    case_id = get("case_id") or _base_name(Path(image))
    options = {}
    if get("label"):
        try:
            options["label"] = int(float(get("label")))
        except ValueError:
            raise InputError(f"label: {get('label')!r} is not an integer label value.") from None
    if get("segment"):
        options["segment"] = get("segment")
    options.update(_parse_center(get("center")))
    clinical = {
        "smoking": parse_yes_no(get("smoking"), "smoking"),
        "spiculated": parse_yes_no(get("spiculated"), "spiculated"),
        "short_axis_cm": _parse_float(get("short_axis_cm"), "short_axis_cm"),
    }
    extra = {k: v for k, v in raw.items() if k and k not in KNOWN_COLUMNS}
    return Case(case_id, image, mask, options, clinical, extra, row)


def _resolve(p: str, base: Path) -> Path:
    p = Path(os.path.expanduser(p))
    return p if p.is_absolute() else base / p


def check_unique(cases) -> None:
    """Two cases writing the same result file would overwrite each other: refuse up front.

    Names are compared ignoring case, because macOS and Windows file systems do.
    """
    seen = {}
    for c in cases:
        stem = safe_stem(c.case_id).casefold()
        if stem in seen:
            other = seen[stem]
            same = (
                "the same case_id"
                if other == c.case_id
                else f"case ids {other!r} and {c.case_id!r} map to the same file name (ignoring case)"
            )
            raise InputError(f"Duplicate case {c.case_id!r}: {same}. Give every case a unique case_id.")
        seen[stem] = c.case_id


def _base_name(p: Path) -> str:
    from DFM50NLib.io import file_stem

    return file_stem(p, MASK_EXTENSIONS)


def _strip_mask_suffix(base: str) -> str:
    low = base.lower()
    for suf in MASK_SUFFIXES:
        if low.endswith(suf) and len(base) > len(suf):
            return base[: -len(suf)]
    return base


def _candidates(folder: Path, allow_dirs: bool, extensions=IMAGE_EXTENSIONS) -> list[Path]:
    out = []
    for p in sorted(folder.iterdir()):
        if p.name.startswith("."):
            continue
        if p.is_dir():
            if allow_dirs:
                out.append(p)  # a DICOM series folder
        elif p.name.lower().endswith(extensions):
            out.append(p)
    return out


def pair_folders(images, masks) -> tuple[list[Case], list[dict]]:
    """Pair CTs and masks by base name; returns (cases, problems).

    Rule: base name = file name without its extension (.nii.gz, .nii, .nrrd, .seg.nrrd, .nhdr, .mha,
    .mhd; for masks also .dcm, a DICOM-SEG; a sub-folder of `images` is a DICOM series named by the
    folder). A mask pairs with the image of the same base name, or of its base name minus one suffix
    from MASK_SUFFIXES (ct01_seg.nrrd -> ct01). Matching is exact (case-sensitive) after that. Images
    and masks may share one folder: then files carrying a mask suffix are the masks. Unpaired or
    ambiguous files are returned as problems, never guessed.
    """
    images, masks = Path(images), Path(masks)
    for folder, what in ((images, "--images"), (masks, "--masks")):
        if not folder.is_dir():
            raise InputError(f"{what} {folder} is not a folder.")
    same = images.resolve() == masks.resolve()
    img_files = _candidates(images, allow_dirs=True)
    mask_files = _candidates(masks, allow_dirs=False, extensions=MASK_EXTENSIONS)
    if same:
        suffixed = lambda p: _strip_mask_suffix(_base_name(p)) != _base_name(p)
        mask_files = [p for p in sorted(set(img_files) | set(mask_files)) if suffixed(p)]
        img_files = [p for p in img_files if not suffixed(p)]
    by_key: dict[str, list[Path]] = {}
    for m in mask_files:
        base = _base_name(m)
        keys = {base, _strip_mask_suffix(base)}
        for k in keys:
            by_key.setdefault(k, []).append(m)
    cases, problems, used = [], [], set()
    for img in img_files:
        base = _base_name(img)
        found = by_key.get(base, [])
        if not found:
            problems.append(
                {
                    "case_id": base,
                    "image": str(img),
                    "mask": "",
                    "error": "unpaired image: no mask named like it (see the pairing rule)",
                }
            )
            continue
        if len(found) > 1:
            problems.append(
                {
                    "case_id": base,
                    "image": str(img),
                    "mask": "; ".join(map(str, found)),
                    "error": "ambiguous: several masks match this image; use a manifest",
                }
            )
            used.update(found)
            continue
        used.add(found[0])
        cases.append(Case(base, str(img.resolve()), str(found[0].resolve()), row=len(cases)))
    for m in mask_files:
        if m not in used:
            problems.append(
                {
                    "case_id": _strip_mask_suffix(_base_name(m)),
                    "image": "",
                    "mask": str(m),
                    "error": "unpaired mask: no image named like it",
                }
            )
    if not cases and not problems:
        raise InputError(f"No images found in {images} (NIfTI, NRRD, MHA/MHD files or DICOM series folders).")
    check_unique(cases)
    return cases, problems


def file_identity(path) -> object:
    """What a result depends on about one input file, cheaply: resolved path, size, mtime (ns).

    Chosen over a content hash: stat-ing is free, re-reading thousands of CTs to decide what to skip
    is not. Any rewrite of a file (or touching it) re-scores the case, which is the safe direction.
    For a DICOM folder: the names, sizes and mtimes of its files. Detached data files of .nhdr/.mhd
    headers are not followed: re-score with a fresh output folder if only those change.
    """
    p = Path(path)
    try:
        if p.is_dir():
            h = hashlib.sha256()
            for child in sorted(p.rglob("*")):
                if child.is_file() and not child.name.startswith("."):
                    st = child.stat()
                    h.update(f"{child.relative_to(p)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
            return [str(p.resolve()), "dir", h.hexdigest()]
        st = p.stat()
        return [str(p.resolve()), st.st_size, st.st_mtime_ns]
    except OSError:
        return [str(p), "missing"]


def config_hash(case: Case, options: dict, identity: dict) -> str:
    """SHA-256 of everything that changes this case's result.

    `options`: the case's merged cube options (centre, point, orientation, geometry, label, segment);
    `identity`: software version, FCIB weights SHA-256, classifier SHA-256, device. Plus both input
    files' identities and the clinical inputs. Outcome columns are not in it: editing them re-scores
    nothing (they are joined again when results.csv is regenerated).
    """
    payload = {
        "identity": identity,
        "options": options,
        "clinical": case.clinical,
        "image": file_identity(case.image),
        "mask": file_identity(case.mask),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()
