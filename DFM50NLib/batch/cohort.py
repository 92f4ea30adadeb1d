"""Cohort scoring: many cases, resumable, crash-proof, in this process, a local pool or a Dask cluster.

    from DFM50NLib.batch.cohort import score_cohort
    summary = score_cohort("cases.csv", "out/", progress=lambda done, total, case_id: print(done, total))

Output folder layout (every file written atomically):
    cases/<case_id>.json    one result per case, written the moment the case finishes
    errors/<case_id>.json   one per failed case (removed when the case later succeeds)
    results.csv             regenerated from cases/ in manifest order (plus the manifest's extra columns)
    errors.csv              the failed and unpaired cases of this run, with their messages
    features_9.csv / features_4096.csv   with save_features=9 / 4096 (.parquet with features_format="parquet")
    batch_config.json       the job's options and model identities
A re-run skips every case whose cases/<id>.json carries the same config hash (see
`batch_manifest.config_hash`) and redoes the rest, so killing the job loses at most the cases in flight.
The driver is the only writer of results; workers return them (Dask workers need no shared output folder).
"""

from __future__ import annotations

import contextlib
import errno
import glob
import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from DFM50NLib import __version__, atomic
from DFM50NLib.atomic import safe_stem
from DFM50NLib.batch.engine import JobConfig, Task
from DFM50NLib.batch.manifest import Case, config_hash, pair_folders, read_manifest
from DFM50NLib.constants import DEFAULT_CENTER_METHOD, DEFAULT_ORIENTATION
from DFM50NLib.errors import DFM50NError, InputError

__all__ = ["BatchSummary", "Case", "pair_folders", "read_manifest", "score_cohort"]


@dataclass
class BatchSummary:
    n_total: int  # cases in the manifest (paired cases for folders)
    n_done: int  # scored by this run
    n_skipped: int  # already scored with the same configuration
    n_failed: int  # in errors.csv (failed cases + unpaired files)
    out_dir: Path
    paths: dict = field(default_factory=dict)  # results_csv, errors_csv, features_csv, cases_dir, ...
    failed: list = field(default_factory=list)  # case ids
    unpaired: list = field(default_factory=list)  # problems found while pairing folders
    elapsed_s: float = 0.0
    stats: dict = field(default_factory=dict)  # forward / wait seconds (in-process runs)

    def __str__(self):
        n_bad = len(self.unpaired)
        bad = f", {n_bad} unpaired or bad manifest row(s)" if n_bad else ""
        return (
            f"{self.n_done} scored, {self.n_skipped} already done, {self.n_failed - n_bad} failed{bad} "
            f"of {self.n_total + n_bad} in {self.elapsed_s:.1f} s -> {self.paths.get('results_csv')}"
        )


