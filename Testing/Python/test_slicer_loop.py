"""The panel under a Slicer-like main loop that keeps the GIL between its 100 ms ticks (slicer_event_loop.py),
with real MRML (slicer-core) and a random-weight FCIB in the scoring process (model/encoder_process.py).

What Slicer users see: a score as fast as with the GIL released, a main thread never blocked by a tick for long,
a Cancel that ends the model's process within 1 s and writes nothing, a download at full speed, a crashed
model process reported in the panel, a segment deleted mid-run reported instead of a panel stuck at
"Scoring…", and the console's scoreAllSegments on one warm model."""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest
from slicer_event_loop import EventLoop
from slicer_harness import add_segmentation, oriented_image
from test_encoder_process import processes_with
from test_presenter import CENTER, SECOND, make_panel, sphere

from DFM50NLib.model import encoder_process
from DFM50NLib.scene import jobs
from DFM50NLib.scene import table as st
from DFM50NLib.scene.logic import DFM50NLogic
from DFM50NLib.scene.presenter import IDLE

TICK_LIMIT_S = 0.150  # no poll may block the main thread longer


@pytest.fixture()
def panel(random_weights):
    made = make_panel(random_weights)
    made[5].view()  # the widget renders once at setup (imports the view needs; reads the classifier's name)
    return made


def short_ticks(*runs) -> bool:
    """Every poll of these runs returned within TICK_LIMIT_S (else the slowest are in the assertion)."""
    slow = [(round(d, 3), v.status) for r in runs for d, v in r.slowest() if d > TICK_LIMIT_S]
    assert not slow, f"ticks longer than {TICK_LIMIT_S * 1000:.0f} ms: {slow}"
    return True


def idle(view):
    return view.state == IDLE


def select(presenter, ct_node, seg, segment_id):
    presenter.params.inputVolume = ct_node
    presenter.selectSegment(seg, segment_id)


def cold_score(presenter, hold_gil):
    """One score from Score to delivery with no model process running yet; the loop's stats."""
    encoder_process.close_shared()
    presenter.apply()
    stats = EventLoop(hold_gil=hold_gil).run(presenter.poll, idle, timeout=300)
    assert stats.values[-1].status == "Scored 1 segment.", stats.values[-1].error
    return stats


def timeline(stats) -> list:
    """[(seconds, status)] at each change of the panel's status line."""
    out = []
    for t, v in zip(stats.tick_times, stats.values):
        if not out or out[-1][1] != v.status:
            out.append((round(t, 2), v.status))
    return out


def test_a_score_under_the_gil_holding_loop_is_as_fast_as_with_the_gil_released(panel):
    """Cold scores (process start, model load, forward) alternately with the GIL released and held between
    ticks; the fastest of each pair of runs is compared (the machine is shared: single runs vary 2x)."""
    scene, ct_node, seg, ids, logic, presenter, weights = panel
    select(presenter, ct_node, seg, ids["Tumor"])
    runs = {False: [], True: []}
    for hold in (False, True, False, True):
        runs[hold].append(cold_score(presenter, hold_gil=hold))
        print("GIL held" if hold else "GIL released", timeline(runs[hold][-1]))
    released, held = (min(runs[h], key=lambda r: r.seconds) for h in (False, True))
    print(f"cold score: {released.seconds:.2f} s with the GIL released, {held.seconds:.2f} s held")
    assert held.seconds <= 1.5 * released.seconds
    assert any(v.status == jobs.LOADING_MESSAGE for v in held.values)  # what the panel says meanwhile
    assert short_ticks(*runs[True], *runs[False])
    # a re-score on the warm process: one forward, no load
    presenter.apply()
    warm = EventLoop(hold_gil=True).run(presenter.poll, idle, timeout=120)
    print(f"warm score (GIL held): {warm.seconds:.2f} s; longest tick {warm.longest_tick_s * 1000:.0f} ms")
    print("stages", presenter.scored[0].result.timings)
    assert warm.values[-1].status == "Scored 1 segment." and short_ticks(warm)
    assert not any(v.status == jobs.LOADING_MESSAGE for v in warm.values)
    assert warm.seconds < held.seconds
    row = st.get_row(scene.GetNodeByID(warm.values[-1].table_id), 0)
    direct = DFM50NLogic(scene).scoreSegment(
        ct_node, seg, ids["Tumor"], weights=weights, checkDependencies=False, addToTable=False, reportNode=False
    )
    assert row["score"] == pytest.approx(direct.score, abs=1e-7)


