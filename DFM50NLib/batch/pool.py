"""Local scale-out: a pool of worker processes, each building the network once and scoring chunks.

Chunks of `batch_size` cases keep every worker's forward batched and its reader thread busy; the
driver writes each chunk's results as it returns. If a worker process dies (out of memory, a crash
in a reader library), the chunks it held are given to a fresh pool once; cases that kill a second
pool too are reported as errors instead of stopping the job.
"""

from __future__ import annotations

import os

from DFM50NLib.batch.engine import JobConfig, error_outcome, pool_init, run_chunk


def chunks(tasks, size):
    size = max(1, int(size))
    return [tasks[i : i + size] for i in range(0, len(tasks), size)]


def run_pool(tasks, cfg: JobConfig, sink, workers: int, attempts: int = 2) -> None:
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    threads = max(1, (os.cpu_count() or 1) // workers)
    pending = chunks(list(tasks), cfg.batch_size)
    for attempt in range(attempts):
        failed = []
        # spawn: a fork of a process that already runs torch threads can deadlock
        with ProcessPoolExecutor(
            max_workers=workers,
            mp_context=mp.get_context("spawn"),
            initializer=pool_init,
            initargs=(threads, os.getpid()),
        ) as pool:
            futures = {pool.submit(run_chunk, chunk, cfg): chunk for chunk in pending}
            try:
                for fut in as_completed(futures):
                    try:
                        outcomes = fut.result()
                    except BrokenProcessPool:
                        failed.append(futures[fut])
                        continue
                    for outcome in outcomes:
                        sink(outcome)
            except BaseException:  # Ctrl-C or a global error: do not wait for the queued chunks
                pool.shutdown(wait=False, cancel_futures=True)
                raise
        if not failed:
            return
        pending = failed
    for chunk in pending:
        for task in chunk:
            sink(
                error_outcome(
                    task,
                    RuntimeError(
                        f"a worker process died while scoring this chunk, {attempts} times; score the case alone "
                        "(python -m DFM50NLib score) to see why"
                    ),
                    "worker",
                )
            )
