"""Regenerate docs/report-html.png, docs/report-page-1.png and docs/report-page-2.png (the README's report pictures).

A capture of real output: a synthetic 56 mm lesion is written as a DICOM CT series + RTSTRUCT (the test suite's
writers), scored by the command line with --report, and the HTML is photographed by headless Chromium, the PDF
pages by pdftoppm. Without the published FCIB weights pass the random-weight test checkpoint:

    python docs/make_report_screenshots.py --weights ~/.cache/dfm50n-tests/fcib_random_seed0.torch
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "Testing" / "Python")]


def write_case(folder: Path):
    import numpy as np
    from test_dicomseg import ct_datasets
    from test_rtstruct import contours_of, write_rtstruct

    from DFM50NLib.geometry.synthetic import sphere_case

    ct, mask = sphere_case(np.array([0.0, 0.0, 0.0]), 28.0, shape=(112, 112, 32), spacing=(0.7, 0.7, 2.5), seed=3)
    sources = ct_datasets(ct)
    (folder / "ct").mkdir(parents=True)
    for k, ds in enumerate(sources):
        ds.save_as(str(folder / "ct" / f"ct{k:03d}.dcm"), enforce_file_format=True)
    write_rtstruct(folder / "RS.dcm", sources, {"GTV-1": contours_of(np.asarray(mask.array), ct.ijk_to_ras)})
    return folder / "ct", folder / "RS.dcm"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", required=True, help="FCIB weights (the published file or a random-weight checkpoint)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ct_dir, rs = write_case(tmp / "case")
        out = tmp / "out"
        cmd = [sys.executable, "-m", "DFM50NLib", "score", "--image", str(ct_dir), "--mask", str(rs)]
        cmd += ["--segment", "GTV-1", "--weights", args.weights, "--case-id", "NSCLC-demo-large"]
        subprocess.run([*cmd, "--out", str(out), "--report"], check=True, cwd=ROOT)
        html = out / "NSCLC-demo-large_report.html"
        shot = ["chromium", "--headless", "--no-sandbox", "--hide-scrollbars", "--window-size=1100,1400"]
        subprocess.run([*shot, f"--screenshot={ROOT / 'docs' / 'report-html.png'}", html.as_uri()], check=True)
        pdf = out / "NSCLC-demo-large_report.pdf"
        subprocess.run(["pdftoppm", "-r", "80", "-png", str(pdf), str(tmp / "page")], check=True)
        for n in (1, 2):
            (tmp / f"page-{n}.png").replace(ROOT / "docs" / f"report-page-{n}.png")
    print("docs/report-html.png, docs/report-page-1.png, docs/report-page-2.png written")
    return 0


if __name__ == "__main__":
    sys.exit(main())
