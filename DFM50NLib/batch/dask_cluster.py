"""The same cohort job on a Dask distributed cluster (`--scheduler tcp://host:8786`).

Each task scores a chunk of cases on a worker (network built once per worker process by
`get_encoder`'s process cache) and *returns* the results: the driver writes them, atomically and by
case id, so workers need the input files and the weights but no shared output folder. Task keys are
derived from the cases' config hashes, so a task re-run by the scheduler after a worker died computes
and returns the same thing, and the driver's write is the only one: exactly one result per case.
With --device cuda every task asks for one unit of the `GPU` resource, so a worker started with
`--resources GPU=1` runs one chunk at a time on its GPU (its cubes in full batches, engine.run_tasks)
and CPU-only workers of the same cluster get none.
"""

from __future__ import annotations

import contextlib
import hashlib

from DFM50NLib.batch.engine import JobConfig, error_outcome, run_chunk
from DFM50NLib.batch.pool import chunks
from DFM50NLib.errors import InputError

RESUBMITS = 2  # fresh submissions of a chunk whose future failed, on top of Dask's own retry


CONNECT_TIMEOUT_S = 15


@contextlib.contextmanager
def connect(address, timeout=CONNECT_TIMEOUT_S):
    """A `distributed.Client` for `address`, closed on exit; InputError (no traceback) if it cannot connect."""
    try:
        from distributed import Client
    except ImportError:
        raise InputError("--scheduler needs Dask: pip install 'dask[distributed]'.") from None
    try:
        client = Client(address, timeout=timeout)
    except (OSError, ValueError, TypeError) as exc:
        raise InputError(
            f"cannot connect to the Dask scheduler {address!r}: {exc}. Give its address as tcp://HOST:PORT "
            "(e.g. tcp://10.0.0.5:8786) and check that the scheduler is running and reachable."
        ) from None
    try:
        yield client
    finally:
        client.close()


def run_dask(tasks, cfg: JobConfig, sink, scheduler) -> None:
    """Submit chunks, write each chunk's outcomes as its future completes.

    run_chunk turns every case's error into an outcome, so a future that *raises* failed in the
    cluster or the worker's environment, not in a case: a worker died twice (KilledWorker), its result
    could not be fetched, the weights are not readable on that worker. Such a chunk is submitted again
    under a new key (up to RESUBMITS times) before its cases are reported as failed, with the error's
    message; a case is still written once, because only a future that returns is written.
    """
    from distributed import Client, as_completed

    own = not isinstance(scheduler, Client)
    client = Client(scheduler) if own else scheduler
    try:
        futures = {}
        needs = gpu_resources(client, cfg.device)

        def submit(chunk, attempt):
            key = "dfm50n-" + hashlib.sha256("".join(t.config_hash for t in chunk).encode()).hexdigest()[:32]
            fut = client.submit(
                run_chunk, chunk, cfg, key=f"{key}-{attempt}" if attempt else key, retries=1, resources=needs
            )
            futures[fut] = (chunk, attempt)
            return fut

        for chunk in chunks(list(tasks), cfg.batch_size):
            submit(chunk, 0)
        pending = as_completed(list(futures))
        for fut in pending:
            chunk, attempt = futures.pop(fut)
            try:
                outcomes = fut.result()
            except Exception as exc:
                if attempt < RESUBMITS:
                    pending.add(submit(chunk, attempt + 1))
                    outcomes = []
                else:
                    outcomes = [error_outcome(t, exc, "dask") for t in chunk]
            finally:
                fut.release()
            for outcome in outcomes:
                sink(outcome)
    finally:
        if own:
            client.close()


def gpu_resources(client, device) -> dict | None:
    """{"GPU": 1} for a CUDA job, after checking that a worker declares it (else every task would wait forever)."""
    if not str(device).startswith("cuda"):
        return None
    workers = client.scheduler_info().get("workers", {})
    if not any(w.get("resources", {}).get("GPU", 0) >= 1 for w in workers.values()):
        raise InputError(
            f"--device cuda on Dask: none of the {len(workers)} worker(s) of {client.scheduler.address} declares a "
            "GPU. Start one worker per GPU with `dask worker SCHEDULER --nthreads 1 --resources GPU=1` "
            "(CUDA_VISIBLE_DEVICES=N picks its GPU), or score on the CPU (--device cpu)."
        )
    return {"GPU": 1}
