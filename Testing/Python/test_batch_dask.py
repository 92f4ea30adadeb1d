"""batch_dask.run_dask: a chunk whose future fails in the cluster is submitted again, and written once.

A real in-process Dask cluster runs a stand-in for run_chunk that fails a set number of times per chunk
(counted in files, so the count survives Dask's own retry), which is what a lost result or a twice-killed
worker looks like to the driver. The end-to-end run on a cluster that loses a worker is in test_batch.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from DFM50NLib.batch import dask_cluster as batch_dask
from DFM50NLib.batch.engine import JobConfig, Task


def _tasks(n):
    return [Task(f"c{i}", f"c{i}.nrrd", f"c{i}_mask.nii.gz", {}, {}, f"{i:064x}", row=i) for i in range(n)]


def _flaky(counter_dir: Path, failures: dict):
    """run_chunk that raises for the first failures[first case id] calls of a chunk, then succeeds."""

    def run_chunk(tasks, cfg):
        counter = counter_dir / tasks[0].case_id
        calls = int(counter.read_text()) if counter.exists() else 0
        counter.write_text(str(calls + 1))
        if calls < failures.get(tasks[0].case_id, 0):
            raise OSError(f"simulated lost result of {tasks[0].case_id} (call {calls + 1})")
        return [{"case_id": t.case_id, "ok": True, "config_hash": t.config_hash} for t in tasks]

    return run_chunk


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    with (
        LocalCluster(n_workers=1, processes=False, threads_per_worker=2, dashboard_address=None) as cluster,
        Client(cluster) as c,
    ):
        yield c


def _run(client, tmp_path, monkeypatch, failures):
    monkeypatch.setattr(batch_dask, "run_chunk", _flaky(tmp_path, failures))
    got = []
    batch_dask.run_dask(_tasks(6), JobConfig(weights="unused", batch_size=2), got.append, client)
    calls = {p.name: int(p.read_text()) for p in tmp_path.iterdir()}
    return got, calls


def test_failed_chunk_is_resubmitted_and_each_case_written_once(client, tmp_path, monkeypatch):
    # c2's chunk fails on both tries of its first submission (Dask retries once) and on the first of its
    # second; c4's fails once and Dask's own retry recovers it
    got, calls = _run(client, tmp_path, monkeypatch, {"c2": 3, "c4": 1})
    assert sorted(o["case_id"] for o in got) == [f"c{i}" for i in range(6)]
    assert all(o["ok"] for o in got)
    assert calls == {"c0": 1, "c2": 4, "c4": 2}


def test_chunk_failing_every_submission_becomes_error_rows(client, tmp_path, monkeypatch):
    got, calls = _run(client, tmp_path, monkeypatch, {"c0": 100})
    by_case = {o["case_id"]: o for o in got}
    assert sorted(by_case) == [f"c{i}" for i in range(6)]  # still one outcome per case
    assert calls["c0"] == 2 * (1 + batch_dask.RESUBMITS)  # every submission tried twice by Dask
    for cid in ("c0", "c1"):
        err = by_case[cid]["error"]
        assert not by_case[cid]["ok"] and err["stage"] == "dask" and err["error_type"] == "OSError"
        assert "simulated lost result of c0" in err["message"]
    assert all(by_case[c]["ok"] for c in ("c2", "c3", "c4", "c5"))


def test_cuda_tasks_hold_a_gpu_resource_and_need_a_gpu_worker(client, tmp_path):
    """--device cuda: each chunk runs holding the worker's one `GPU` unit; a cluster without one is refused."""
    from distributed import Client, LocalCluster, get_worker

    from DFM50NLib.errors import InputError

    def run_chunk(tasks, cfg):  # what the worker has left of its GPU while this chunk runs
        left = get_worker().state.available_resources.get("GPU")
        return [{"case_id": t.case_id, "ok": True, "config_hash": t.config_hash, "gpu_left": left} for t in tasks]

    cfg = JobConfig(weights="unused", batch_size=2, device="cuda")
    with pytest.raises(InputError, match=r"none of the 1 worker\(s\) .* declares a GPU.*--resources GPU=1"):
        batch_dask.run_dask(_tasks(2), cfg, [].append, client)
    with (
        LocalCluster(
            n_workers=1, processes=False, threads_per_worker=2, resources={"GPU": 1}, dashboard_address=None
        ) as cluster,
        Client(cluster) as gpu_client,
        pytest.MonkeyPatch.context() as mp,
    ):
        mp.setattr(batch_dask, "run_chunk", run_chunk)
        got = []
        batch_dask.run_dask(_tasks(6), cfg, got.append, gpu_client)
        cpu = []
        batch_dask.run_dask(_tasks(2), JobConfig(weights="unused", batch_size=2), cpu.append, gpu_client)
    assert sorted(o["case_id"] for o in got) == [f"c{i}" for i in range(6)]
    assert {o["gpu_left"] for o in got} == {0}  # held the GPU: the worker's two threads never ran two chunks at once
    assert {o["gpu_left"] for o in cpu} == {1}  # a CPU job asks for no GPU
