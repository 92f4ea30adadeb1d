"""The scoring loop of a cohort job, identical wherever it runs (this process, a Dask task).

A producer runs `prepare_case` ahead (read CT, mask, centre, cube) into a bounded queue while the calling
thread, the only one with the network, pushes full batches of cubes through it, so CT I/O hides behind the
forward pass. The producer is one thread here (`_reader`), or a pool of reader processes (batch/pool.py)
when one thread cannot prepare cubes as fast as the network takes them (a GPU takes 600+ cubes/s).
The network is built once per process (`get_encoder`'s process cache); the classifier is cached here.
Every case ends as an *outcome* dict (picklable): a result or an error, never an exception, so one
bad case cannot stop the others. Only model-loading failures (weights, classifier) raise: they concern
every case.
"""

from __future__ import annotations

import queue
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from DFM50NLib.errors import DFM50NError, InputError

DONE = object()  # the producer's last item
_classifiers: dict = {}


@dataclass
class JobConfig:
    """What every worker needs to score a task; small and picklable (it travels to Dask workers)."""

    weights: str  # resolved FCIB weights path (must be readable where the worker runs)
    model: Optional[str] = None  # classifier folder; None = bundled demo
    device: str = "cpu"
    keep_features: int = 9  # 4096 keeps the full vector in each result
    batch_size: int = 4
    report_dir: Optional[str] = None  # write a report per case there (needs DFM50NLib.report.writer)
    weights_sha256: str = ""  # what the driver hashed; a worker's own copy must match it
    stability: bool = False  # run the stability panel per case (8 more cubes through the network)
    dicom_sr_dir: Optional[str] = None  # write a DICOM SR + SEG per case there (DICOM CTs only)


@dataclass
class Task:
    """One case to score, with its merged options and the config hash its result will carry."""

    case_id: str
    image: str
    mask: str
    options: dict  # prepare_case keyword arguments (label, segment, center, point_ras, orientation, geometry)
    clinical: dict
    config_hash: str
    row: int = 0


def models(cfg: JobConfig):
    """(encoder, classifier) for this process: built on first use, then reused by every task."""
    from DFM50NLib.model.classifier import load_classifier
    from DFM50NLib.scoring.pipeline import load_encoder

    key = str(cfg.model)
    if key not in _classifiers:
        _classifiers[key] = load_classifier(cfg.model)
    if Path(cfg.weights).is_file():
        return load_encoder(cfg.weights, cfg.device), _classifiers[key]
    # a cluster worker without the driver's path: its own copy ($DFM50N_FCIB_WEIGHTS or its cache),
    # accepted only if it is the very same file
    from DFM50NLib.errors import WeightsError

    encoder = load_encoder(None, cfg.device)
    if cfg.weights_sha256 and encoder.weights_sha256 != cfg.weights_sha256:
        raise WeightsError(
            f"This worker's FCIB weights ({encoder.weights_path}) differ from the driver's "
            f"{cfg.weights} (SHA-256 {cfg.weights_sha256[:12]}...): give every worker the same file."
        )
    return encoder, _classifiers[key]


def error_outcome(task: Task, exc: BaseException, stage: str) -> dict:
    """An error as data: user-fixable errors keep their message; others add the type and traceback."""
    user = isinstance(exc, DFM50NError)
    message = str(exc) if user else f"{type(exc).__name__}: {exc}"
    return {
        "case_id": task.case_id,
        "row": task.row,
        "ok": False,
        "config_hash": task.config_hash,
        "error": {
            "case_id": task.case_id,
            "image": task.image,
            "mask": task.mask,
            "stage": stage,
            "error_type": type(exc).__name__,
            "message": message or type(exc).__name__,
            "traceback": "" if user else traceback.format_exc(limit=8),
        },
    }


