"""Benchmark of the single-case engine (not a test): prints every figure of one run side by side.

    python Testing/Benchmarks/benchmark_scoring.py [--weights PATH] [--skip-reference] [--skip-old-big]

Measures on one synthetic 512x512x300 int16 CT (0.7 x 0.7 x 1.25 mm, one 20 mm lesion): physical cube
extraction on the axis-aligned CT and on the same CT rotated 10 degrees about S (one lone axis: gantry
tilt / in-plane rotation) and about (1, 1, 1) (doubly oblique: the generic path); reference cube
extraction (fresh process, from the NIfTI files) old (whole-volume scipy.ndimage.zoom, address space
capped at 12 GB) vs new (windowed) on the whole CT and on a 120-slice slab, the cubes compared bit for
bit, and the new path on a 512x512x600 CT; cold model load (fresh process) and its peak RSS, forward time,
warm re-score and its stages; the cold `python -m DFM50NLib score` CLI (fresh process, median of 7, FCIB
in its sibling process vs in the command's own) with its stage table and peak RSS. The old whole-CT
reference run needs ~10 GB: run the benchmark alone (e.g. under `flock`), or pass --skip-old-big.
Targets (2-core machine): cube <= 50 ms, warm re-score <= 0.5 s, model load <= 3 s; reference mode
<= 6 s and <= 1.5 GB; cold score <= 2 s and <= 1.3 GB. Timings on a shared machine are noisy: compare
the ratios within one run. Without --weights a random-weight checkpoint of the real architecture is made.
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

SHAPE = (512, 512, 300)
SPACING = (0.7, 0.7, 1.25)
SHAPE_600, SPACING_600 = (512, 512, 600), (0.7, 0.7, 0.625)  # the same body, twice the slices
LESION_MM = 20.0  # diameter
SLAB = slice(90, 210)  # 120 slices (150 mm) around the lesion (k = 150)
REFERENCE_MEMORY_GB = 12.0  # address-space cap of the reference-mode child (this machine has 24 GB)


def make_ct(shape=SHAPE, spacing=SPACING):
    """A 512x512xN int16 CT (air, body, lungs, one 20 mm lesion, mild noise) and its mask, built in place."""
    import numpy as np

    from DFM50NLib.geometry.volume import Volume

    nz = shape[2]
    ct = np.full(shape, -1000, dtype=np.int16)
    ct[60:452, 80:432, :] = 30
    ct[110:240, 120:400, nz // 12 : nz - nz // 12] = -850
    ct[272:402, 120:400, nz // 12 : nz - nz // 12] = -850
    rng = np.random.default_rng(0)
    for k0 in range(0, nz, 50):  # scanner noise, so the files compress like a real CT's
        ct[:, :, k0 : k0 + 50] += rng.integers(-20, 21, ct[:, :, k0 : k0 + 50].shape, dtype=np.int16)
    mask = np.zeros(shape, dtype=np.uint8)
    c = np.array([170, 250, nz // 2])
    r = LESION_MM / 2 / np.array(spacing)
    sl = tuple(slice(int(ci - ri - 1), int(ci + ri + 2)) for ci, ri in zip(c, r))
    grid = np.ogrid[sl]
    inside = sum(((g - ci) / ri) ** 2 for g, ci, ri in zip(grid, c, r)) <= 1
    mask[sl][inside] = 1
    ct[sl][inside] = 40
    origin = (-179.0, -179.0, -187.0)
    return (
        Volume.from_geometry(ct, spacing, origin, name="bench"),
        Volume.from_geometry(mask, spacing, origin, name="bench_mask"),
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


def peak_rss_gb() -> float:
    """This process's peak RSS (VmHWM of its own memory map). Not getrusage's ru_maxrss: Linux carries the
    parent's high-water mark across fork + exec, so a child of this 1 GB benchmark would report >= 1 GB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def median_time(fn, repeats):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def child_load(weights):
    """Run in a fresh process: cold model load time and the process's peak RSS afterwards."""

    t = time.perf_counter()
    from DFM50NLib.model.fcib import get_encoder

    enc = get_encoder(weights)
    load_s = time.perf_counter() - t
    import numpy as np

    enc.features(np.full((50, 50, 50), -1000.0, dtype=np.float32))
    print(json.dumps({"load_s": load_s, "peak_rss_gb": peak_rss_gb()}))


