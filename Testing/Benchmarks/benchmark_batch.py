"""Benchmark of cohort scoring (not a test): prints every figure of one run side by side.

    python Testing/Benchmarks/benchmark_batch.py [--cases 30] [--broken 3] [--shape 256 256 120]
                                                 [--batch-size 4] [--weights PATH] [--workers 2]
                                                 [--device cpu|cuda]

Builds a synthetic cohort (N cases, k broken: missing file, empty mask, NaN CT; uncompressed NRRD CTs),
then measures, on the same files with a warm page cache:
  - sequential single-case scoring: `score_case` in a loop, network already built (the baseline);
  - `score_cohort` in this process (prefetch thread + batched forwards): cases/s and the share of the
    engine's wall time spent in the network forward (target >= 70 % with warm CT loading);
  - `score_cohort` with --workers reader processes feeding the one network of this process (issue 21):
    cases/s, the forward's share of the engine's wall time (CPU target >= 70 % with N readers on N+1
    cores) and the GPU's idle share (engine wall time outside the forward; on CUDA), and that its scores
    and features are bit-identical to the in-process run's.
It also checks N-k results, k errors, and that a re-run skips everything.
Without --weights a random-weight checkpoint of the real architecture is made (timings are the same).
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def make_cohort(folder: Path, n: int, broken: int, shape) -> Path:
    """n cases (CT int16 .nrrd uncompressed + mask .nii.gz); the last `broken` are broken, 3 kinds in turn."""
    import numpy as np
    import SimpleITK as sitk

    folder.mkdir(parents=True, exist_ok=True)
    nx, ny, nz = shape
    spacing = (0.7, 0.7, 1.5)
    rows = ["case_id,image,mask,outcome"]
    kinds = ["missing", "empty", "nan"]
    for c in range(n):
        rng = np.random.default_rng(c)
        kind = kinds[(c - (n - broken)) % 3] if c >= n - broken else ""
        ct = (-800 + 30 * rng.standard_normal((nz, ny, nx))).astype(np.float32 if kind == "nan" else np.int16)
        center = np.array([nz / 2, ny / 2, nx / 2]) + rng.integers(-10, 11, 3)
        r = 6 + 6 * rng.random()
        sl = tuple(slice(int(ci - r / s - 2), int(ci + r / s + 3)) for ci, s in zip(center, spacing[::-1]))
        g = np.ogrid[sl]
        inside = sum(((gi - ci) * s) ** 2 for gi, ci, s in zip(g, center, spacing[::-1])) <= r * r
        ct[sl][inside] = 40
        mask = np.zeros(ct.shape, np.uint8)
        if kind != "empty":
            mask[sl][inside] = 1
        if kind == "nan":
            ct[tuple(int(v) for v in center)] = np.nan
        for arr, name, compress in ((ct, f"c{c:03d}.nrrd", False), (mask, f"c{c:03d}_mask.nii.gz", True)):
            img = sitk.GetImageFromArray(arr)
            img.SetSpacing(spacing)
            sitk.WriteImage(img, str(folder / name), compress)
        mask_name = "absent_mask.nii.gz" if kind == "missing" else f"c{c:03d}_mask.nii.gz"
        rows.append(f"c{c:03d},c{c:03d}.nrrd,{mask_name},{c % 2}")
    (folder / "cases.csv").write_text("\n".join(rows) + "\n")
    return folder / "cases.csv"


def engine_line(st: dict, device: str) -> str:
    """Where the engine's wall time went: the forward (the network busy), waiting for cubes, the rest."""
    work = st["wall_s"] - st.get("load_s", 0.0)  # the network is already built (warm): ~0
    idle = f"GPU idle {1 - st['forward_s'] / work:.0%} of it" if device == "cuda" else "GPU idle: no GPU"
    return (
        f"engine wall {work:.1f} s: forward {st['forward_s']:.1f} s ({st['forward_s'] / work:.0%}, CPU target "
        f">= 70 %; {idle}), waiting for cubes {st['wait_s']:.1f} s, finish {st['finish_s']:.1f} s"
    )


