"""FCIB encoder cost, cold process: import, load, RSS, first / steady forward, batch of 8, SHA-256.

    python Testing/Benchmarks/benchmark_model.py [WEIGHTS] [--device cpu|cuda] [--threads N]

Without WEIGHTS: the random-weight test checkpoint (~/.cache/dfm50n-tests, made on first use).
RSS is split into anonymous memory (the process's own) and file-backed pages (the memory-mapped weights,
page cache shared with other processes and reclaimable by the OS).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def rss() -> str:
    fields = {}
    try:
        for line in open("/proc/self/status"):
            k, _, v = line.partition(":")
            if k in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
                fields[k] = int(v.split()[0]) / 2**20
        return (
            f"RSS {fields['VmRSS']:.2f} GB (anonymous {fields['RssAnon']:.2f}, weights pages "
            f"{fields['RssFile']:.2f}), peak {fields['VmHWM']:.2f} GB"
        )
    except (OSError, KeyError):
        import resource

        return f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GB"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("weights", nargs="?")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()

    t = time.perf_counter()
    import numpy as np
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"import torch: {time.perf_counter() - t:.2f} s; torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    from DFM50NLib.model import fcib

    weights = args.weights
    if weights is None:
        weights = Path.home() / ".cache" / "dfm50n-tests" / "fcib_random_seed0.torch"
        if not weights.exists():
            fcib.save_random_checkpoint(weights)
    t = time.perf_counter()
    enc = fcib.get_encoder(weights, device=args.device)
    print(f"model load (strict checks + meta build + mmap assign): {time.perf_counter() - t:.2f} s; {rss()}")

    cube = np.random.default_rng(0).normal(-500, 300, (50, 50, 50)).astype(np.float32)
    t = time.perf_counter()
    enc.features(cube)
    print(f"first forward (pages the weights in): {time.perf_counter() - t:.2f} s; {rss()}")
    times = []
    for _ in range(5):
        t = time.perf_counter()
        enc.features(cube)
        times.append(time.perf_counter() - t)
    print(f"forward, one 50^3 cube: median {statistics.median(times):.3f} s (min {min(times):.3f})")
    batch = np.stack([cube] * 8)
    t = time.perf_counter()
    enc.features(batch, batch_size=8)
    b8 = time.perf_counter() - t
    print(f"forward, batch of 8: {b8:.2f} s = {b8 / 8:.3f} s per cube; {rss()}")
    t = time.perf_counter()
    sha = enc.weights_sha256
    print(f"SHA-256 {sha[:16]}... ready {time.perf_counter() - t:.2f} s after the forwards (hashed in background)")


if __name__ == "__main__":
    main()