def child_score(weights):
    """Run in a fresh process: peak RSS of building the CT and scoring it once, cold."""

    from DFM50NLib.scoring.pipeline import score_volumes

    ct, mask = make_ct()
    base = peak_rss_gb()
    t = time.perf_counter()
    score_volumes(ct, mask, weights=weights)
    print(
        json.dumps(
            {
                "cold_score_s": time.perf_counter() - t,
                "ct_gb": ct.array.nbytes / 2**30,
                "rss_before_gb": base,
                "peak_rss_gb": peak_rss_gb(),
            }
        )
    )


def child_reference(arg):
    """Run in a fresh process: reference-mode extraction from the files in `folder`, "new" (windowed) or "old"
    (whole-volume zoom, as upstream: nibabel get_fdata + scipy.ndimage.zoom of everything), the address
    space capped at REFERENCE_MEMORY_GB (uncapped, the old path on 512x512x600 got the process tree
    OOM-killed); the cube goes to <folder>/cube_<mode>.npy for the bit-for-bit comparison."""
    import resource

    import numpy as np

    folder, mode = arg.rsplit("|", 1)
    folder = Path(folder)
    cap = int(REFERENCE_MEMORY_GB * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    t, cpu = time.perf_counter(), os.times()
    try:
        if mode == "new":
            from DFM50NLib.io.nifti_source import reference_cube_from_files

            ref = reference_cube_from_files(folder / "ct.nii.gz", folder / "mask.nii.gz", center_method="dt_peak")
        else:
            import nibabel as nib

            from DFM50NLib.geometry.reference import reference_cube_whole_volume

            img, msk = nib.load(str(folder / "ct.nii.gz")), nib.load(str(folder / "mask.nii.gz"))
            zooms = img.header.get_zooms()[:3], msk.header.get_zooms()[:3]
            ref = reference_cube_whole_volume(img.get_fdata(), msk.get_fdata(), *zooms, "dt_peak")
    except MemoryError:
        print(json.dumps({"memory_error_after_s": time.perf_counter() - t}))
        return
    seconds, now = time.perf_counter() - t, os.times()
    cpu_s = now.user - cpu.user + now.system - cpu.system  # less sensitive than wall time to others' load
    np.save(folder / f"cube_{mode}.npy", ref.cube.ct)
    np.save(folder / f"mask_{mode}.npy", ref.cube.mask)
    print(
        json.dumps(
            {
                "reference_s": seconds,
                "cpu_s": cpu_s,
                "peak_rss_gb": peak_rss_gb(),
                "center": list(ref.center_ijk),
            }
        )
    )


def reference_compare(ct, mask, tmp, what, old=True) -> None:
    """Write the CT and mask as .nii.gz, extract the reference cube old and new in fresh processes, print."""
    import numpy as np

    from DFM50NLib import io

    folder = tmp / "reference"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    io.write_volume(ct, folder / "ct.nii.gz")
    io.write_volume(mask, folder / "mask.nii.gz")
    new = run_child("reference", f"{folder}|new")
    line = (
        f"reference cube, {what}: new {new['reference_s']:.2f} s (CPU {new['cpu_s']:.2f} s), "
        f"peak RSS {new['peak_rss_gb']:.2f} GB"
    )
    if old:
        was = run_child("reference", f"{folder}|old")
        if "reference_s" in was:
            same = np.array_equal(np.load(folder / "cube_new.npy"), np.load(folder / "cube_old.npy"))
            same &= np.array_equal(np.load(folder / "mask_new.npy"), np.load(folder / "mask_old.npy"))
            line += (
                f"; old (whole-volume zoom) {was['reference_s']:.2f} s (CPU {was['cpu_s']:.2f} s), peak RSS "
                f"{was['peak_rss_gb']:.2f} GB; "
                f"new/old time {new['reference_s'] / was['reference_s']:.3f}, RSS "
                f"{new['peak_rss_gb'] / was['peak_rss_gb']:.3f}; cubes bit-identical: {bool(same)}"
            )
        else:
            line += (
                f"; old (whole-volume zoom): MemoryError after {was['memory_error_after_s']:.1f} s under a "
                f"{REFERENCE_MEMORY_GB:g} GB address-space cap"
            )
    else:
        line += "; old not run"
    print(line + " (incl. reading the files; targets <= 6 s, <= 1.5 GB)", flush=True)


def _tree_rss_gb(pid) -> float:
    """Summed RSS of `pid` and its children (the FCIB process), from /proc."""
    total, pids = 0, {pid}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    pids.add(int(proc.name))
            except (OSError, IndexError, ValueError):
                pass
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 2**20


def _cold_run(folder, weights, out, flag, sample_memory):
    cmd = [sys.executable, "-m", "DFM50NLib", "score", "--image", str(folder / "ct.nii.gz")]
    cmd += ["--mask", str(folder / "mask.nii.gz"), "--weights", weights, "--out", str(out)]
    env = dict(os.environ, DFM50N_ENCODER_PROCESS=flag)
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT, env=env)
    peak_sum = 0.0
    while True:  # wait4: max RSS of the CLI and of the child it reaped
        done, status, usage = os.wait4(proc.pid, os.WNOHANG if sample_memory else 0)
        if done:
            break
        peak_sum = max(peak_sum, _tree_rss_gb(proc.pid))  # the memory runs only: sampling costs CPU
        time.sleep(0.01)
    wall = time.perf_counter() - t
    proc.returncode = status
    if status:
        raise RuntimeError(f"score failed (status {status}):\n{proc.stderr.read()[-3000:]}")
    timings = json.loads(next(out.glob("*.dfm50n.json")).read_text())["timings"]
    return wall, timings, usage.ru_maxrss / 2**20, peak_sum