def score_cohort(
    manifest_or_cases,
    out_dir,
    *,
    progress: Optional[Callable] = None,
    workers: Optional[int] = None,
    scheduler=None,
    batch_size: int = 4,
    save_features: Optional[int] = None,
    weights=None,
    model=None,
    device: str = "cpu",
    center: str = DEFAULT_CENTER_METHOD,
    point_ras=None,
    orientation: str = DEFAULT_ORIENTATION,
    geometry: str = "physical",
    label=None,
    segment=None,
    report: bool = False,
    download: bool = False,
    stability: bool = False,
    features_format: str = "csv",
    dicom_sr=None,
    on_result: Optional[Callable] = None,
) -> BatchSummary:
    """Score a cohort into `out_dir`; returns counts and paths. Safe to re-run (resumes).

    manifest_or_cases: a manifest CSV path, an (images_dir, masks_dir) pair, or a list of `Case` /
    dicts with case_id, image, mask (+ optional label, segment, center, smoking, spiculated,
    short_axis_cm, and any outcome keys). progress(done, total, case_id) is called after each case
    (done counts skipped cases too). workers > 1: that many reader processes prepare the cubes for the
    network in this process (None: cores - 1 on CUDA, else 1 = a reader thread); scheduler: a Dask scheduler
    address or a `distributed.Client`. stability: also run the stability panel per case (8 more cubes
    each; recorded in result.stability and the reports; part of the config hash). features_format:
    "csv" or "parquet" (needs pyarrow) for the save_features tables. on_result(Result) is called for each case
    scored by this run, once its file is written (the CLI shows its warnings).
    """
    if isinstance(scheduler, str):  # connect first: a bad address is refused before anything is written
        kwargs = dict(locals())  # exactly the arguments (taken before any other name is bound here)
        from DFM50NLib.batch.dask_cluster import connect

        with connect(scheduler) as client:
            kwargs["scheduler"] = client
            return score_cohort(kwargs.pop("manifest_or_cases"), kwargs.pop("out_dir"), **kwargs)
    t0 = time.perf_counter()
    cases, problems = _cases_from(manifest_or_cases)
    if save_features not in (None, 0, 9, 4096):
        raise InputError(f"save_features must be 9 or 4096, got {save_features!r}.")
    from DFM50NLib.batch.features import check_format

    features_format = check_format(features_format, save_features)
    if stability and geometry == "reference":
        raise InputError(
            "The stability panel moves the centre in patient space (physical geometry); it is not "
            "available with --geometry reference. Drop --stability or use physical geometry."
        )
    if report:
        try:
            from DFM50NLib.report import writer as _report  # noqa: F401
        except ImportError:
            raise InputError(
                "Reports need DFM50NLib.report.writer, which this installation lacks; drop --report."
            ) from None
    from DFM50NLib.scoring.pipeline import normalise_options

    base = dict(
        center=center, point_ras=point_ras, orientation=orientation, geometry=geometry, label=label, segment=segment
    )
    normalise_options(**base)  # a bad job-wide option fails now, not once per case
    _check_models(weights, model, download)  # before anything is written to out_dir
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with _lock(out):
        cfg, identity = _job_config(
            weights, model, device, save_features, batch_size, out / "reports" if report else None, download, stability
        )
        cfg.dicom_sr_dir = str(Path(dicom_sr).resolve()) if dicom_sr else None  # SR + SEG per DICOM case
        tasks = [_task(c, base, identity, stability) for c in cases]
        atomic.write_text(
            out / "batch_config.json",
            json.dumps(
                {
                    "software_version": __version__,
                    "identity": identity,
                    "options": base,
                    "weights": cfg.weights,
                    "model": cfg.model,
                    "save_features": save_features,
                    "features_format": features_format,
                    "stability": bool(stability),
                    "n_cases": len(cases),
                },
                indent=2,
            )
            + "\n",
        )
        _clean_partials(out, cfg.dicom_sr_dir)
        todo, n_skipped = [], 0
        for t in tasks:
            if _is_done(out, t, cfg.keep_features):
                n_skipped += 1
            else:
                todo.append(t)
        sink = _Sink(out, len(tasks), n_skipped, progress, on_result)
        stats: dict = {}
        try:
            if todo:
                _run(todo, cfg, sink, stats, workers, scheduler)
        finally:  # also on Ctrl-C: the tables then show what is done and what is still to do
            try:
                paths = write_tables(
                    out,
                    cases,
                    tasks,
                    problems,
                    save_features,
                    report=report,
                    features_format=features_format,
                    errors=sink.errors,
                )
            except OSError as exc:
                if getattr(exc, "errno", None) not in (errno.ENOSPC, errno.EDQUOT, errno.EIO):
                    raise
                raise DiskFull(
                    f"the disk holding {out} is full: results.csv and errors.csv could NOT be written ({exc}); "
                    f"{sink.n_done} case(s) scored by this run are in {out / 'cases'}. Free some space and run "
                    "the same command again: it resumes and writes the tables."
                ) from None
    failed = [t.case_id for t in tasks if t.case_id in sink.failed or not _is_done(out, t, cfg.keep_features)]
    return BatchSummary(
        len(tasks),
        sink.n_done,
        n_skipped,
        len(failed) + len(problems),
        out,
        paths,
        failed,
        problems,
        time.perf_counter() - t0,
        stats,
    )


def _run(todo, cfg, sink, stats, workers, scheduler):
    if workers is None:
        from DFM50NLib.batch.pool import default_readers

        workers = default_readers(cfg.device)
    if scheduler is not None:
        from DFM50NLib.batch.dask_cluster import run_dask

        run_dask(todo, cfg, sink, scheduler)
    elif workers and int(workers) > 1:
        from DFM50NLib.batch.pool import run_pool

        run_pool(todo, cfg, sink, int(workers), stats)
    else:
        from DFM50NLib.batch.engine import run_tasks

        run_tasks(todo, cfg, sink, stats=stats)


def _cases_from(src) -> tuple[list[Case], list[dict]]:
    if isinstance(src, (str, os.PathLike)):
        if Path(src).is_dir():
            raise InputError(f"{src} is a folder: give a manifest CSV, or (images_dir, masks_dir).")
        from DFM50NLib.batch.manifest import read_manifest_rows

        return read_manifest_rows(src)
    if isinstance(src, tuple) and len(src) == 2 and all(isinstance(p, (str, os.PathLike)) for p in src):
        return pair_folders(*src)
    cases = []
    for i, c in enumerate(src):
        if isinstance(c, Case):
            cases.append(
                Case(c.case_id, str(c.image), str(c.mask), dict(c.options), dict(c.clinical), dict(c.extra), i)
            )
        else:
            from DFM50NLib.batch.manifest import _case_from_row

            raw = {k: ("" if v is None else str(v)) for k, v in dict(c).items()}
            cases.append(_case_from_row(raw, Path.cwd(), i))
    from DFM50NLib.batch.manifest import check_unique

    check_unique(cases)
    return cases, []


