"""The same cohort job on a Dask distributed cluster (`--scheduler tcp://host:8786`).

Each task scores a chunk of cases on a worker (network built once per worker process by
`get_encoder`'s process cache) and *returns* the results: the driver writes them, atomically and by
case id, so workers need the input files and the weights but no shared output folder. Task keys are
derived from the cases' config hashes, so a task re-run by the scheduler after a worker died computes
and returns the same thing, and the driver's write is the only one: exactly one result per case.
"""

from __future__ import annotations

import hashlib

from .batch_engine import JobConfig, error_outcome, run_chunk
from .batch_pool import chunks


def run_dask(tasks, cfg: JobConfig, sink, scheduler) -> None:
    from distributed import Client, as_completed

    own = not isinstance(scheduler, Client)
    client = Client(scheduler) if own else scheduler
    try:
        futures = {}
        for chunk in chunks(list(tasks), cfg.batch_size):
            key = "dfm50n-" + hashlib.sha256("".join(t.config_hash for t in chunk).encode()).hexdigest()[:32]
            futures[client.submit(run_chunk, chunk, cfg, key=key, retries=1)] = chunk
        for fut in as_completed(list(futures)):
            chunk = futures[fut]
            try:
                outcomes = fut.result()
            except Exception as exc:  # noqa: BLE001 - e.g. KilledWorker after repeated worker deaths
                outcomes = [error_outcome(t, exc, "dask") for t in chunk]
            for outcome in outcomes:
                sink(outcome)
            fut.release()
    finally:
        if own:
            client.close()