def child_cold(arg):
    """Run in a fresh process: `python -m DFM50NLib score` cold (another fresh process), 7 times with FCIB in
    its sibling process (model/encoder_process.py, the default) and 7 times in the command's own process
    (DFM50N_ENCODER_PROCESS=0), interleaved; per setting the median run's wall time and stage table (the
    result JSON's timings). Then 2 more runs per setting sampling the summed RSS of the command and its
    child every 10 ms (not timed: sampling costs CPU)."""
    import compileall

    folder, weights = arg.split("|", 1)
    folder = Path(folder)
    # bytecode as an installed package has it (pip compiles at install; PYTHONDONTWRITEBYTECODE=1, set on some
    # machines, would otherwise make every cold run compile the package's sources again: ~0.1 s)
    compileall.compile_dir(str(ROOT / "DFM50NLib"), quiet=1)
    runs = {"1": [], "0": []}
    speed = [_cpu_probe_s()]
    for i in range(7):
        for flag in ("1", "0"):
            runs[flag].append(_cold_run(folder, weights, folder / f"out{i}{flag}", flag, False))
    speed.append(_cpu_probe_s())
    result = {}
    for flag, label in (("1", "process"), ("0", "in_process")):
        wall, timings, _, _ = sorted(runs[flag], key=lambda r: r[0])[3]
        memory = [_cold_run(folder, weights, folder / f"mem{i}{flag}", flag, True) for i in range(2)]
        result[label] = {
            "wall_s": wall,
            "walls": [r[0] for r in runs[flag]],
            "timings": timings,
            "max_process_rss_gb": max(r[2] for r in memory),
            "peak_sum_rss_gb": max(r[3] for r in memory),
        }
    result["cpu_probe_s"] = speed
    print(json.dumps(result))