def _task(case: Case, base: dict, identity: dict, stability: bool = False) -> Task:
    from DFM50NLib.scoring.pipeline import normalise_options

    merged = dict(base)
    merged.update(case.options)
    try:
        norm = normalise_options(**merged)
    except InputError:
        norm = merged  # a bad per-case option fails that case only (prepare_case raises it again)
    key = {k: norm.get(k) for k in ("center", "point_ras", "orientation", "geometry", "label", "segment")}
    if stability:  # only when on, so the hashes of jobs without the panel stay what they were
        key["stability"] = _stability_key()
    return Task(
        case.case_id, case.image, case.mask, merged, dict(case.clinical), config_hash(case, key, identity), case.row
    )


def _stability_key() -> dict:
    """The panel's perturbation sizes: changing them changes result.stability, so they are hashed too."""
    from DFM50NLib.scoring.stability import CENTER_SHIFT_MM, MASK_MARGIN_MM

    return {"center_shift_mm": CENTER_SHIFT_MM, "mask_margin_mm": MASK_MARGIN_MM}


def _check_models(weights, model, download):
    """Weights present and intact (zip CRC-32, cached per file), classifier loadable: job-wide, so fail now."""
    from DFM50NLib.model.classifier import load_classifier
    from DFM50NLib.model.weights import resolve_weights
    from DFM50NLib.model.zipcheck import check_zip_crcs_cached

    check_zip_crcs_cached(resolve_weights(weights, download=download))
    load_classifier(model)


def _job_config(weights, model, device, save_features, batch_size, report_dir, download, stability):
    """Resolve the models once in the driver and record their identities (the network is not built here)."""
    from DFM50NLib.model.classifier import load_classifier
    from DFM50NLib.model.weights import recorded_sha256, resolve_weights
    from DFM50NLib.model.zipcheck import check_zip_crcs_cached

    wpath = Path(resolve_weights(weights, download=download)).resolve()
    check_zip_crcs_cached(wpath)  # a damaged file fails the job now, not every case one by one
    clf = load_classifier(model)
    identity = {
        "software_version": __version__,
        "fcib_weights_sha256": recorded_sha256(wpath),
        "classifier_sha256": clf.sha256,
        "device": device,
    }
    cfg = JobConfig(
        weights=str(wpath),
        model=None if model is None else str(Path(model).resolve()),
        device=device,
        keep_features=4096 if save_features == 4096 else 9,
        batch_size=max(1, int(batch_size)),
        report_dir=None if report_dir is None else str(report_dir),
        weights_sha256=identity["fcib_weights_sha256"],
        stability=bool(stability),
    )
    return cfg, identity


def _result_path(out: Path, case_id) -> Path:
    return out / "cases" / f"{safe_stem(case_id)}.json"


def _error_path(out: Path, case_id) -> Path:
    return out / "errors" / f"{safe_stem(case_id)}.json"


def _read(path: Path) -> Optional[dict]:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None  # absent or unreadable: the case is simply redone


def _is_done(out: Path, task: Task, keep_features: int) -> bool:
    d = _read(_result_path(out, task.case_id))
    return bool(d and d.get("config_hash") == task.config_hash and (keep_features != 4096 or d.get("all_features")))


class _Sink:
    """Receives outcomes (in the driver), writes them atomically, reports progress."""

    def __init__(self, out: Path, total: int, skipped: int, progress, on_result=None):
        self.out, self.total, self.done, self.progress, self.on_result = out, total, skipped, progress, on_result
        self.n_done, self.failed, self.errors = 0, set(), {}
        if progress and skipped:
            progress(skipped, total, None)

    def __call__(self, outcome: dict):
        """Never raises for one case's trouble: a result that cannot be written becomes that case's error;
        an error that cannot be written is kept in memory (and in errors.csv). A full disk stops the job."""
        cid = outcome["case_id"]
        if outcome["ok"]:
            from DFM50NLib.scoring.result import Result, write_json

            try:
                res = Result.from_dict(outcome["result"])
                write_json(res, _result_path(self.out, cid), include_all_features=res.all_features is not None)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(_error_path(self.out, cid))
                self.n_done += 1
                self.failed.discard(cid)
            except OSError as exc:
                self._stop_if_disk_full(exc)
                self._write_error(cid, _write_failure(outcome, exc))
            else:
                if self.on_result:
                    self.on_result(res)
        else:
            self._write_error(cid, outcome)
        self.done += 1
        if self.progress:
            self.progress(self.done, self.total, cid)

    def _write_error(self, cid, outcome):
        err = dict(
            outcome["error"],
            config_hash=outcome["config_hash"],
            time=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        )
        self.failed.add(cid)
        self.errors[cid] = err
        text = json.dumps(err, indent=2) + "\n"
        try:
            atomic.write_text(_error_path(self.out, cid), text)
        except OSError as exc:
            self._stop_if_disk_full(exc)
            # fallback sink: a name that cannot be too long; the full id is inside the JSON
            with contextlib.suppress(OSError):
                atomic.write_text(_fallback_error_path(self.out, cid), text)

    def _stop_if_disk_full(self, exc):
        if getattr(exc, "errno", None) in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFull(
                f"the disk holding {self.out} is full ({exc.strerror or exc}): the job stopped after "
                f"{self.done} of {self.total} cases. Free some space and run the same command again to resume."
            ) from None


