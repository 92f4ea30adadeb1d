"""The cohort's feature tables (features_9 / features_4096) as CSV or, when pyarrow is installed, Parquet.

Parquet because a 4096-column CSV of a few thousand cases is hundreds of MB of text that pandas parses
slowly; the Parquet file is typed, compressed and loads in a blink. Both are regenerated from the
per-case results and written atomically (a reader sees the previous table or the whole new one).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from DFM50NLib import atomic
from DFM50NLib.errors import InputError

FORMATS = ("csv", "parquet")


def check_format(features_format: str, save_features) -> str:
    """Fail before scoring: an unknown format, or Parquet without pyarrow, would only show at the end."""
    fmt = str(features_format or "csv").lower()
    if fmt not in FORMATS:
        raise InputError(f"features_format must be one of {', '.join(FORMATS)}, got {features_format!r}.")
    if fmt == "parquet":
        if save_features not in (9, 4096):
            raise InputError(
                "--features-format parquet only applies to feature tables: add --save-features 9 (or 4096)."
            )
        try:
            import pyarrow
            import pyarrow.parquet  # noqa: F401
        except ImportError:
            raise InputError(
                "Parquet feature tables need pyarrow: pip install pyarrow (or use --features-format csv)."
            ) from None
    return fmt


def write_feature_tables(out: Path, results, save_features, features_format="csv") -> dict:
    """features_9.<fmt> (with save_features 9 or 4096) and features_4096.<fmt> (with 4096); returns paths.

    `results`: the cohort's `Result`s in manifest order. Tables keep that order; case_id comes first.
    """
    paths = {}
    if save_features not in (9, 4096):
        return paths
    fmt = check_format(features_format, save_features)
    with4096 = [r for r in results if r.all_features]
    if fmt == "csv":
        from DFM50NLib.scoring.result import rows_to_csv

        f9 = [{"case_id": r.case_id, **r.features} for r in results]
        paths["features_9_csv"] = atomic.write_text(out / "features_9.csv", rows_to_csv(f9) if f9 else "case_id\n")
        if save_features == 4096:
            f4096 = [{"case_id": r.case_id, **{f"pred_{i}": v for i, v in enumerate(r.all_features)}} for r in with4096]
            paths["features_4096_csv"] = atomic.write_text(
                out / "features_4096.csv", rows_to_csv(f4096) if f4096 else "case_id\n"
            )
        return paths
    names = list(results[0].features) if results else []
    paths["features_9_parquet"] = _write_parquet(
        out / "features_9.parquet",
        [r.case_id for r in results],
        np.asarray([[r.features.get(n) for n in names] for r in results], dtype=np.float64).reshape(
            len(results), len(names)
        ),
        names,
    )
    if save_features == 4096:
        # float32: the encoder's own precision, so the values are exact at half the size of float64
        paths["features_4096_parquet"] = _write_parquet(
            out / "features_4096.parquet",
            [r.case_id for r in with4096],
            np.asarray([r.all_features for r in with4096], dtype=np.float32).reshape(len(with4096), 4096),
            [f"pred_{i}" for i in range(4096)],
        )
    return paths


def _write_parquet(path: Path, case_ids, values: np.ndarray, names) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = {"case_id": pa.array([str(c) for c in case_ids], pa.string())}
    columns.update({name: pa.array(values[:, n]) for n, name in enumerate(names)})
    table = pa.table(columns)
    with atomic.atomic_path(path) as tmp:
        pq.write_table(table, str(tmp))
    return Path(path)
