"""A cohort never stops for one case: long ids, unwritable results, a bad manifest cell, a full disk,
and pool workers that do not outlive a killed driver."""

from __future__ import annotations

import csv
import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_batch import ROOT, write_case

from DFM50NLib.batch import cohort as cohort_mod
from DFM50NLib.batch.cohort import DiskFull, score_cohort

LONG = "x" * 250
CJK = "肺" * 100  # 300 bytes in UTF-8
QUOTED = 'a;b,c"d'


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    d = tmp_path_factory.mktemp("robust")
    for n in range(4):
        write_case(d, f"c{n}", seed=40 + n)
    return d


def _manifest(folder, rows, name="m.csv"):
    path = folder / name
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)  # RFC 4180 quoting, as a spreadsheet writes it
        w.writerow(["case_id", "image", "mask", "center", "outcome"])
        for cid, n, center in rows:
            w.writerow([cid, f"c{n}.nrrd", f"c{n}_mask.nii.gz", center, f'say "{cid}"'])
    return path


def _csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_long_ids_quotes_and_a_bad_cell_do_not_stop_the_cohort(cases, random_weights, tmp_path):
    m = _manifest(cases, [(LONG, 0, ""), (CJK, 1, ""), ("bad", 2, "middle"), (QUOTED, 3, "")])
    summary = score_cohort(m, tmp_path / "out", weights=random_weights, batch_size=2)
    rows = _csv(tmp_path / "out" / "results.csv")
    assert [r["case_id"] for r in rows] == [LONG, CJK, QUOTED]  # the cases after the long ids too
    assert [r["outcome"] for r in rows] == [f'say "{c}"' for c in (LONG, CJK, QUOTED)]  # quotes round-trip
    errors = _csv(tmp_path / "out" / "errors.csv")
    assert [(e["case_id"], e["stage"]) for e in errors] == [("bad", "manifest")]
    assert "row 4" in errors[0]["message"] and "'middle' is neither a method" in errors[0]["message"]
    assert (summary.n_total, summary.n_done, summary.n_failed) == (3, 3, 1)
    assert str(summary).startswith("3 scored, 0 already done, 0 failed, 1 unpaired or bad manifest row(s) of 4")
    names = [p.name for p in (tmp_path / "out" / "cases").iterdir()]
    assert all(len(n.encode()) <= 130 for n in names) and len(names) == 3
    full_ids = {json.loads((tmp_path / "out" / "cases" / n).read_text())["case_id"] for n in names}
    assert full_ids == {LONG, CJK, QUOTED}
    again = score_cohort(m, tmp_path / "out", weights=random_weights, batch_size=2)  # resumes: all skipped
    assert (again.n_skipped, again.n_done) == (3, 0)


def test_unwritable_result_is_that_cases_error_and_the_loop_continues(cases, random_weights, tmp_path, monkeypatch):
    from DFM50NLib.scoring import result as result_mod

    real_json, real_text = result_mod.write_json, cohort_mod.atomic.write_text

    def write_json(res, path, **kw):
        if res.case_id == "c1":
            raise OSError(errno.ENAMETOOLONG, "File name too long", str(path))
        return real_json(res, path, **kw)

    def write_text(path, text, *a, **kw):
        if Path(path).name == "c1.json":  # the error file fails too: the fallback sink takes it
            raise OSError(errno.EACCES, "Permission denied", str(path))
        return real_text(path, text, *a, **kw)

    monkeypatch.setattr(result_mod, "write_json", write_json)
    monkeypatch.setattr(cohort_mod.atomic, "write_text", write_text)
    m = _manifest(cases, [(f"c{n}", n, "") for n in range(4)])
    summary = score_cohort(m, tmp_path / "out", weights=random_weights, batch_size=1)
    assert [r["case_id"] for r in _csv(tmp_path / "out" / "results.csv")] == ["c0", "c2", "c3"]
    (err,) = _csv(tmp_path / "out" / "errors.csv")
    assert err["case_id"] == "c1" and err["stage"] == "write" and "File name too long" in err["message"]
    (fallback,) = (tmp_path / "out" / "errors").glob("case-*.json")
    assert json.loads(fallback.read_text())["case_id"] == "c1"
    assert summary.failed == ["c1"]