class DiskFull(DFM50NError):
    """No space left for results: the job stops (results.csv / errors.csv are written for what is done)."""


def _write_failure(outcome, exc) -> dict:
    """The outcome of a case scored fine whose result file could not be written."""
    res = outcome.get("result") or {}
    return {
        "case_id": outcome["case_id"],
        "config_hash": outcome["config_hash"],
        "error": {
            "case_id": outcome["case_id"],
            "image": res.get("image_path", ""),
            "mask": res.get("mask_path", ""),
            "stage": "write",
            "error_type": type(exc).__name__,
            "message": f"scored, but the result file could not be written: {exc}",
        },
    }


def _fallback_error_path(out: Path, case_id) -> Path:
    return out / "errors" / f"case-{hashlib.sha256(str(case_id).encode('utf-8')).hexdigest()[:24]}.json"


def _clean_partials(out: Path, dicom_sr_dir=None):
    """Temporaries of atomic writes interrupted by a kill (only while we hold the lock): case files, reports,
    the tables and cohort summary beside them, and the SR folder's (``.<name>.<random>.part<suffix>``)."""
    folders = [out / sub for sub in ("cases", "errors", "reports")] + [out]
    for folder in folders + ([Path(dicom_sr_dir)] if dicom_sr_dir else []):
        for p in glob.glob(str(folder / ".*.part*")):
            with contextlib.suppress(OSError):
                os.unlink(p)


@contextlib.contextmanager
def _lock(out: Path):
    """One job per output folder: two writers would race on the same files. Released by the OS on kill."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory lock; documented as one job per folder
        yield
        return
    fd = os.open(out / ".dfm50n-batch.lock", os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InputError(
                f"Another DFM50N batch job is writing to {out}; wait for it or use another --out folder."
            ) from None
        yield
    finally:
        os.close(fd)


def write_tables(
    out: Path, cases, tasks, problems, save_features=None, report=False, features_format="csv", errors=None
) -> dict:
    """results.csv, errors.csv and feature tables, regenerated from the per-case files, manifest order.

    With `report`, also the cohort summary (score histogram + table) beside results.csv.
    """
    from DFM50NLib.scoring.result import Result, rows_to_csv

    rows, err_rows, results = [], [], []
    for case, task in zip(cases, tasks):
        d = _read(_result_path(out, case.case_id))
        if d and d.get("config_hash") == task.config_hash:
            res = Result.from_dict(d)
            results.append(res)
            row = res.flat_row()
            for k, v in case.extra.items():
                row[k if k not in row else f"manifest_{k}"] = v
            rows.append(row)
            continue
        e = (
            (errors or {}).get(case.case_id)
            or _read(_error_path(out, case.case_id))
            or {
                "case_id": case.case_id,
                "image": case.image,
                "mask": case.mask,
                "stage": "not run",
                "error_type": "NotScored",
                "message": "not scored (the job was interrupted): re-run to finish",
            }
        )
        err_rows.append(
            {k: e.get(k, "") for k in ("case_id", "image", "mask", "stage", "error_type", "message")} | dict(case.extra)
        )
    for p in problems:
        err_rows.append(
            {
                "case_id": p["case_id"],
                "image": p["image"],
                "mask": p["mask"],
                "stage": p.get("stage", "pairing"),
                "error_type": p.get("error_type", "Unpaired"),
                "message": p["error"],
            }
        )
    err_cols = ["case_id", "image", "mask", "stage", "error_type", "message"]
    paths = {
        "cases_dir": out / "cases",
        "errors_dir": out / "errors",
        "results_csv": atomic.write_text(out / "results.csv", rows_to_csv(rows) if rows else "case_id\n"),
        "errors_csv": atomic.write_text(
            out / "errors.csv", rows_to_csv(err_rows) if err_rows else ",".join(err_cols) + "\n"
        ),
    }
    from DFM50NLib.batch.features import write_feature_tables

    paths.update(write_feature_tables(out, results, save_features, features_format))
    if report and results:
        from DFM50NLib.report.writer import write_cohort_summary

        paths.update(write_cohort_summary(results, out, n_failed=len(err_rows)))
    return paths