def prepare(task: Task, keep_volumes=False):
    """prepare_case plus the checks a cohort needs to fail one case cleanly (missing file, NaN cube)."""
    from DFM50NLib.scoring.pipeline import prepare_case

    for what, p in (("CT", task.image), ("mask", task.mask)):
        if not Path(p).exists():
            raise InputError(
                f"{what} not found: {p}. Fix the path in the manifest (relative paths are "
                "relative to the manifest's folder)."
            )
    prep = prepare_case(task.image, task.mask, case_id=task.case_id, **task.options)
    cube = np.asarray(prep.cube.ct)
    if not np.isfinite(cube).all():
        bad = int(np.size(cube) - np.isfinite(cube).sum())
        raise InputError(
            f"The CT has {bad} NaN/infinite values in the 50 mm cube around the lesion: the "
            "score would be meaningless. Re-export the CT (check the DICOM conversion)."
        )
    if not keep_volumes:  # the full CT is only needed for reports: do not queue hundreds of MB per case
        prep.ct = None
        prep.prepared_mask = None
    return prep


def prepared_item(task: Task, keep_volumes: bool) -> tuple:
    """(task, prepared case, None, seconds) or (task, None, error outcome, 0): what a producer queues."""
    t = time.perf_counter()
    try:
        return (task, prepare(task, keep_volumes), None, time.perf_counter() - t)
    except Exception as exc:
        return (task, None, error_outcome(task, exc, "prepare"), 0.0)


def _reader(tasks, out: queue.Queue, stop: threading.Event, keep_volumes: bool):
    """Prefetch thread: prepare cases ahead; always ends with DONE so the consumer never waits forever."""
    try:
        for task in tasks:
            if stop.is_set() or not put(out, prepared_item(task, keep_volumes), stop):
                break
    finally:
        put(out, DONE, stop)


def put(q: queue.Queue, item, stop: threading.Event) -> bool:
    """Blocking put that gives up once the consumer has stopped (no thread left hanging on a full queue)."""
    while True:
        try:
            q.put(item, timeout=0.2)
            return True
        except queue.Full:
            if stop.is_set():
                return False


def run_tasks(
    tasks,
    cfg: JobConfig,
    on_outcome: Callable[[dict], None],
    *,
    stats: Optional[dict] = None,
    stop: Optional[threading.Event] = None,
    producer: Optional[Callable] = None,
) -> None:
    """Score `tasks` here: a producer prepares, this thread forwards full batches; `on_outcome(outcome)` per case.

    `stats` (optional dict) receives wall seconds spent in the forward, in waiting for the reader, total.
    `producer(tasks, queue, stop, keep_volumes)`: runs in a thread, queues `prepared_item`s, ends with
    `DONE` (default: `_reader`, which prepares in that thread).
    """
    tasks = list(tasks)
    stats = stats if stats is not None else {}
    for k in ("forward_s", "wait_s", "finish_s", "wall_s", "cases"):
        stats.setdefault(k, 0.0)
    if not tasks:
        return
    t_start = time.perf_counter()
    bs = max(1, int(cfg.batch_size))
    q: queue.Queue = queue.Queue(maxsize=2 * bs)  # the next full batch is read while this one is forwarded
    stop = stop or threading.Event()
    keep_volumes = cfg.report_dir is not None or cfg.stability or bool(cfg.dicom_sr_dir)  # they re-read the CT
    reader = threading.Thread(
        target=producer or _reader, args=(tasks, q, stop, keep_volumes), name="dfm50n-prefetch", daemon=True
    )
    reader.start()
    done = False
    try:
        encoder, classifier = models(cfg)  # the reader already prepares the first cases meanwhile
        stats["load_s"] = stats.get("load_s", 0.0) + time.perf_counter() - t_start
        while not done:
            t = time.perf_counter()
            batch = []
            while len(batch) < bs:  # full batches: the network never runs a half-empty forward mid-cohort
                item = q.get()
                if item is DONE:
                    done = True
                    break
                if item[1] is None:
                    on_outcome(item[2])
                else:
                    batch.append(item)
            stats["wait_s"] += time.perf_counter() - t
            if batch:
                _score_batch(batch, encoder, classifier, cfg, on_outcome, stats)
    finally:
        stop.set()
        reader.join(timeout=30)
        stats["wall_s"] += time.perf_counter() - t_start