def test_cancel_during_the_forward_ends_the_process_within_a_second_and_writes_nothing(panel, monkeypatch):
    scene, ct_node, seg, ids, logic, presenter, _ = panel
    tag = f"cancel-{os.getpid()}-{time.monotonic_ns()}"
    monkeypatch.setenv("DFM50N_TEST_TAG", tag)  # the model process and anything it starts carry it
    encoder_process.close_shared()
    select(presenter, ct_node, seg, ids["Tumor"])
    nodes_before = scene.GetNumberOfNodes()
    presenter.apply()
    cancelled = {}

    def user(view, stats):
        job = presenter.job
        if not cancelled and job.status().stage == "forward" and not job.process.idle:  # features asked, not back
            cancelled["pids"] = processes_with(tag)
            t = time.perf_counter()
            presenter.apply()  # the Score button reads "Cancel" while running
            while processes_with(tag) and time.perf_counter() - t < 5:
                time.sleep(0.005)
            cancelled["seconds"] = time.perf_counter() - t

    stats = EventLoop(hold_gil=True).run(presenter.poll, idle, timeout=300, on_tick=user)
    assert cancelled["pids"], "no model process was found running"
    print(f"Cancel to process gone: {cancelled['seconds'] * 1000:.0f} ms")
    assert cancelled["seconds"] <= 1.0 and processes_with(tag) == []
    v = stats.values[-1]
    assert presenter.job.status().state == jobs.CANCELLED and presenter.job.results is None
    assert v.status == "Cancelled: nothing was written." and v.result_lines == []
    assert scene.GetNumberOfNodes() == nodes_before and st.get_table(scene, create=False) is None
    assert short_ticks(stats)
    # the next Score starts a fresh process in the background and says so
    presenter.apply()
    again = EventLoop(hold_gil=True).run(presenter.poll, idle, timeout=300)
    assert again.values[0].status == jobs.LOADING_MESSAGE
    assert again.values[-1].status == "Scored 1 segment.", again.values[-1].error
    assert presenter.job.process.pid not in cancelled["pids"]


def test_cancel_once_accepted_is_never_lost(panel):
    """Defect 9 (the thread design lost a Cancel pressed between the worker's last check_cancel() and DONE: the
    row was written though the panel said "Cancelling…"): a Cancel pressed while loading, during the forward,
    and after the child has sent the features but before the poll that would deliver them, writes nothing."""
    scene, ct_node, seg, ids, logic, presenter, _ = panel
    select(presenter, ct_node, seg, ids["Tumor"])
    moments = {
        "loading": lambda job: True,
        "forward": lambda job: job.status().stage == "forward" and not job.process.idle,
        "features arrived": lambda job: job.status().stage == "forward" and _answered(job.process),
    }
    for name, now in moments.items():
        encoder_process.close_shared() if name == "loading" else presenter.job.process.ready()
        presenter.apply()
        job = presenter.job
        while not now(job):
            assert presenter.poll().state != IDLE, f"the score ended before the moment '{name}'"
            time.sleep(0.02)
        presenter.apply()  # Cancel
        v = EventLoop(hold_gil=True).run(presenter.poll, idle, timeout=60).values[-1]
        assert job.status().state == jobs.CANCELLED and job.results is None, name
        assert v.status == "Cancelled: nothing was written." and st.get_table(scene, create=False) is None, name
        presenter.apply()  # and the panel scores again
        assert EventLoop(hold_gil=True).run(presenter.poll, idle, timeout=300).values[-1].status == (
            "Scored 1 segment."
        )
        scene.RemoveNode(st.get_table(scene, create=False))
        presenter.params.outputTable = None


def _answered(process) -> bool:
    """The child has answered every request (read from the pipe here, not yet taken by the job's step)."""
    process.poll()
    return process.idle


def test_a_crashed_model_process_is_an_error_in_the_panel_not_a_hang(panel):
    scene, ct_node, seg, ids, logic, presenter, _ = panel
    select(presenter, ct_node, seg, ids["Tumor"])
    presenter.apply()
    crashed = {}

    def crash(view, stats):
        job = presenter.job
        if not crashed and job.status().stage == "forward" and not job.process.idle:
            os.kill(job.process.pid, signal.SIGSEGV)
            crashed["at"] = time.perf_counter()

    stats = EventLoop(hold_gil=True).run(presenter.poll, idle, timeout=300, on_tick=crash)
    v = stats.values[-1]
    assert crashed and v.status == "Scoring failed."
    assert "ended unexpectedly" in v.error and f"exit code {-signal.SIGSEGV}" in v.error
    assert "segmentation fault" in v.error and presenter.takeError() == v.error
    assert st.get_table(scene, create=False) is None and short_ticks(stats)
    presenter.apply()  # a new process; the panel works again
    assert EventLoop(hold_gil=True).run(presenter.poll, idle, timeout=300).values[-1].status == "Scored 1 segment."


