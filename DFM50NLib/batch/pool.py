"""Local scale-out: a pool of reader processes prepares the cubes, this process alone runs the network.

On a GPU the forward takes 600+ cubes/s while one process reads, masks and cubes a CT in ~0.1 s: with a
network per worker the GPU idled 98 % of the time (issue 21). So `--workers N` starts N reader processes
(no torch, no network: ~0.2 GB each instead of ~1 GB) that run `prepare` and send back the 50 mm cube,
and `engine.run_tasks` forwards their cubes in full batches. A reader that dies (out of memory, a crash
in a reader library) breaks its pool and takes the cases in flight with it: those are prepared again one
at a time in fresh pools, so only a case that kills its reader again is reported as an error (stage
`worker`), and the job goes on.
"""

from __future__ import annotations

import os
import queue
import threading
from functools import partial
from typing import Optional

from DFM50NLib.batch.engine import DONE, JobConfig, error_outcome, prepared_item, put, run_tasks


def chunks(tasks, size):
    size = max(1, int(size))
    return [tasks[i : i + size] for i in range(0, len(tasks), size)]


def default_readers(device: str) -> int:
    """Readers when --workers is not given: on a GPU every core but the network's one; on the CPU none
    (a prefetch thread: the forward, not the reading, is the bottleneck there)."""
    if str(device).startswith("cuda"):
        return max(1, (os.cpu_count() or 2) - 1)
    return 1


def run_pool(tasks, cfg: JobConfig, sink, workers: int, stats: Optional[dict] = None) -> None:
    """Score `tasks` with `workers` reader processes feeding the network of this process."""
    run_tasks(tasks, cfg, sink, stats=stats, producer=partial(read_in_processes, readers=workers))


def read_in_processes(
    tasks, out: queue.Queue, stop: threading.Event, keep_volumes: bool, *, readers, prepare=prepared_item
):
    """engine.run_tasks's producer: `prepare(task, keep_volumes)` in `readers` processes, queued as they finish."""
    try:
        lost = _one_pool(list(tasks), out, stop, keep_volumes, readers, prepare)
        while lost and not stop.is_set():  # alone in its pool, a case that kills its reader is the culprit
            again = _one_pool(lost, out, stop, keep_volumes, 1, prepare, ahead=1)
            if again:
                task, lost = again[0], again[1:]
                exc = RuntimeError(
                    "a reader process died while preparing this case, twice (the second time alone); score "
                    "the case alone (python -m DFM50NLib score) to see why"
                )
                if not put(out, (task, None, error_outcome(task, exc, "worker"), 0.0), stop):
                    return
            else:
                lost = []
    finally:
        put(out, DONE, stop)


def _one_pool(tasks, out, stop, keep_volumes, readers, prepare, ahead=2) -> list:
    """Prepare `tasks` in one pool, `ahead` cases per reader in flight; returns the tasks lost when a reader died
    (the pool is then broken), the one that was in flight first."""
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    todo = iter(tasks)
    in_flight: dict = {}
    # spawn: a fork of a process that already runs torch threads can deadlock
    pool = ProcessPoolExecutor(
        max_workers=readers, mp_context=mp.get_context("spawn"), initializer=reader_init, initargs=(os.getpid(),)
    )
    try:
        while True:
            while len(in_flight) < ahead * readers:  # bounded memory, never an idle reader
                task = next(todo, None)
                if task is None:
                    break
                try:
                    in_flight[pool.submit(prepare, task, keep_volumes)] = task
                except BrokenProcessPool:  # a reader died between two cases
                    return [*in_flight.values(), task, *todo]
            if not in_flight:
                return []
            done, _ = wait(in_flight, timeout=0.5, return_when=FIRST_COMPLETED)
            if stop.is_set():
                return []
            for fut in done:
                task = in_flight.pop(fut)
                try:
                    item = fut.result()
                except BrokenProcessPool:  # every other case of this pool is lost with it
                    return [task, *in_flight.values(), *todo]
                if not put(out, item, stop):
                    return []
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def reader_init(parent_pid: Optional[int] = None):
    """Reader-process initializer: exit when the driver dies (kill -9 leaves no orphan), one ITK thread each
    (the readers themselves share the cores)."""
    import warnings

    from DFM50NLib.batch.orphan import exit_with_parent

    exit_with_parent(parent_pid)
    # a reader has no console of its own: what matters reaches Result.warnings; a library's notes would only
    # interleave with the driver's progress bar
    warnings.simplefilter("ignore")
    try:
        import SimpleITK as sitk

        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    except ImportError:
        pass