def _cpu_probe_s() -> float:
    """Seconds for a fixed pure-Python loop (best of 3): this shared VM's speed drifts by +-30 % within
    minutes, so the cold timings are printed next to it."""
    best = float("inf")
    for _ in range(3):
        t, s = time.perf_counter(), 0
        for i in range(2_000_000):
            s += i
        best = min(best, time.perf_counter() - t)
    return best


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
    ap.add_argument("--skip-reference", action="store_true", help="skip the reference-mode extraction")
    ap.add_argument("--skip-old-big", action="store_true", help="skip the old whole-volume reference run (~10 GB)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        children = {"load": child_load, "score": child_score, "reference": child_reference, "cold": child_cold}
        return children[args.child](args.weights)

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
        reference_compare(ct, mask, tmp, f"{SHAPE[0]}x{SHAPE[1]}x{SHAPE[2]} CT", old=not args.skip_old_big)
        slab_ct, slab_mask = slab(ct, SLAB), slab(mask, SLAB)
        reference_compare(slab_ct, slab_mask, tmp, f"{SHAPE[0]}x{SHAPE[1]}x{SLAB.stop - SLAB.start} slab")
        del slab_ct, slab_mask
        ct6, mask6 = make_ct(SHAPE_600, SPACING_600)
        reference_compare(
            ct6, mask6, tmp, f"{SHAPE_600[0]}x{SHAPE_600[1]}x{SHAPE_600[2]} CT {SPACING_600} mm", old=False
        )
        del ct6, mask6

    from DFM50NLib import io

    cold_dir = tmp / "cold"
    cold_dir.mkdir()
    io.write_volume(ct, cold_dir / "ct.nii.gz")
    io.write_volume(mask, cold_dir / "mask.nii.gz")
    cold = run_child("cold", f"{cold_dir}|{weights}")
    sib, own = cold["process"], cold["in_process"]
    print(
        f"cold `python -m DFM50NLib score` (physical, {SHAPE[0]}x{SHAPE[1]}x{SHAPE[2]} .nii.gz, fresh process each, "
        f"7 runs per setting, interleaved): FCIB in its sibling process (default) median {sib['wall_s']:.2f} s "
        f"({', '.join(f'{w:.2f}' for w in sib['walls'])}); in the command's process (DFM50N_ENCODER_PROCESS=0) "
        f"median {own['wall_s']:.2f} s ({', '.join(f'{w:.2f}' for w in own['walls'])}); ratio "
        f"{sib['wall_s'] / own['wall_s']:.2f} (target <= 2 s)"
    )
    print(
        f"  CPU speed probe (2e6-iteration Python loop, best of 3) before / after the cold runs: "
        f"{cold['cpu_probe_s'][0]:.3f} / {cold['cpu_probe_s'][1]:.3f} s (this VM drifts; lower is faster)"
    )
    print(
        f"  memory: sibling process: largest process {sib['max_process_rss_gb']:.2f} GB, both together (sampled "
        f"every 10 ms) {sib['peak_sum_rss_gb']:.2f} GB; in-process: {own['max_process_rss_gb']:.2f} GB "
        f"(target <= 1.3 GB)"
    )
    print(f"  stage table of the median runs (s):     {'sibling':>10}{'in-process':>12}")
    print(
        f"    {'startup + imports + writing':<36}{sib['wall_s'] - sib['timings']['total']:>10.3f}"
        f"{own['wall_s'] - own['timings']['total']:>12.3f}"
    )
    for k in dict.fromkeys([*sib["timings"], *own["timings"]]):
        print(f"    {k:<36}{sib['timings'].get(k, float('nan')):>10.3f}{own['timings'].get(k, float('nan')):>12.3f}")
    print("    (fcib_process_*: inside the sibling process, overlapping read/mask/cube; load_models: the wait for it)")

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
        f"cold score_volumes of the {SHAPE[0]}x{SHAPE[1]}x{SHAPE[2]} CT built in memory, fresh process: "
        f"{sc['cold_score_s']:.2f} s; peak RSS "
        f"{sc['peak_rss_gb']:.2f} GB (CT alone {sc['ct_gb']:.2f} GB; target <= 2.5 GB)"
    )
    print(f"ratios: warm re-score / forward = {warm / fw:.2f}; cube / forward = {phys / fw:.3f}")
    print(f"load average at the end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
