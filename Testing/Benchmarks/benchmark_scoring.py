"""Benchmark of the single-case engine (not a test): prints every figure of one run side by side.

    python Testing/Benchmarks/benchmark_scoring.py [--weights PATH] [--skip-reference]

Measures on one synthetic 512x512x600 int16 CT: physical vs reference cube extraction, cold model
load (fresh process) and its peak RSS, forward time, warm re-score, peak RSS of a whole cold score.
Targets (2-core machine): cube <= 50 ms, warm re-score <= 0.5 s, model load <= 3 s, peak RSS <= 2.5 GB.
Without --weights a random-weight checkpoint of the real architecture is made (timings are the same).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

SHAPE = (512, 512, 600)
SPACING = (0.7, 0.7, 0.625)


def make_ct():
    """A 512x512x600 int16 CT (air, body, lung, one 12 mm lesion) and its lesion mask, built in place."""
    import numpy as np

    from DFM50NLib.volume import Volume

    ct = np.full(SHAPE, -1000, dtype=np.int16)
    ct[60:452, 80:432, :] = 30
    ct[110:240, 120:400, 50:560] = -850
    ct[272:402, 120:400, 50:560] = -850
    mask = np.zeros(SHAPE, dtype=np.uint8)
    c = np.array([170, 250, 300])
    r = 12.0 / np.array(SPACING)
    sl = tuple(slice(int(ci - ri - 1), int(ci + ri + 2)) for ci, ri in zip(c, r))
    grid = np.ogrid[sl]
    inside = sum(((g - ci) / ri) ** 2 for g, ci, ri in zip(grid, c, r)) <= 1
    mask[sl][inside] = 1
    ct[sl][inside] = 40
    origin = (-179.0, -179.0, -187.0)
    return (Volume.from_geometry(ct, SPACING, origin, name="bench"),
            Volume.from_geometry(mask, SPACING, origin, name="bench_mask"))


def child_load(weights):
    """Run in a fresh process: cold model load time and the process's peak RSS afterwards."""
    import resource

    t = time.perf_counter()
    from DFM50NLib.fcib import get_encoder

    enc = get_encoder(weights)
    load_s = time.perf_counter() - t
    import numpy as np

    enc.features(np.full((50, 50, 50), -1000.0, dtype=np.float32))
    print(json.dumps({"load_s": load_s,
                      "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}))


def child_score(weights):
    """Run in a fresh process: peak RSS of building the CT and scoring it once, cold."""
    import resource

    from DFM50NLib.pipeline import score_volumes

    ct, mask = make_ct()
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    t = time.perf_counter()
    score_volumes(ct, mask, weights=weights)
    print(json.dumps({"cold_score_s": time.perf_counter() - t, "ct_gb": ct.array.nbytes / 2**30,
                      "rss_before_gb": base,
                      "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}))


def run_child(fn, weights) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", fn, "--weights", str(weights)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", default=None)
    ap.add_argument("--skip-reference", action="store_true", help="skip the (slow) reference-mode extraction")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return {"load": child_load, "score": child_score}[args.child](args.weights)

    import numpy as np
    import torch

    from DFM50NLib import fcib, io
    from DFM50NLib.center import find_center
    from DFM50NLib.cube import extract_cube
    from DFM50NLib.mask import prepare_mask
    from DFM50NLib.pipeline import score_volumes

    torch.set_num_threads(os.cpu_count() or 1)
    tmp = Path(tempfile.mkdtemp(prefix="dfm50n-bench-"))
    weights = args.weights or fcib.save_random_checkpoint(tmp / "random.torch")
    print(f"CT {SHAPE} int16, spacing {SPACING} mm; weights {weights}; {os.cpu_count()} cores")

    ct, mask = make_ct()
    pm = prepare_mask(mask, ct)
    center = find_center(pm, "dt_peak")
    times = []
    for _ in range(20):
        t = time.perf_counter()
        extract_cube(ct, pm, center, "LPS")
        times.append(time.perf_counter() - t)
    phys = statistics.median(times)
    print(f"physical cube extraction: median {phys * 1e3:.1f} ms over 20 (target <= 50 ms)")

    if not args.skip_reference:
        from DFM50NLib.reference import reference_cube_from_files

        ct_path, mask_path = tmp / "ct.nii.gz", tmp / "mask.nii.gz"
        io.write_volume(ct, ct_path)
        io.write_volume(mask, mask_path)
        t = time.perf_counter()
        reference_cube_from_files(ct_path, mask_path, center_method="dt_peak")
        ref = time.perf_counter() - t
        print(f"reference cube extraction (upstream arithmetic, incl. reading the files): {ref:.2f} s "
              f"= {ref / phys:.0f} x physical")

    load = run_child("load", weights)
    print(f"model load (cold process): {load['load_s']:.2f} s (target <= 3 s); "
          f"peak RSS after load + 1 forward: {load['peak_rss_gb']:.2f} GB")

    enc = fcib.get_encoder(weights)
    cube = extract_cube(ct, pm, center, "LPS")
    enc.features(cube.ct)
    fw = []
    for _ in range(5):
        t = time.perf_counter()
        enc.features(cube.ct)
        fw.append(time.perf_counter() - t)
    print(f"forward (one 50^3 cube): median {statistics.median(fw):.3f} s")
    batch = np.stack([cube.ct] * 8)
    t = time.perf_counter()
    enc.features(batch)
    print(f"forward (batch of 8): {(time.perf_counter() - t) / 8:.3f} s per cube")

    score_volumes(ct, mask, weights=weights)
    rs = []
    for _ in range(3):
        t = time.perf_counter()
        score_volumes(ct, mask, weights=weights)
        rs.append(time.perf_counter() - t)
    warm = statistics.median(rs)
    print(f"warm re-score (mask, centre, cube, forward, forest): median {warm:.3f} s (target <= 0.5 s)")

    sc = run_child("score", weights)
    print(f"cold score of the 512x512x600 CT in a fresh process: {sc['cold_score_s']:.2f} s; peak RSS "
          f"{sc['peak_rss_gb']:.2f} GB (CT alone {sc['ct_gb']:.2f} GB; target <= 2.5 GB)")
    print(f"ratios: warm re-score / forward = {warm / statistics.median(fw):.2f}; "
          f"cube / forward = {phys / statistics.median(fw):.3f}")


if __name__ == "__main__":
    main()