def results_of(out: Path) -> dict:
    """case id -> (score, 9 features) of every result file in `out`."""
    import json

    res = (json.loads(p.read_text()) for p in (out / "cases").glob("*.json"))
    return {r["case_id"]: (r["score"], r["features"]) for r in res}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, default=30)
    ap.add_argument("--broken", type=int, default=3)
    ap.add_argument("--shape", type=int, nargs=3, default=(256, 256, 120), metavar=("X", "Y", "Z"))
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--workers", type=int, default=None, help="reader processes (default 2; cores - 1 on CUDA)")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where FCIB runs (default cpu)")
    ap.add_argument("--weights", default=None)
    ap.add_argument("--keep", action="store_true", help="keep the generated cohort and outputs (else deleted)")
    args = ap.parse_args()

    import warnings

    import torch

    from DFM50NLib.batch.cohort import score_cohort
    from DFM50NLib.batch.manifest import read_manifest
    from DFM50NLib.batch.pool import default_readers
    from DFM50NLib.errors import DFM50NWarning
    from DFM50NLib.model import fcib
    from DFM50NLib.scoring.pipeline import load_encoder, score_case

    warnings.simplefilter("ignore", DFM50NWarning)  # DEMO banner etc.: recorded in every result anyway
    torch.set_num_threads(os.cpu_count() or 1)
    tmp = Path(tempfile.mkdtemp(prefix="dfm50n-batch-bench-"))
    weights = args.weights or fcib.save_random_checkpoint(tmp / "random.torch")
    t = time.perf_counter()
    manifest = make_cohort(tmp / "cohort", args.cases, args.broken, args.shape)
    device = args.device
    gpu = torch.cuda.get_device_name(0) if device == "cuda" else "no GPU used"
    print(
        f"{args.cases} cases ({args.broken} broken), CT {tuple(args.shape)} int16 uncompressed NRRD, "
        f"{os.cpu_count()} cores, device {device} ({gpu}); cohort built in {time.perf_counter() - t:.1f} s; "
        f"weights {weights}"
    )

    t = time.perf_counter()
    load_encoder(weights, device)
    print(f"network build (once per process/worker): {time.perf_counter() - t:.2f} s")

    good = [c for c in read_manifest(manifest) if Path(c.mask).exists()]
    n_ok, t_seq, fw, c_seq = 0, time.perf_counter(), 0.0, time.process_time()
    for c in good:  # baseline: one case at a time; also warms the page cache for the batch run
        try:
            r = score_case(c.image, c.mask, case_id=c.case_id, weights=weights, device=device)
            fw += r.timings.get("forward", 0.0)
            n_ok += 1
        except Exception:
            pass
    t_seq, c_seq = time.perf_counter() - t_seq, time.process_time() - c_seq
    print(
        f"sequential score_case (warm network): {n_ok} ok in {t_seq:.1f} s = {n_ok / t_seq:.2f} cases/s; "
        f"forward share {fw / t_seq:.0%}; CPU {c_seq / n_ok:.2f} s/case"
    )

    out = tmp / "out"
    t, c = time.perf_counter(), time.process_time()
    s = score_cohort(manifest, out, weights=weights, batch_size=args.batch_size, device=device, workers=1)
    t_batch, c_batch = time.perf_counter() - t, time.process_time() - c
    st = s.stats
    print(
        f"batch (in-process, prefetch + batch {args.batch_size}): {s.n_done} ok, {s.n_failed} failed in "
        f"{t_batch:.1f} s = {s.n_done / t_batch:.2f} cases/s  ->  {t_seq / n_ok / (t_batch / s.n_done):.2f}x "
        f"sequential; CPU {c_batch / s.n_done:.2f} s/case"
    )
    print(f"  {engine_line(st, device)}; job overhead (hashing weights, tables) {t_batch - st['wall_s']:.1f} s")
    with open(out / "errors.csv", newline="") as f:
        errors = list(csv.DictReader(f))
    with open(out / "results.csv", newline="") as f:
        results = list(csv.DictReader(f))
    print(f"  results.csv {len(results)} rows, errors.csv {len(errors)} rows:")
    for e in errors:
        print(f"    {e['case_id']}: {e['error_type']}: {e['message'][:110]}")
    assert len(results) == args.cases - args.broken and len(errors) == args.broken

    t = time.perf_counter()
    again = score_cohort(manifest, out, weights=weights, batch_size=args.batch_size, device=device)
    print(f"re-run (resume, nothing to do): {again.n_skipped} skipped in {time.perf_counter() - t:.2f} s")

    if args.batch_size != 1:  # prefetch alone, one cube per forward: separates the two gains
        t = time.perf_counter()
        s1 = score_cohort(manifest, tmp / "out_bs1", weights=weights, batch_size=1, device=device, workers=1)
        t1 = time.perf_counter() - t
        w1 = s1.stats["wall_s"] - s1.stats.get("load_s", 0.0)
        print(
            f"batch, prefetch only (batch 1): {s1.n_done / t1:.2f} cases/s = {t_seq / n_ok / (t1 / s1.n_done):.2f}x "
            f"sequential; forward share {s1.stats['forward_s'] / w1:.0%}"
        )

    readers = args.workers or (default_readers(device) if device == "cuda" else 2)
    t = time.perf_counter()
    p = score_cohort(
        manifest, tmp / "out_pool", weights=weights, batch_size=args.batch_size, device=device, workers=readers
    )
    tp = time.perf_counter() - t
    print(
        f"batch, {readers} reader processes -> the network in this process (batch {args.batch_size}): "
        f"{p.n_done} ok, {p.n_failed} failed in {tp:.1f} s = {p.n_done / tp:.2f} cases/s "
        f"({t_batch / tp:.2f}x the in-process run)"
    )
    print(f"  {engine_line(p.stats, device)} (includes starting the readers)")
    pooled, single = results_of(tmp / "out_pool"), results_of(out)
    same = sum(pooled[c] == single[c] for c in single)
    print(f"  scores and 9 features bit-identical to the in-process run: {same} of {len(single)} cases")
    assert same == len(single) == len(pooled)
    if args.keep:
        print(f"files left in {tmp}")
    else:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
