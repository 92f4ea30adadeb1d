"""Benchmark of the single-case engine (not a test): prints every figure of one run side by side.

    python Testing/Benchmarks/benchmark_scoring.py [--weights PATH] [--skip-reference]

Measures on one synthetic 512x512x600 int16 CT: physical cube extraction on the axis-aligned CT and on
the same CT rotated 10 degrees about S (one lone axis: gantry tilt / in-plane rotation) and about
(1, 1, 1) (doubly oblique: the generic path), reference cube extraction (on the whole CT, where it
runs out of memory, and on a 120-slice slab, physical vs reference), cold model load (fresh
process) and its peak RSS, forward time, warm re-score and its stages, peak RSS of a whole cold score.
Targets (2-core machine): cube <= 50 ms, warm re-score <= 0.5 s, model load <= 3 s, peak RSS <= 2.5 GB.
Without --weights a random-weight checkpoint of the real architecture is made (timings are the same).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

SHAPE = (512, 512, 600)
SPACING = (0.7, 0.7, 0.625)
SLAB = slice(240, 360)  # 75 mm around the lesion (z = 300): small enough for reference mode
REFERENCE_MEMORY_GB = 12.0  # address-space cap of the reference-mode child (this machine has 24 GB)


def make_ct():
    """A 512x512x600 int16 CT (air, body, lung, one 12 mm lesion) and its lesion mask, built in place."""
    import numpy as np

    from DFM50NLib.geometry.volume import Volume

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
    return (
        Volume.from_geometry(ct, SPACING, origin, name="bench"),
        Volume.from_geometry(mask, SPACING, origin, name="bench_mask"),
    )


def rotated(vol, axis, degrees):
    """The same voxels on a grid whose direction matrix is rotated (Rodrigues) about `axis`."""
    import numpy as np

    from DFM50NLib.geometry.volume import Volume

    k = np.asarray(axis, float) / np.linalg.norm(axis)
    t = np.deg2rad(degrees)
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    m = vol.ijk_to_ras.copy()
    m[:3, :3] = (np.eye(3) + np.sin(t) * kx + (1 - np.cos(t)) * kx @ kx) @ m[:3, :3]
    return Volume(vol.array, m, name=vol.name)


def slab(vol, k_range):
    """Slices k_range of a volume, with its origin moved so every voxel keeps its world position."""
    import numpy as np

    from DFM50NLib.geometry.volume import Volume

    m = vol.ijk_to_ras.copy()
    m[:3, 3] = (vol.ijk_to_ras @ np.array([0, 0, k_range.start, 1.0]))[:3]
    return Volume(np.ascontiguousarray(vol.array[:, :, k_range]), m, name=vol.name)


def median_time(fn, repeats):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def child_load(weights):
    """Run in a fresh process: cold model load time and the process's peak RSS afterwards."""
    import resource

    t = time.perf_counter()
    from DFM50NLib.model.fcib import get_encoder

    enc = get_encoder(weights)
    load_s = time.perf_counter() - t
    import numpy as np

    enc.features(np.full((50, 50, 50), -1000.0, dtype=np.float32))
    print(json.dumps({"load_s": load_s, "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}))


def child_score(weights):
    """Run in a fresh process: peak RSS of building the CT and scoring it once, cold."""
    import resource

    from DFM50NLib.scoring.pipeline import score_volumes

    ct, mask = make_ct()
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    t = time.perf_counter()
    score_volumes(ct, mask, weights=weights)
    print(
        json.dumps(
            {
                "cold_score_s": time.perf_counter() - t,
                "ct_gb": ct.array.nbytes / 2**30,
                "rss_before_gb": base,
                "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
            }
        )
    )


def child_reference(folder):
    """Run in a fresh process with its address space capped at REFERENCE_MEMORY_GB: the upstream arithmetic
    zooms the whole CT and mask (float64, order 3, then a distance transform on the zoomed mask), which on
    this CT needs far more than 24 GB; uncapped it got the whole process tree OOM-killed."""
    import resource

    from DFM50NLib.geometry.reference import reference_cube_from_files

    cap = int(REFERENCE_MEMORY_GB * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    t = time.perf_counter()
    try:
        reference_cube_from_files(Path(folder) / "ct.nii.gz", Path(folder) / "mask.nii.gz", center_method="dt_peak")
    except MemoryError:
        print(json.dumps({"memory_error_after_s": time.perf_counter() - t}))
        return
    print(
        json.dumps(
            {
                "reference_s": time.perf_counter() - t,
                "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
            }
        )
    )


def reference_run(ct, mask, tmp) -> dict:
    """Write the CT and mask, time reference-mode extraction from those files in a capped child process."""
    from DFM50NLib.geometry import io

    io.write_volume(ct, tmp / "ct.nii.gz")
    io.write_volume(mask, tmp / "mask.nii.gz")
    return run_child("reference", tmp)


def run_child(fn, arg) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", fn, "--weights", str(arg)], capture_output=True, text=True
    )
    if out.returncode:
        raise RuntimeError(f"benchmark child '{fn}' failed (rc {out.returncode}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", default=None)
    ap.add_argument("--skip-reference", action="store_true", help="skip the (slow) reference-mode extraction")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return {"load": child_load, "score": child_score, "reference": child_reference}[args.child](args.weights)

    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    tmp = Path(tempfile.mkdtemp(prefix="dfm50n-bench-"))
    try:
        run(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # the random checkpoint alone is 738 MB


def run(args, tmp):
    import numpy as np

    from DFM50NLib.geometry.center import find_center
    from DFM50NLib.geometry.cube import extract_cube
    from DFM50NLib.geometry.mask import prepare_mask
    from DFM50NLib.model import fcib
    from DFM50NLib.scoring.pipeline import score_volumes

    weights = args.weights or fcib.save_random_checkpoint(tmp / "random.torch")
    print(
        f"CT {SHAPE} int16, spacing {SPACING} mm; weights {weights}; {os.cpu_count()} cores; "
        f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}"
    )

    ct, mask = make_ct()
    pm = prepare_mask(mask, ct)
    center = find_center(pm, "dt_peak")
    phys = median_time(lambda: extract_cube(ct, pm, center, "LPS"), 20)
    print(f"physical cube extraction: median {phys * 1e3:.1f} ms over 20 (target <= 50 ms)")
    for what, axis in (("rotated 10 deg about S", (0, 0, 1)), ("doubly oblique, 10 deg about (1,1,1)", (1, 1, 1))):
        ct_o, mask_o = rotated(ct, axis, 10), rotated(mask, axis, 10)
        pm_o = prepare_mask(mask_o, ct_o)
        c_o = find_center(pm_o, "dt_peak")
        t_o = median_time(lambda ct_o=ct_o, pm_o=pm_o, c_o=c_o: extract_cube(ct_o, pm_o, c_o, "LPS"), 20)
        print(
            f"physical cube extraction, CT grid {what}: median {t_o * 1e3:.1f} ms over 20 "
            f"= {t_o / phys:.1f} x axis-aligned (target <= 50 ms)"
        )
    t_mask = median_time(lambda: prepare_mask(mask, ct), 5)
    t_center = median_time(lambda: find_center(pm, "dt_peak"), 5)
    print(
        f"prepare_mask (full-size same-grid mask): median {t_mask * 1e3:.1f} ms; "
        f"find_center dt_peak: median {t_center * 1e3:.1f} ms"
    )

    if not args.skip_reference:
        ref = reference_run(ct, mask, tmp)
        if "reference_s" in ref:
            print(
                f"reference cube extraction (upstream arithmetic, incl. reading the files, fresh process): "
                f"{ref['reference_s']:.2f} s = {ref['reference_s'] / phys:.0f} x physical; "
                f"peak RSS {ref['peak_rss_gb']:.2f} GB"
            )
        else:
            print(
                f"reference cube extraction (upstream arithmetic): MemoryError after "
                f"{ref['memory_error_after_s']:.1f} s under a {REFERENCE_MEMORY_GB:g} GB address-space cap "
                "(it zooms the whole CT to 731x731x960 float64 and more)"
            )
        # the same comparison on a slab that reference mode can hold in memory
        slab_ct, slab_mask = slab(ct, SLAB), slab(mask, SLAB)
        slab_pm = prepare_mask(slab_mask, slab_ct)
        slab_center = find_center(slab_pm, "dt_peak")
        phys_slab = median_time(lambda: extract_cube(slab_ct, slab_pm, slab_center, "LPS"), 20)
        ref = reference_run(slab_ct, slab_mask, tmp)
        if "reference_s" in ref:
            print(
                f"on a {slab_ct.shape[0]}x{slab_ct.shape[1]}x{slab_ct.shape[2]} slab of that CT: physical "
                f"{phys_slab * 1e3:.1f} ms, reference {ref['reference_s']:.2f} s (incl. reading the files) = "
                f"{ref['reference_s'] / phys_slab:.0f} x physical; reference peak RSS {ref['peak_rss_gb']:.2f} GB"
            )

    load = run_child("load", weights)
    print(
        f"model load (cold process): {load['load_s']:.2f} s (target <= 3 s); "
        f"peak RSS after load + 1 forward: {load['peak_rss_gb']:.2f} GB"
    )

    enc = fcib.get_encoder(weights)
    cube = extract_cube(ct, pm, center, "LPS")
    enc.features(cube.ct)
    fw = median_time(lambda: enc.features(cube.ct), 5)
    print(f"forward (one 50^3 cube): median {fw:.3f} s")
    batch = np.stack([cube.ct] * 8)
    t = time.perf_counter()
    enc.features(batch)
    print(f"forward (batch of 8): {(time.perf_counter() - t) / 8:.3f} s per cube")

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the demo-model / geometry notes, once per score
        score_volumes(ct, mask, weights=weights)
        runs = []
        for _ in range(3):
            t = time.perf_counter()
            res = score_volumes(ct, mask, weights=weights)
            runs.append((time.perf_counter() - t, res.timings))
    warm, stages = sorted(runs, key=lambda r: r[0])[1]  # the median run and its own stages
    print(f"warm re-score (mask, centre, cube, forward, forest): median {warm:.3f} s (target <= 0.5 s)")
    print("  its stages: " + ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in stages.items()))

    sc = run_child("score", weights)
    print(
        f"cold score of the 512x512x600 CT in a fresh process: {sc['cold_score_s']:.2f} s; peak RSS "
        f"{sc['peak_rss_gb']:.2f} GB (CT alone {sc['ct_gb']:.2f} GB; target <= 2.5 GB)"
    )
    print(f"ratios: warm re-score / forward = {warm / fw:.2f}; cube / forward = {phys / fw:.3f}")
    print(f"load average at the end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
