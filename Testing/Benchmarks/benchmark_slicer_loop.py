"""Benchmark of the Slicer panel's scoring under a Slicer-like main loop (not a test): prints one run's figures.

    python Testing/Benchmarks/benchmark_slicer_loop.py [--weights PATH] [--segments N]

On a synthetic 512x512x300 int16 CT (benchmark_scoring.make_ct: 0.7 x 0.7 x 1.25 mm, one 20 mm lesion) in a real
MRML scene (slicer-core), the panel's presenter is polled every 100 ms by a loop that keeps the GIL between ticks
as Slicer's Qt loop does (Testing/Python/slicer_event_loop.py). Printed: the Score click's own time (inputs
captured, cube cut: the main thread's longest stall) and the longest poll tick; the first score (model process
started and loaded) and a later (warm) score, each also with the GIL released between ticks (their ratio is
what Slicer costs); Cancel during the forward to the model process and its group gone; and the console's
scoreAllSegments on N segments (one model load, N forwards). Without --weights, the random-weight checkpoint of
the tests' cache is used (made if missing).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
for p in (ROOT, ROOT / "Testing" / "Python", ROOT / "Testing" / "Benchmarks"):
    sys.path.insert(0, str(p))


def cropped(vol):
    """The mask's bounding box (+2 voxels) as its own Volume: a segment's labelmap is stored cropped."""
    import numpy as np

    from DFM50NLib.geometry.volume import Volume

    idx = np.argwhere(vol.array)
    lo, hi = np.maximum(idx.min(0) - 2, 0), idx.max(0) + 3
    m = vol.ijk_to_ras.copy()
    m[:3, 3] = (vol.ijk_to_ras @ np.r_[lo, 1.0])[:3]
    return Volume(np.ascontiguousarray(vol.array[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]), m, name=vol.name)


def group_alive(pgid) -> bool:
    """Whether any process of process group `pgid` (the model process and what it started) is still there."""
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                return True
    return False


def score(presenter, loop):
    """(Score click seconds, loop stats) of one score."""
    t = time.perf_counter()
    presenter.apply()
    click = time.perf_counter() - t
    stats = loop.run(presenter.poll, lambda v: v.state == "idle", timeout=900)
    assert stats.values[-1].status.startswith("Scored 1"), stats.values[-1].error
    return click, stats


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", type=Path, default=None)
    ap.add_argument("--segments", type=int, default=10, help="segments for the console's scoreAllSegments")
    args = ap.parse_args()

    import numpy as np
    from benchmark_scoring import make_ct
    from slicer_event_loop import EventLoop
    from slicer_harness import add_segmentation, add_volume, fresh_scene

    from DFM50NLib.model import encoder_process, fcib
    from DFM50NLib.scene.logic import WEIGHTS_SETTING, DFM50NLogic
    from DFM50NLib.scene.presenter import MemorySettings, PanelPresenter

    weights = args.weights
    if weights is None:
        weights = Path(os.environ.get("DFM50N_TEST_CACHE", Path.home() / ".cache" / "dfm50n-tests"))
        weights = weights / "fcib_random_seed0.torch"
        if not weights.exists():
            fcib.save_random_checkpoint(weights, seed=0)
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
    ct, mask = make_ct()
    scene = fresh_scene()
    ct_node = add_volume(ct)
    seg, ids = add_segmentation({"Lesion": cropped(mask)})
    presenter = PanelPresenter(
        DFM50NLogic(scene), settings=MemorySettings({WEIGHTS_SETTING: str(weights)}), checkDependencies=False
    )
    presenter.setParameter("device", "cpu")
    presenter.params.inputVolume = ct_node
    presenter.selectSegment(seg, ids["Lesion"])
    held, released = EventLoop(hold_gil=True), EventLoop(hold_gil=False)
    print(f"CT {ct.shape} {ct.array.dtype}, lesion {int(mask.array.sum())} voxels; weights {weights}")

    rows = []
    for name, loop in (("GIL released", released), ("GIL held", held)):
        encoder_process.close_shared()
        first = score(presenter, loop)
        warm = score(presenter, loop)
        rows.append((name, first, warm))
    print("\n| loop | first score | later score | Score click (capture + cube) | longest tick |")
    print("|---|---|---|---|---|")
    for name, (c1, s1), (c2, s2) in rows:
        print(
            f"| {name} | {c1 + s1.seconds:.2f} s | {c2 + s2.seconds:.2f} s | {c1:.2f} s / {c2:.2f} s "
            f"| {max(s1.longest_tick_s, s2.longest_tick_s) * 1000:.0f} ms |"
        )
    (_, (c1r, s1r), (c2r, s2r)), (_, (c1h, s1h), (c2h, s2h)) = rows
    print(
        f"\nheld / released: first score {(c1h + s1h.seconds) / (c1r + s1r.seconds):.2f}x, "
        f"later score {(c2h + s2h.seconds) / (c2r + s2r.seconds):.2f}x"
    )
    forward = presenter.scored[0].result.timings
    print(f"later score's stages (s): cube {forward['cube']:.2f}, forward {forward['forward']:.2f}")

    # Cancel during the forward, GIL held
    presenter.apply()
    gone = {}

    def cancel_in_forward(view, stats):
        job = presenter.job
        if not gone and job.status().stage == "forward" and not job.process.idle:
            pid = job.process.pid
            t = time.perf_counter()
            presenter.apply()
            while group_alive(pid):
                time.sleep(0.002)
            gone["s"] = time.perf_counter() - t

    stats = held.run(presenter.poll, lambda v: v.state == "idle", timeout=900, on_tick=cancel_in_forward)
    print(
        f"Cancel during the forward -> model process group gone: {gone['s'] * 1000:.0f} ms; panel idle "
        f"{stats.tick_times[-1]:.2f} s after Score ({stats.values[-1].status})"
    )

    # the console's scoreAllSegments: N segments, one model load
    rng = np.random.default_rng(1)
    masks = {}
    c = np.array(mask.array.nonzero()).mean(1)
    for k in range(args.segments):
        shifted = np.zeros_like(mask.array)
        d = rng.integers(-30, 31, 2)
        shifted[int(c[0] + d[0]) - 8 : int(c[0] + d[0]) + 8, int(c[1] + d[1]) - 8 : int(c[1] + d[1]) + 8, 140:156] = 1
        masks[f"L{k}"] = cropped(mask.with_array(shifted, name=f"L{k}"))
    seg_n, _ = add_segmentation(masks, "Many")
    logic = DFM50NLogic(scene)
    encoder_process.close_shared()
    t = time.perf_counter()
    results = logic.scoreAllSegments(ct_node, seg_n, weights=weights, checkDependencies=False)
    total = time.perf_counter() - t
    fw = [r.timings["forward"] for r in results.values()]
    print(
        f"console scoreAllSegments, {len(results)} segments: {total:.1f} s in all (one model load), "
        f"{total / len(results):.2f} s per segment; forwards {min(fw):.2f}-{max(fw):.2f} s"
    )
    encoder_process.close_shared()
    return 0


if __name__ == "__main__":
    sys.exit(main())
