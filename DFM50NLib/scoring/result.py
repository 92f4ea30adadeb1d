"""`Result`: everything METHOD.md §4 says a DFM50N score must carry, and its JSON/CSV forms."""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import asdict, dataclass, field, fields
from typing import Optional

from DFM50NLib import atomic
from DFM50NLib.constants import DISCLAIMER


@dataclass
class Result:
    case_id: str
    score: float  # DFM50N score: P(OLM positive) from the forest
    threshold: float
    risk_label: str  # "high OLM risk" / "low OLM risk"
    high_risk: bool
    # provenance of the classifier and encoder
    classifier_is_demo: bool
    classifier_name: str
    classifier_sha256: str
    fcib_weights_sha256: str
    software_version: str
    # geometry
    geometry: str  # "physical" | "reference"
    orientation: str  # e.g. "LPS"
    center_method: str  # "dt_peak" | "centroid" | "point"
    center_ras: list  # [R, A, S] mm
    center_lps: list  # [L, P, S] mm
    cube_to_ras: list  # 4x4, cube sample index -> RAS mm (audit cubes use it)
    # lesion and cube
    mask_volume_mm3: float
    mask_voxels: int
    cube_mask_voxels: int  # mask samples inside the 50^3 cube (1 mm^3 each)
    coverage: float  # mask volume inside the cube / whole mask volume
    touches_border: bool  # mask reaches a face of the cube (the project's flag)
    components_dropped: int
    # optional clinical model (METHOD.md §2.10); None = not given, never guessed
    smoking: Optional[bool] = None
    spiculated: Optional[bool] = None
    short_axis_cm: Optional[float] = None
    short_axis_source: Optional[str] = None  # "measured" | "user"
    long_axis_mm: Optional[float] = None
    combined_probability: Optional[float] = None
    combined_positive: Optional[bool] = None
    # inputs and run
    image_path: str = ""
    mask_path: str = ""
    label: Optional[str] = None
    device: str = "cpu"
    timings: dict = field(default_factory=dict)  # stage -> seconds
    warnings: list = field(default_factory=list)
    features: dict = field(default_factory=dict)  # the 9 features, name -> value
    all_features: Optional[list] = None  # the 4096-vector, only when asked
    stability: Optional[dict] = None  # min/median/max/n_flipped under small perturbations, when asked
    config_hash: str = ""
    created: str = ""  # ISO 8601 UTC
    # reference geometry only: upstream's `touched_border` = the cube ran off the image and was padded
    cube_padded: Optional[bool] = None
    # "FCIB v1.0.0 (MD5 ... = the publisher's checksum)" or "FCIB weights: unverified file sha256 ..."
    fcib_weights: str = ""
    disclaimer: str = DISCLAIMER

    @property
    def demo_banner(self) -> str:
        from DFM50NLib.constants import DEMO_LABEL

        return DEMO_LABEL if self.classifier_is_demo else ""

    def to_dict(self, include_all_features=True) -> dict:
        d = asdict(self)
        if not include_all_features:
            d.pop("all_features")
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Result:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def to_json(self, include_all_features=True) -> str:
        return json.dumps(_finite(self.to_dict(include_all_features)), indent=2, ensure_ascii=False)

    def flat_row(self) -> dict:
        """One CSV row: scalars as they are, vectors split into named columns."""
        d = self.to_dict(include_all_features=False)
        row = {}
        for key, value in d.items():
            if key in ("center_ras", "center_lps"):
                for axis, v in zip(key[-3:].upper(), value):
                    row[f"{key}_{axis}"] = v
            elif key == "timings":
                for stage, seconds in value.items():
                    row[f"time_{stage}_s"] = seconds
            elif key == "features":
                row.update(value)
            elif key == "warnings":
                row[key] = " | ".join(value)
            elif key == "cube_to_ras":
                continue
            elif key == "stability":
                for stat in ("min", "median", "max", "n_flipped"):
                    row[f"stability_{stat}"] = None if value is None else value.get(stat)
            else:
                row[key] = value
        row["demo_banner"] = self.demo_banner
        return row


def _finite(obj):
    """JSON has no NaN: write null instead of producing an unreadable file."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def rows_to_csv(rows: list[dict]) -> str:
    """Every CSV the project writes: header and cells through `csv_cell`, so no cell runs as a formula."""
    columns = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([csv_cell(c) for c in columns])
    for row in rows:
        writer.writerow([csv_cell("" if row.get(c) is None else row.get(c)) for c in columns])
    return buf.getvalue()


FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value):
    """A text cell a spreadsheet would run as a formula (=, +, -, @, tab, CR first) gets a leading single quote
    (OWASP's advice against CSV injection: a case id or manifest value ``=HYPERLINK(...)`` stays text).
    Numbers stay numbers: floats, ints and numeric text such as ``-0.5`` are written as they are."""
    if isinstance(value, str) and value.startswith(FORMULA_START) and not _numeric(value):
        return "'" + value
    return value


def _numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return text == text.strip()


def write_json(result: Result, path, include_all_features=True):
    return atomic.write_text(path, result.to_json(include_all_features) + "\n")


def write_csv(results, path):
    results = [results] if isinstance(results, Result) else list(results)
    return atomic.write_text(path, rows_to_csv([r.flat_row() for r in results]))


def read_json(path) -> Result:
    with open(path, encoding="utf-8") as f:
        return Result.from_dict(json.load(f))