def _score_batch(batch, encoder, classifier, cfg, on_outcome, stats):
    t = time.perf_counter()
    try:
        cubes = np.stack([np.asarray(p.cube.ct, dtype=np.float32) for _, p, _, _ in batch])
        feats = _forward(encoder, cubes, cfg.batch_size)
        per_case = (time.perf_counter() - t) / len(batch)
    except Exception:
        if len(batch) == 1:
            on_outcome(error_outcome(batch[0][0], _current_exc(), "forward"))
            stats["forward_s"] += time.perf_counter() - t
            return
        stats["forward_s"] += time.perf_counter() - t
        for item in batch:
            _score_batch([item], encoder, classifier, cfg, on_outcome, stats)
        return
    stats["forward_s"] += time.perf_counter() - t
    t = time.perf_counter()
    for (task, prep, _, prep_s), f in zip(batch, feats):
        prep.timings["forward"] = per_case
        try:
            outcome = finish(task, prep, f, encoder, classifier, cfg, prep_s + per_case)
        except Exception as exc:
            outcome = error_outcome(task, exc, "finish")
        on_outcome(outcome)  # outside the try: the sink's own stop (a full disk) is not this case's error
        stats["cases"] += 1
    stats["finish_s"] += time.perf_counter() - t


def _forward(encoder, cubes, batch_size):
    """The cubes in forwards of exactly `batch_size`, the last one padded with copies of the first cube.

    float32 kernels change with the batch size (a cube's features moved by 5e-6 between batches of 1 and 4
    on the CPU) but not with the other cubes of the batch: so a case's result does not depend on timing,
    on which reader was faster or on where in the cohort it falls, and every run of a job is bit-identical.
    """
    n = len(cubes)
    if n % batch_size:
        cubes = np.concatenate([cubes, np.repeat(cubes[:1], batch_size - n % batch_size, axis=0)])
    try:
        return encoder.features(cubes, batch_size=batch_size)[:n]
    except TypeError:  # an encoder without the batch_size keyword
        return encoder.features(cubes)[:n]


def _current_exc():
    import sys

    return sys.exc_info()[1]


def finish(task: Task, prep, features, encoder, classifier, cfg: JobConfig, elapsed: float) -> dict:
    """features -> Result exactly as score_case builds it, plus the config hash; as an outcome dict."""
    from DFM50NLib.scoring import pipeline

    t = time.perf_counter()
    feats = np.asarray(features, dtype=np.float32)
    if not np.isfinite(feats).all():
        raise InputError("The network returned NaN/infinite features for this cube; check the CT values.")
    result = pipeline.finish_case(
        prep, feats, classifier, encoder, clinical=task.clinical, keep_features=cfg.keep_features, device=cfg.device
    )
    result.image_path, result.mask_path = str(task.image), str(task.mask)
    stab = None
    if cfg.stability:
        try:
            stab = pipeline.add_stability(result, prep, encoder, classifier)
        except Exception as exc:
            return error_outcome(task, exc, "stability")
    result.timings["total"] = elapsed + (time.perf_counter() - t)
    result.config_hash = task.config_hash
    from DFM50NLib import atomic

    with atomic.transaction():  # the case's SR and report replace the earlier ones together, or neither does
        if cfg.dicom_sr_dir:  # first: a case whose SR cannot be written says so in its report too
            _write_dicom_sr(result, prep, cfg.dicom_sr_dir, task.options.get("segment"))
        if cfg.report_dir:
            from DFM50NLib.report.writer import write_report

            write_report(
                result,
                Path(cfg.report_dir),
                ct=prep.ct,
                prepared_mask=prep.prepared_mask,
                cube=prep.cube,
                diameters=prep.diameters,
                stability=stab,
            )
    return {
        "case_id": task.case_id,
        "row": task.row,
        "ok": True,
        "config_hash": task.config_hash,
        "result": result.to_dict(include_all_features=cfg.keep_features == 4096),
    }


def _write_dicom_sr(result, prep, folder, segment=None):
    """The score stands without its SR: a case whose CT is not DICOM gets a warning, not an error."""
    from DFM50NLib.report.dicom_sr import write_dicom_sr

    try:
        write_dicom_sr(result, prep.ct, prep.prepared_mask, Path(folder), segment=segment)
    except InputError as exc:
        result.warnings.append(f"No DICOM SR written: {exc}")


def run_chunk(tasks, cfg: JobConfig) -> list:
    """A pool / Dask task: score a few cases in the worker process, return their outcomes.

    Idempotent: it writes nothing but reports (same content on a re-run), so a task re-run after a
    worker died is harmless; the driver writes the result files, keyed by case id.
    """
    outcomes: list = []
    run_tasks(tasks, cfg, outcomes.append)
    return outcomes