def test_full_disk_stops_cleanly_with_tables_written(cases, random_weights, tmp_path, monkeypatch):
    from DFM50NLib.scoring import result as result_mod

    real, calls = result_mod.write_json, []

    def write_json(res, path, **kw):
        calls.append(res.case_id)
        if len(calls) >= 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(res, path, **kw)

    monkeypatch.setattr(result_mod, "write_json", write_json)
    m = _manifest(cases, [(f"c{n}", n, "") for n in range(4)])
    with pytest.raises(DiskFull, match=r"is full \(No space left on device\): the job stopped after 1 of 4 cases"):
        score_cohort(m, tmp_path / "out", weights=random_weights, batch_size=1)
    assert [r["case_id"] for r in _csv(tmp_path / "out" / "results.csv")] == ["c0"]
    assert [e["case_id"] for e in _csv(tmp_path / "out" / "errors.csv")] == ["c1", "c2", "c3"]


def _descendants(pid):
    import psutil

    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def test_kill9_of_a_pool_driver_leaves_no_process_behind(cases, random_weights, tmp_path):
    import psutil

    m = _manifest(cases, [(f"c{n}", n, "") for n in range(4)])
    cmd = [sys.executable, "-m", "DFM50NLib", "batch", "--manifest", str(m), "--out", str(tmp_path / "out")]
    cmd += ["--weights", str(random_weights), "--workers", "2", "--batch-size", "1", "--no-progress"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline, kids = time.time() + 120, []
        while time.time() < deadline and proc.poll() is None:
            kids = _descendants(proc.pid)
            workers = [k for k in kids if "spawn_main" in " ".join(k.cmdline() if k.is_running() else [])]
            if len(workers) >= 2:
                time.sleep(1.0)  # let them get into their work (loading the network)
                kids = _descendants(proc.pid)
                break
            time.sleep(0.1)
        assert proc.poll() is None and len(kids) >= 2, "the pool did not start"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    gone, alive = psutil.wait_procs(kids, timeout=10)
    for p in alive:
        p.kill()
    assert not alive, [p.pid for p in alive]


def prepare_or_die(task, keep_volumes):
    """A reader's work that kills the reader process for the cases named 'crash...' (as a segfault would)."""
    if task.case_id.startswith("crash"):
        os._exit(11)
    return (task, f"cube of {task.case_id} from pid {os.getpid()}", None, 0.0)


def test_a_case_that_kills_its_reader_process_fails_alone(tmp_path):
    """Reader processes die twice in one pool (two cases crash them): every other case is still prepared, once;
    only the two culprits become errors, found by preparing the cases a dead reader took with it one at a time."""
    import queue
    import threading

    from DFM50NLib.batch.engine import DONE, Task
    from DFM50NLib.batch.pool import read_in_processes

    ids = ["a0", "a1", "crash2", "a3", "a4", "crash5", "a6", "a7"]
    tasks = [Task(c, f"{c}.nrrd", f"{c}_mask.nii.gz", {}, {}, f"{n:064x}", row=n) for n, c in enumerate(ids)]
    out: queue.Queue = queue.Queue()
    read_in_processes(tasks, out, threading.Event(), False, readers=2, prepare=prepare_or_die)
    items = []
    while (item := out.get_nowait()) is not DONE:
        items.append(item)
    assert out.empty()
    assert sorted(i[0].case_id for i in items) == sorted(ids)  # each case exactly once
    for task, prep, error, _ in items:
        if task.case_id.startswith("crash"):
            assert prep is None and error["error"]["stage"] == "worker"
            assert "reader process died" in error["error"]["message"], error
        else:
            assert error is None and prep.startswith(f"cube of {task.case_id} from pid ")
            assert int(prep.rsplit(" ", 1)[1]) != os.getpid()  # prepared in a reader process
