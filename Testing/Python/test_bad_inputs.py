"""Bad-input catalogue: every kind of wrong input a user (or an attacker) can give, one row each.

Each CLI kind runs `python -m DFM50NLib ...` in this process (main(argv)) and asserts: the exit code, the
specific message on stderr, no Python traceback, nothing new in the output folder and the earlier result
there byte-for-byte untouched. The Slicer Logic kinds assert the exception, its message, and that the
scores table keeps its earlier rows. Inputs are tiny (48 x 48 x 24 voxels) and built once.
"""

from __future__ import annotations

import gzip
import os
import pickle
import re
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from DFM50NLib.cli import main

EARLIER = b'{"case_id": "earlier", "score": 0.42}\n'


def _write(arr_kji, path, spacing=(1.0, 1.0, 2.0)):
    img = sitk.GetImageFromArray(arr_kji)
    img.SetSpacing(spacing)
    sitk.WriteImage(img, str(path), str(path).endswith((".gz", ".nrrd", ".mha")))
    return path


def _cut(src, dst, fraction=0.6):
    data = Path(src).read_bytes()
    Path(dst).write_bytes(data[: int(len(data) * fraction)])
    return dst


@pytest.fixture(scope="module")
def world(tmp_path_factory, random_weights):
    """Every bad (and the good) input file, written once."""
    import torch
    from test_io import write_dicom_series
    from test_weights_integrity import _garbage_copy

    from DFM50NLib import io
    from DFM50NLib.model import fcib

    d = tmp_path_factory.mktemp("bad")
    k, j, i = np.ogrid[:24, :48, :48]
    ball = ((k - 12) * 2.0) ** 2 + (j - 24) ** 2 + (i - 24) ** 2 <= 36
    ct = np.full((24, 48, 48), -800, np.int16)
    ct[ball] = 40
    ct[:, :, :4] = -1000
    _write(ct, d / "ct.nrrd")
    _write(ball.astype(np.uint8), d / "mask.nii.gz")
    _write(ct, d / "ct.nii")
    _write(ct, d / "ct.nii.gz")
    _write(ct, d / "ct.mha")
    for name in ("ct.nii", "ct.nii.gz", "ct.nrrd", "ct.mha"):
        _cut(d / name, d / f"cut_{name}")
    _cut(d / "mask.nii.gz", d / "cut_mask.nii.gz")
    os.mkfifo(d / "fifo.nii.gz")
    (d / "junk.nii.gz").write_bytes(gzip.compress(b"not an image" * 20))
    (d / "empty.nii").write_bytes(b"")
    import nibabel as nib

    hdr = nib.Nifti1Header()
    hdr.set_data_shape((2000, 2000, 2000))
    hdr.set_data_dtype(np.int16)
    (d / "huge.nii").write_bytes(hdr.binaryblock + b"\0" * 4)
    _write(ct[12], d / "flat.nrrd", spacing=(1.0, 1.0))
    sitk.WriteImage(sitk.Image([8, 8, 8, 3], sitk.sitkInt16), str(d / "time.nii.gz"))
    nan = ct.astype(np.float32)
    nan[12, 24, 24] = np.nan
    _write(nan, d / "nan.nrrd")
    frac = ball.astype(np.float32) * 0.5
    _write(frac, d / "frac.nrrd")
    _write(np.zeros_like(ball, np.uint8), d / "emptymask.nii.gz")
    _write(ball.astype(np.uint8) * 3, d / "label3.nii.gz")
    far = sitk.GetImageFromArray(ball.astype(np.uint8))
    far.SetOrigin((500.0, 500.0, 500.0))
    sitk.WriteImage(far, str(d / "faraway.nii.gz"), True)
    vol = io.read_volume(d / "ct.nrrd")
    import locale

    saved = locale.setlocale(locale.LC_ALL)  # GDCM's writer switches the C locale (see conftest): put it back
    try:
        write_dicom_series(vol, d / "dcm", "1.2.826.0.1.3680043.2.1125.77")
    finally:
        locale.setlocale(locale.LC_ALL, saved)
    (d / "dcm" / "s010.dcm").unlink()
    # weights
    (d / "page.torch").write_text("<html>Too many requests</html>")
    tiny = {k: torch.zeros((), dtype=v.dtype).expand(v.shape) for k, v in fcib.build_trunk("meta").state_dict().items()}
    torch.save(tiny, d / "bare.torch")
    tiny["conv1.weight"] = torch.randn(tiny["conv1.weight"].shape)
    torch.save({"trunk_state_dict": tiny}, d / "ok_small.torch")
    _garbage_copy(d / "ok_small.torch", d / "crc.torch")
    _cut(d / "ok_small.torch", d / "cut.torch", 0.5)
    (d / "wdir").mkdir()
    # manifests
    (d / "m_binary.csv").write_bytes(zipfile.ZipFile.__doc__.encode()[:50] + b"\x00\xff\xfe" * 30)
    (d / "m_latin1.csv").write_bytes("case_id,image,mask\nj\xe9r\xf4me,ct.nrrd,mask.nii.gz\n".encode("latin-1"))
    (d / "m_cols.csv").write_text("case_id,ct\np1,ct.nrrd\n")
    (d / "m_dup.csv").write_text("case_id,image,mask\np1,ct.nrrd,mask.nii.gz\np1,ct.nrrd,mask.nii.gz\n")
    (d / "m_empty.csv").write_text("")
    (d / "m_ok.csv").write_text("case_id,image,mask\np1,ct.nrrd,mask.nii.gz\n")
    (d / "m_model.csv").write_text("case_id,image,mask\np1,ct.nrrd,mask.nii.gz\n")
    # models / training
    with open(d / "evil.pkl", "wb") as f:
        pickle.dump({"not": "a forest"}, f)
    (d / "notpickle.pkl").write_text("hello")
    (d / "feat_nolabel.csv").write_text("case_id,pred_1\np1,0.5\n")
    shutil.copy(d / "evil.pkl", d / "feat_pickle.csv")
    (d / "feat_onerow.csv").write_text("case_id,olm\np1,1\n")
    # outputs
    (d / "afile").write_text("x")
    return {"d": d, "w": random_weights}