def test_deleting_the_scored_segment_mid_run_is_a_clear_message(panel):
    """Defect 5: the delivery read the deleted segment's name (AttributeError inside the timer slot) and the
    panel said "Scoring…" forever."""
    scene, ct_node, seg, ids, logic, presenter, _ = panel
    select(presenter, ct_node, seg, ids["Tumor"])
    presenter.apply()
    seg.GetSegmentation().RemoveSegment(ids["Tumor"])
    v = EventLoop(hold_gil=True).run(presenter.poll, idle, timeout=300).values[-1]
    assert v.status == "Scored 0 segments. 1 failed."
    assert v.error == "No segment could be scored:\nTumor: The segment 'Tumor' was deleted while it was scored: " + (
        "its score was not written."
    )
    assert st.get_table(scene, create=False) is None and v.result_lines == []
    # score-all: the segment deleted mid-run is reported, the other one is written
    presenter.selectSegment(seg, "")
    presenter.setParameter("allSegments", True)
    t2 = sphere(_grid(), CENTER, 7.0, "T2")
    seg.AddSegmentFromBinaryLabelmapRepresentation(oriented_image(t2.array, t2.ijk_to_ras), "T2", [0, 0, 1])
    presenter.apply()
    t2 = seg.GetSegmentation().GetSegmentIdBySegmentName("T2")
    seg.GetSegmentation().RemoveSegment(t2)
    v = EventLoop(hold_gil=True).run(presenter.poll, idle, timeout=300).values[-1]
    assert v.status == "Scored 1 segment. 1 failed." and [line.segment for line in v.result_lines] == ["Second"]
    assert v.errors == "T2: The segment 'T2' was deleted while it was scored: its score was not written."
    assert scene.GetNodeByID(v.table_id).GetTable().GetNumberOfRows() == 1


def _grid():
    from DFM50NLib.geometry.synthetic import make_grid

    return make_grid((40, 40, 30), (1.0, 1.0, 1.0), center_ras=(CENTER + SECOND) / 2)


def test_console_score_all_is_one_model_load_and_one_forward_per_segment(panel, monkeypatch):
    """The README's batch loop in Slicer's console: 10 segments on the warm process, never torch in this one."""
    scene, ct_node, _, _, logic, presenter, weights = panel
    grid = _grid()
    offsets = [np.array([dx, dy, 0.0]) for dx in (-6, 0, 6) for dy in (-6, 0, 6)] + [np.array([0.0, 0.0, 6.0])]
    masks = {f"L{k}": sphere(grid, CENTER + o, 3.0, f"L{k}") for k, o in enumerate(offsets)}
    seg10, ids10 = add_segmentation(masks, "Ten")
    sent = []
    real_call = encoder_process.ServiceProcess.call

    def counting(self, msg, *args):
        sent.append(msg[0])
        return real_call(self, msg, *args)

    monkeypatch.setattr(encoder_process.ServiceProcess, "call", counting)
    encoder_process.close_shared()
    results = logic.scoreAllSegments(ct_node, seg10, weights=weights, checkDependencies=False)
    assert len(results) == 10 and sent.count("load") == 1 and sent.count("features") == 10
    table = logic.getTableNode(False)
    assert table.GetTable().GetNumberOfRows() == 10
    rows = {st.get_row(table, r)["segment_id"]: st.get_row(table, r)["score"] for r in range(10)}
    assert rows == pytest.approx({sid: results[sid].score for sid in ids10.values()}, abs=1e-7)
    # the same score as the whole pipeline in this process, at the child's torch thread count (bit-equal features)
    import torch

    from DFM50NLib.model import fcib
    from DFM50NLib.scene import mrml
    from DFM50NLib.scoring.pipeline import score_volumes

    saved = torch.get_num_threads()
    torch.set_num_threads(encoder_process.shared_encoder(weights, "cpu").ready()["threads"])
    try:
        mask = mrml.segment_mask(ct_node, seg10, ids10["L4"])
        here = score_volumes(mrml.volume_from_node(ct_node), mask, encoder=fcib.get_encoder(weights))
    finally:
        torch.set_num_threads(saved)
    assert here.score == results[ids10["L4"]].score and here.features == results[ids10["L4"]].features


def test_the_weights_download_runs_at_full_speed_under_the_gil_holding_loop(panel, tmp_path):
    """The 738 MB checkpoint from a local server (its own process), downloaded and checked (structure, CRCs,
    hash) by the download child, once with the GIL released between ticks and once held: the held run keeps
    >= 80 % of the speed (the fastest of two runs each: the machine is shared)."""
    from range_server import serving

    scene, ct_node, seg, ids, logic, presenter, weights = panel
    size = weights.stat().st_size
    seconds = {False: [], True: []}
    with serving(weights) as url:
        for n, hold in enumerate((False, True, False, True)):
            dest = tmp_path / f"w{n}.torch"
            presenter.startDownload(dest, url=url, expected_size=size)
            stats = EventLoop(hold_gil=hold).run(presenter.poll, idle, timeout=300)
            assert stats.values[-1].status == f"FCIB weights ready: {dest}", stats.values[-1].error
            assert dest.stat().st_size == size and short_ticks(stats)
            seconds[hold].append(stats.seconds)
            dest.unlink()
    released, held = min(seconds[False]), min(seconds[True])
    print(f"download + checks: {size / released / 1e6:.0f} MB/s with the GIL released, {size / held / 1e6:.0f} held")
    assert held <= released / 0.8


def test_no_python_thread_in_the_scene_layer_or_the_widget():
    """Heavy work belongs to child processes: nothing under DFM50NLib/scene or in DFM50N.py imports a thread
    module (a thread there would starve under Slicer's GIL, or hold it)."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    files = [root / "DFM50N.py", *sorted((root / "DFM50NLib" / "scene").glob("*.py"))]
    assert len(files) > 5
    for path in files:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                names.add(node.module or "")
        assert not {"threading", "_thread", "concurrent.futures", "multiprocessing"} & names, path