@pytest.fixture(autouse=True)
def _env(tmp_path, monkeypatch):
    monkeypatch.setenv("DFM50N_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("DFM50N_FCIB_WEIGHTS", raising=False)
    monkeypatch.delenv("DFM50N_DEBUG", raising=False)


S = "score --image {ct} --mask {mask} --weights {w} --out {out}"
F = "features --image {ct} --mask {mask} --weights {w} --out {out}/f.csv"
B = "batch --manifest {manifest} --weights {w} --out {out} --no-progress"

# (id, command, exit code, message regex on stderr)
CLI_KINDS = [
    # --- score: the CT
    ("score-image-missing", S.replace("{ct}", "{d}/nope.nii.gz"), 2, r"File not found: .*nope\.nii\.gz"),
    ("score-image-truncated-nii", S.replace("{ct}", "{d}/cut_ct.nii"), 2, r"cut_ct\.nii: incomplete file: .*declares"),
    ("score-image-truncated-niigz", S.replace("{ct}", "{d}/cut_ct.nii.gz"), 2, r"cut_ct\.nii\.gz: incomplete gzip"),
    ("score-image-truncated-nrrd", S.replace("{ct}", "{d}/cut_ct.nrrd"), 2, r"cut_ct\.nrrd: incomplete gzip"),
    ("score-image-truncated-mha", S.replace("{ct}", "{d}/cut_ct.mha"), 2, r"cut_ct\.mha: incomplete"),
    ("score-image-fifo", S.replace("{ct}", "{d}/fifo.nii.gz"), 2, r"fifo\.nii\.gz: is a FIFO"),
    ("score-image-huge-header", S.replace("{ct}", "{d}/huge.nii"), 2, r"8,000,000,000 voxels, more than"),
    ("score-image-junk", S.replace("{ct}", "{d}/junk.nii.gz"), 2, r"Cannot read .*junk\.nii\.gz as an image"),
    ("score-image-empty-file", S.replace("{ct}", "{d}/empty.nii"), 2, r"Cannot read .*empty\.nii"),
    ("score-image-2d", S.replace("{ct}", "{d}/flat.nrrd"), 2, r"is a 2-D image"),
    ("score-image-4d", S.replace("{ct}", "{d}/time.nii.gz"), 2, r"4-D"),
    ("score-image-nan", S.replace("{ct}", "{d}/nan.nrrd"), 2, r"NaN or infinite voxel values"),
    ("score-image-dicom-missing-slice", S.replace("{ct}", "{d}/dcm"), 2, r"uneven slice spacing.*missing"),
    ("score-image-empty-folder", S.replace("{ct}", "{d}/wdir"), 2, r"No DICOM series found"),
    # --- score: the mask
    ("score-mask-missing", S.replace("{mask}", "{d}/nomask.nii.gz"), 2, r"File not found: .*nomask"),
    ("score-mask-truncated", S.replace("{mask}", "{d}/cut_mask.nii.gz"), 2, r"cut_mask\.nii\.gz: incomplete gzip"),
    ("score-mask-fifo", S.replace("{mask}", "{d}/fifo.nii.gz"), 2, r"is a FIFO"),
    ("score-mask-fractional", S.replace("{mask}", "{d}/frac.nrrd"), 2, r"fractional values"),
    (
        "score-mask-empty",
        S.replace("{mask}", "{d}/emptymask.nii.gz"),
        2,
        r"mask 'emptymask' is empty \(no non-zero voxel\)",
    ),
    (
        "score-mask-label-absent",
        S.replace("{mask}", "{d}/label3.nii.gz") + " --label 7",
        2,
        r"no voxel with label 7.*Labels present: 3",
    ),
    ("score-mask-far-away", S.replace("{mask}", "{d}/faraway.nii.gz"), 2, r"does not overlap the CT in world space"),
    ("score-mask-segment-on-nifti", S + " --segment Tumor", 2, r"not a Slicer \.seg\.nrrd"),
    # --- score: options (checked before any file is read)
    ("score-label-zero", S + " --label 0", 2, r"argument --label: 0 is not a lesion label"),
    ("score-label-text", S + " --label two", 2, r"argument --label: 'two' is not a whole number"),
    ("score-point-with-centroid", S + " --center centroid --point 1 2 3", 2, r"--point is given with --center"),
    ("score-center-point-no-point", S + " --center point", 2, r"--center point needs --point"),
    ("score-orientation-bad", S + " --orientation XYZ", 2, r"Invalid orientation code 'XYZ'"),
    ("score-reference-with-point", S + " --geometry reference --point 1 2 3", 2, r"Reference geometry reproduces"),
    ("score-smoking-maybe", S + " --smoking maybe", 2, r"--smoking must be yes or no.*'maybe'"),
    ("score-spiculated-2", S + " --spiculated 2", 2, r"--spiculated must be yes or no"),
    ("score-short-axis-negative", S + " --short-axis-cm -1", 2, r"--short-axis-cm must be a diameter"),
    ("score-short-axis-text", S + " --short-axis-cm big", 2, r"argument --short-axis-cm: invalid float"),
    ("score-device-tpu", S + " --device tpu", 2, r"argument --device: invalid choice: 'tpu'"),
    ("score-out-is-file", S.replace("{out}", "{d}/afile"), 2, r"--out .*afile is a file"),
    ("score-out-under-file", S.replace("{out}", "{d}/afile/sub"), 2, r"lies under .*afile, which is a file"),
    # --- score: the models
    ("score-weights-missing", S.replace("{w}", "{d}/nope.torch"), 2, r"FCIB weights given by --weights not found"),
    ("score-weights-folder", S.replace("{w}", "{d}/wdir"), 2, r"wdir is a folder"),
    ("score-weights-html", S.replace("{w}", "{d}/page.torch"), 2, r"is not a PyTorch checkpoint"),
    ("score-weights-bare", S.replace("{w}", "{d}/bare.torch"), 2, r"bare state dict"),
    ("score-weights-truncated", S.replace("{w}", "{d}/cut.torch"), 2, r"truncated or corrupt"),
    ("score-weights-crc", S.replace("{w}", "{d}/crc.torch"), 2, r"fails its CRC-32 check"),
    ("score-model-missing", S + " --model {d}/nomodel", 2, r"Model folder .*nomodel does not exist"),
    ("score-model-not-a-model", S + " --model {d}/wdir", 2, r"wdir is not a DFM50N model folder"),
    # --- features
    ("features-out-is-folder", F.replace("{out}/f.csv", "{d}/wdir"), 2, r"--out .*wdir is a folder"),
    ("features-image-truncated", F.replace("{ct}", "{d}/cut_ct.nii.gz"), 2, r"incomplete gzip"),
    ("features-label-zero", F + " --label 0", 2, r"argument --label: 0 is not a lesion label"),
    ("features-point-with-dt-peak", F + " --center dt_peak --point 0 0 0", 2, r"--point is given with --center"),
    ("features-weights-crc", F.replace("{w}", "{d}/crc.torch"), 2, r"fails its CRC-32 check"),
    (
        "batch-weights-crc",
        B.replace("{w}", "{d}/crc.torch").replace("{manifest}", "{d}/m_ok.csv"),
        2,
        r"fails its CRC-32 check",
    ),
    ("features-mask-fifo", F.replace("{mask}", "{d}/fifo.nii.gz"), 2, r"is a FIFO"),
    # --- batch
    ("batch-manifest-missing", B.replace("{manifest}", "{d}/none.csv"), 2, r"Manifest .*none\.csv not found"),
    ("batch-manifest-binary", B.replace("{manifest}", "{d}/m_binary.csv"), 2, r"(not UTF-8|NUL bytes)"),
    ("batch-manifest-latin1", B.replace("{manifest}", "{d}/m_latin1.csv"), 2, r"not UTF-8 text"),
    ("batch-manifest-columns", B.replace("{manifest}", "{d}/m_cols.csv"), 2, r"lacks column\(s\) image, mask"),
    ("batch-manifest-duplicate", B.replace("{manifest}", "{d}/m_dup.csv"), 2, r"Duplicate case 'p1'"),
    ("batch-manifest-empty", B.replace("{manifest}", "{d}/m_empty.csv"), 2, r"lacks column"),
    ("batch-manifest-and-folders", B.replace("{manifest}", "{d}/m_dup.csv") + " --images {d}", 2, r"Give either"),
    ("batch-images-without-masks", "batch --images {d} --out {out}", 2, r"--images and --masks go together"),
    ("batch-out-is-file", B.replace("{manifest}", "{d}/m_dup.csv").replace("{out}", "{d}/afile"), 2, r"is a file"),
    ("batch-workers-zero", B.replace("{manifest}", "{d}/m_dup.csv") + " --workers 0", 2, r"--workers and"),
    ("batch-label-zero", B.replace("{manifest}", "{d}/m_dup.csv") + " --label 0", 2, r"0 is not a lesion label"),
    ("batch-save-features-10", B.replace("{manifest}", "{d}/m_dup.csv") + " --save-features 10", 2, r"invalid choice"),
    (
        "batch-model-missing",
        B.replace("{manifest}", "{d}/m_ok.csv") + " --model {d}/nomodel",
        2,
        r"Model folder .*nomodel does not exist",
    ),
    (
        "batch-weights-missing",
        B.replace("{manifest}", "{d}/m_ok.csv").replace("{w}", "{d}/no.torch"),
        2,
        r"FCIB weights given by --weights not found",
    ),
    (
        "batch-scheduler-malformed",
        B.replace("{manifest}", "{d}/m_ok.csv") + " --scheduler nonsense://x:1",
        2,
        r"cannot connect to the Dask scheduler 'nonsense://x:1': unknown address scheme",
    ),
    (
        "batch-scheduler-no-port",
        B.replace("{manifest}", "{d}/m_ok.csv") + " --scheduler somehost",
        2,
        r"cannot connect to the Dask scheduler 'somehost': missing port number",
    ),
    (
        "score-reference-truncated",
        S.replace("{ct}", "{d}/cut_ct.nii.gz") + " --geometry reference",
        2,
        r"cut_ct\.nii\.gz: incomplete gzip",
    ),
    ("score-reference-fifo-mask", S.replace("{mask}", "{d}/fifo.nii.gz") + " --geometry reference", 2, r"is a FIFO"),
    ("import-model-out-is-file", "import-model {d}/evil.pkl --trust --out {d}/afile", 2, r"--out .*afile is a file"),
    ("train-out-under-file", "train --features {d}/feat_onerow.csv --out {d}/afile/m", 2, r"lies under .*afile"),
    ("batch-manifest-fifo", B.replace("{manifest}", "{d}/fifo.nii.gz"), 2, r"fifo\.nii\.gz: is a FIFO"),
    ("score-weights-fifo", S.replace("{w}", "{d}/fifo.nii.gz"), 2, r"fifo\.nii\.gz: is a FIFO"),
    ("train-features-fifo", "train --features {d}/fifo.nii.gz --out {out}/m", 2, r"is a FIFO"),
    ("import-model-fifo", "import-model {d}/fifo.nii.gz --trust --out {out}/m", 2, r"is a FIFO"),
    ("demo-out-is-file", "demo --out {d}/afile --weights {w}", 2, r"--out .*afile is a file"),
    ("batch-images-missing-folder", "batch --images {d}/nod --masks {d}/nod --out {out}", 2, r"is not a folder"),
    # --- weights
    ("weights-verify-missing", "weights verify {d}/nope.torch", 2, r"not found: .*nope\.torch does not exist"),
    ("weights-verify-html", "weights verify {d}/page.torch", 2, r"is not a PyTorch checkpoint"),
    ("weights-verify-bare", "weights verify {d}/bare.torch", 2, r"bare state dict"),
    ("weights-verify-crc", "weights verify {d}/crc.torch", 2, r"fails its CRC-32 check"),
    ("weights-verify-truncated", "weights verify {d}/cut.torch", 2, r"truncated or corrupt"),
    (
        "weights-download-offline",
        "weights download --quiet --url http://127.0.0.1:9/model_weights.torch",
        2,
        r"could not reach the download host.*--weights PATH.*DFM50N_FCIB_WEIGHTS",
    ),
    # --- import-model / train
    (
        "import-model-untrusted",
        "import-model {d}/evil.pkl --out {out}/m",
        2,
        r"runs code stored in it.*Re-run with --trust",
    ),
    ("import-model-missing", "import-model {d}/none.pkl --trust --out {out}/m", 2, r"none\.pkl does not exist"),
    (
        "import-model-not-pickle",
        "import-model {d}/notpickle.pkl --trust --out {out}/m",
        2,
        r"Cannot unpickle .*notpickle\.pkl",
    ),
    (
        "import-model-not-forest",
        "import-model {d}/evil.pkl --trust --out {out}/m",
        2,
        r"evil\.pkl holds a builtins\.dict, not a scikit-learn",
    ),
    ("train-features-missing", "train --features {d}/none.csv --out {out}/m", 2, r"Cannot read the feature table"),
    ("train-features-pickle", "train --features {d}/feat_pickle.csv --out {out}/m", 2, r"not a UTF-8 CSV"),
    ("train-features-no-label", "train --features {d}/feat_nolabel.csv --out {out}/m", 2, r"has no label column 'olm'"),
    (
        "train-features-one-row",
        "train --features {d}/feat_onerow.csv --out {out}/m",
        2,
        r"feat_onerow\.csv lacks the feature columns",
    ),
]


def _snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("kind,command,rc,message", CLI_KINDS, ids=[k[0] for k in CLI_KINDS])
def test_cli_refuses_bad_input_cleanly(world, tmp_path, capsys, kind, command, rc, message):
    out = tmp_path / "out"
    out.mkdir()
    (out / "earlier.json").write_bytes(EARLIER)
    before_world = sorted(p.name for p in world["d"].iterdir())
    argv = command.format(
        d=world["d"],
        w=world["w"],
        ct=world["d"] / "ct.nrrd",
        mask=world["d"] / "mask.nii.gz",
        out=out,
        manifest=world["d"] / "m_dup.csv",
    ).split()
    try:
        got = main(argv)
    except SystemExit as exc:  # argparse refusals
        got = exc.code
    err = capsys.readouterr().err
    assert got == rc, err
    assert re.search(message, err, re.S), err
    assert "Traceback" not in err and 'File "' not in err
    assert err.count("error:") == 1 or "usage:" in err  # one message, printed once
    assert _snapshot(out) == {"earlier.json": EARLIER}  # no partial output; the earlier result untouched
    assert sorted(p.name for p in world["d"].iterdir()) == before_world  # nothing written beside the inputs


def test_debug_shows_the_traceback(world, tmp_path, capsys):
    with pytest.raises(Exception, match="incomplete gzip"):
        main(
            [
                "--debug",
                "score",
                "--image",
                str(world["d"] / "cut_ct.nii.gz"),
                "--mask",
                str(world["d"] / "mask.nii.gz"),
                "--out",
                str(tmp_path / "o"),
            ]
        )


def test_full_exception_text_is_never_cut(world, capsys, tmp_path):
    long_dir = tmp_path / ("d" * 150) / ("e" * 90)
    long_dir.mkdir(parents=True)
    target = long_dir / "page.torch"
    shutil.copy(world["d"] / "page.torch", target)
    assert main(["weights", "verify", str(target)]) == 2
    err = capsys.readouterr().err
    assert str(target) in err and err.rstrip().endswith((".", ")"))


# ------------------------------------------------------------------------------------------- Slicer Logic
LOGIC_KINDS = [
    ("logic-no-volume", dict(volume=None), r"Select the CT volume"),
    ("logic-no-segmentation", dict(segmentation=None), r"Select the segmentation"),
    ("logic-unknown-segment", dict(segment="nope"), r"Select the lesion segment"),
    ("logic-weights-missing", dict(weights="{d}/nope.torch"), r"FCIB weights given by --weights not found"),
    ("logic-weights-crc", dict(weights="{d}/crc.torch"), r"fails its CRC-32 check"),
    ("logic-point-needs-point", dict(center="point"), r"needs a point"),
    ("logic-point-ignored", dict(center="centroid", point_ras=[0, 0, 0]), r"would be ignored"),
    ("logic-bad-geometry", dict(geometry="sideways"), r"Unknown geometry mode 'sideways'"),
    ("logic-bad-orientation", dict(orientation="XYZ"), r"Invalid orientation code 'XYZ'"),
]


@pytest.fixture(scope="module")
def logic_scene(world):
    from slicer_harness import add_segmentation, add_volume, fresh_scene

    from DFM50NLib import io

    fresh_scene()
    ct = io.read_volume(world["d"] / "ct.nrrd")
    mask = io.read_mask(world["d"] / "mask.nii.gz")
    node = add_volume(ct)
    seg, ids = add_segmentation({"Tumor": mask.with_array((np.asarray(mask.array) > 0).astype(np.uint8))})
    return node, seg, ids["Tumor"]


@pytest.mark.parametrize("kind,change,message", LOGIC_KINDS, ids=[k[0] for k in LOGIC_KINDS])
def test_slicer_logic_refuses_bad_input_cleanly(world, logic_scene, kind, change, message):
    from DFM50NLib.errors import DFM50NError
    from DFM50NLib.scene.logic import DFM50NLogic

    node, seg, sid = logic_scene
    args = {"volume": node, "segmentation": seg, "segment": sid}
    options = {"weights": str(world["w"])}
    for k, v in change.items():
        if k in args:
            args[k] = v
        else:
            options[k] = v.format(d=world["d"]) if isinstance(v, str) else v
    logic = DFM50NLogic()
    table = logic.getTableNode()
    rows = table.GetNumberOfRows()
    with pytest.raises(DFM50NError, match=message):
        logic.scoreSegment(args["volume"], args["segmentation"], args["segment"], checkDependencies=False, **options)
    assert table.GetNumberOfRows() == rows  # no row for a failed score, earlier rows kept


def test_catalogue_has_at_least_60_kinds():
    assert len(CLI_KINDS) + len(LOGIC_KINDS) >= 60
    commands = {c.split()[0] for _, c, _, _ in CLI_KINDS}
    assert {"score", "features", "batch", "weights", "import-model", "train"} <= commands


def test_good_run_point_implies_center_and_each_warning_is_printed_once(world, tmp_path, capsys):
    """--point alone means --center point (documented); the unverified-weights warning: once, no source line."""
    import json

    d = world["d"]
    out = tmp_path / "o"
    argv = ["score", "--image", str(d / "ct.nrrd"), "--mask", str(d / "mask.nii.gz"), "--weights", str(world["w"])]
    assert main(argv + ["--out", str(out), "--point", "-24", "-24", "24", "--case-id", "pt"]) == 0
    captured = capsys.readouterr()
    text = captured.out + captured.err
    res = json.loads((out / "pt.dfm50n.json").read_text(encoding="utf-8"))
    assert res["center_method"] == "point" and res["center_ras"] == [-24.0, -24.0, 24.0]
    assert res["fcib_weights"].startswith("FCIB weights: unverified file sha256 " + res["fcib_weights_sha256"])
    assert res["fcib_weights"] in res["warnings"]
    assert text.count("unverified file sha256") == 1, text
    assert "DFM50NWarning" not in text and "warnings.warn" not in text
