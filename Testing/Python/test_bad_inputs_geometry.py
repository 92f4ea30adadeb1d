"""Bad-input catalogue, part 2 (issue 19): geometry the file does not really have, lesions that are not lesions.

Same rules as test_bad_inputs.py: each refusal runs `python -m DFM50NLib score ...` in this process (main(argv))
and asserts the exit code, the message with the file and the number, no traceback, nothing new in the output
folder and the earlier result there byte for byte. Inputs a radiologist would still want scored are scored
with a warning: asserted on stderr and in the result JSON, the earlier result again untouched.

The CT is 64 x 64 x 40 voxels of 1 x 1 x 2 mm (a 50 mm cube around its centre stays inside it), lung at
-800 HU with a 6 mm ball of 40 HU at its centre; DICOM files are written with pydicom (test_dicomseg's
`ct_datasets`) and then damaged one tag at a time.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_bad_inputs import EARLIER, _env, _snapshot  # noqa: F401 (_env: the same autouse environment)
from test_dicomseg import ct_datasets
from test_rtstruct import write_rtstruct

from DFM50NLib.cli import main
from DFM50NLib.errors import InputError
from DFM50NLib.geometry.volume import RAS_TO_LPS, Volume

SPACING = (1.0, 1.0, 2.0)
SHAPE = (64, 64, 40)  # i, j, k
CENTER = (32, 32, 20)
LPS_DIRECTION = np.diag([-1.0, -1.0, 1.0])  # RAS columns of the i, j, k axes: DICOM's identity orientation


def _ball(center=CENTER, radius_mm=6.0):
    i, j, k = np.ogrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
    c = center
    return ((i - c[0]) * SPACING[0]) ** 2 + ((j - c[1]) * SPACING[1]) ** 2 + ((k - c[2]) * SPACING[2]) ** 2 <= (
        radius_mm**2
    )


def _volume(array_ijk, name="") -> Volume:
    return Volume.from_geometry(array_ijk, SPACING, (10.0, 20.0, -30.0), LPS_DIRECTION, name=name)


def _ct_array():
    ct = np.full(SHAPE, -800, np.int16)
    ct[_ball()] = 40
    ct[28:38, 28:38, 10:31] = 40  # the tumour the RTSTRUCT squares outline (the ball's mask sits inside it)
    ct[:, :4, :] = -1000  # air in front of the chest
    return ct


def _write_image(array_ijk, path):
    from DFM50NLib import io

    io.write_volume(_volume(array_ijk), path)
    return path


def _write_dicom(folder, datasets, edit=None):
    folder.mkdir()
    for k, ds in enumerate(datasets):
        ds = copy.deepcopy(ds)
        if edit is not None:
            edit(k, ds)
        ds.save_as(str(folder / f"s{k:03d}.dcm"), enforce_file_format=True)
    return folder


def _patch_nifti(src, dst, **fields):
    """Copy an uncompressed NIfTI-1 file and overwrite header fields in place (byte offsets of the standard)."""
    offsets = {"pixdim1": 80, "pixdim2": 84, "pixdim3": 88, "scl_slope": 112, "scl_inter": 116}
    data = bytearray(Path(src).read_bytes())
    for name, value in fields.items():
        struct.pack_into("<f", data, offsets[name], value)
    Path(dst).write_bytes(bytes(data))
    return dst


def _lps(ct: Volume, ijk):
    m = RAS_TO_LPS @ ct.ijk_to_ras
    ijk = np.asarray(ijk, float)
    return ijk @ m[:3, :3].T + m[:3, 3]


def _square(ct, k, lo, hi):
    """A closed square outline on slice k (voxel index corners, half-integers), as (4, 3) LPS mm."""
    return _lps(ct, [[lo[0], lo[1], k], [hi[0], lo[1], k], [hi[0], hi[1], k], [lo[0], hi[1], k]])


def _pentagram(ct, k, center, radius):
    """A five-pointed star drawn in one stroke: it winds twice round its centre, so the even-odd fill leaves
    the central pentagon empty while the nonzero fill (what was drawn) keeps it."""
    angles = np.pi / 2 + np.arange(5) * 4 * np.pi / 5
    pts = [[center[0] + radius * np.cos(a), center[1] + radius * np.sin(a), k] for a in angles]
    return _lps(ct, pts)


@pytest.fixture(scope="module")
def world(tmp_path_factory, random_weights):
    import nibabel as nib

    d = tmp_path_factory.mktemp("badgeo")
    ct_arr, ball = _ct_array(), _ball()
    ct = _volume(ct_arr, "ct")
    _write_image(ct_arr, d / "ct.nrrd")
    _write_image(ball.astype(np.uint8), d / "mask.nii.gz")
    # --- DICOM series, each damaged in one way
    sources = ct_datasets(ct)
    _write_dicom(d / "dcm", sources)
    tilt = np.tan(np.radians(20.0))

    def tilted(k, ds):
        ds.ImagePositionPatient = [float(v) for v in np.add(ds.ImagePositionPatient, [0.0, k * 2.0 * tilt, 0.0])]

    def drifted(k, ds):
        if k == 17:
            ds.ImagePositionPatient = [float(v) for v in np.add(ds.ImagePositionPatient, [3.0, 0.0, 0.0])]

    def no_position(k, ds):
        del ds.ImagePositionPatient

    def mr(k, ds):
        ds.Modality = "MR"

    def small_slice(k, ds):
        if k == 5:
            ds.Rows, ds.Columns = 32, 32
            ds.PixelData = np.zeros((32, 32), np.int16).tobytes()

    def turned(k, ds):
        if k == 8:
            c, s = np.cos(np.radians(10.0)), np.sin(np.radians(10.0))
            ds.ImageOrientationPatient = [c, s, 0.0, -s, c, 0.0]

    for name, edit in [
        ("dcm_tilt", tilted),
        ("dcm_drift", drifted),
        ("dcm_noipp", no_position),
        ("dcm_mr", mr),
        ("dcm_size", small_slice),
        ("dcm_turned", turned),
    ]:
        _write_dicom(d / name, sources, edit)
    _write_dicom(d / "dcm_one", sources[20:21])
    one = np.ascontiguousarray(ct_arr[:, :, 20:21])
    _write_image(one, d / "ct_one.nrrd")
    _write_image((ball[:, :, 20:21]).astype(np.uint8), d / "mask_one.nii.gz")
    _write_image(one, d / "ct_one.nii")
    _write_image((ball[:, :, 20:21]).astype(np.uint8), d / "mask_one.nii")
    # --- NIfTI headers
    _write_image(ct_arr, d / "ct.nii")
    for name, fields in {
        "pixdim0": {"pixdim3": 0.0},
        "pixdimnan": {"pixdim1": float("nan")},
        "pixdimneg": {"pixdim2": -1.0},
        "pixdimhuge": {"pixdim3": 1e30},
        "slope0": {"scl_slope": 0.0, "scl_inter": -1024.0},
    }.items():
        _patch_nifti(d / "ct.nii", d / f"{name}.nii", **fields)
    img = nib.load(str(d / "ct.nii"))
    shifted = img.affine.copy()
    shifted[:3, 3] += (30.0, 0.0, 0.0)
    both = nib.Nifti1Image(np.asarray(img.dataobj), img.affine)
    both.set_qform(img.affine, code=1)
    both.set_sform(shifted, code=1)
    both.to_filename(str(d / "qsform.nii"))
    _write_image(ball.astype(np.uint8), d / "mask.nii")
    _write_image((ct_arr.astype(np.int32) + 1024).astype(np.int16), d / "ct_raw.nii")  # HU + 1024: not rescaled
    # --- lesions
    _write_image(_ball(center=(32, 32, 38)).astype(np.uint8), d / "mask_top.nii.gz")  # at the last slices
    _write_image(_ball(center=(32, 32, 38)).astype(np.uint8), d / "mask_top.nii")
    lung = np.zeros(SHAPE, np.uint8)
    lung[40:50, 40:50, 10:16] = 1  # on lung, beside the ball
    _write_image(lung, d / "mask_lung.nii.gz")
    dot = np.zeros(SHAPE, np.uint8)
    dot[CENTER] = 1
    _write_image(dot, d / "mask_dot.nii.gz")
    # --- RTSTRUCT on the DICOM CT
    ks = range(10, 31)
    squares = [_square(ct, k, (27.5, 27.5), (37.5, 37.5)) for k in ks]
    rois = {
        "ok": squares,
        "short20": [s if n == 0 else s[:2] for n, s in enumerate(squares)],
        "short1": [s[:2] if n == 0 else s for n, s in enumerate(squares)],
        "star": [_pentagram(ct, k, (32.0, 32.0), 8.0) for k in ks],
        "overlap": [
            c
            for k in ks
            for c in (_square(ct, k, (24.5, 24.5), (34.5, 34.5)), _square(ct, k, (29.5, 29.5), (39.5, 39.5)))
        ],
        "half_out": [_square(ct, k, (-10.5, 27.5), (10.5, 37.5)) for k in ks],  # 10 of 21 columns outside
    }
    for name, contours in rois.items():
        write_rtstruct(d / f"rs_{name}.dcm", sources, {"GTV": contours})
    import pydicom

    for name, change in {"bad3": lambda c: c[:-1], "nan": lambda c: [*c[:4], "NaN", *c[5:]]}.items():
        ds = pydicom.dcmread(str(d / "rs_ok.dcm"))
        item = ds.ROIContourSequence[0].ContourSequence[3]
        item.ContourData = change(list(item.ContourData))
        ds.save_as(str(d / f"rs_{name}.dcm"), enforce_file_format=True)
    (d / "afile").write_text("x")
    os.symlink(d / "nowhere", d / "dangling")
    return {"d": d, "w": random_weights, "ct": ct}


S = "score --image {d}/ct.nrrd --mask {d}/mask.nii.gz --weights {w} --out {out}"
R = "score --image {d}/ct.nii --mask {d}/mask.nii --weights {w} --out {out} --geometry reference"
DCM = "score --image {d}/dcm --mask {d}/rs_ok.dcm --weights {w} --out {out}"


def _image(cmd, path):
    return re.sub(r"--image \S+", f"--image {path}", cmd)


def _mask(cmd, path):
    return re.sub(r"--mask \S+", f"--mask {path}", cmd)


# (id, issue row, command, exit code, message regex on stderr: the file and the number)
REFUSALS = [
    (
        "dicom-gantry-tilt",
        1,
        _image(S, "{d}/dcm_tilt"),
        2,
        r"dcm_tilt: .*tilted by 20\.0 degrees.*s039\.dcm lies 28\.4 mm",
    ),
    ("dicom-in-plane-drift", 1, _image(S, "{d}/dcm_drift"), 2, r"dcm_drift: .*s017\.dcm lies 3\.0 mm beside"),
    ("dicom-no-position", 2, _image(S, "{d}/dcm_noipp"), 2, r"dcm_noipp/s000\.dcm: has no usable ImagePositionPatient"),
    ("dicom-one-slice", 3, _image(S, "{d}/dcm_one"), 2, r"dcm_one: the CT has 1 voxel\(s\) .*along axis k"),
    (
        "nrrd-one-slice",
        3,
        _mask(_image(S, "{d}/ct_one.nrrd"), "{d}/mask_one.nii.gz"),
        2,
        r"ct_one\.nrrd: the CT has 1 voxel\(s\) of 2 mm along axis k \(2 mm\).*96%",
    ),
    (
        "reference-one-slice",
        3,
        _mask(_image(R, "{d}/ct_one.nii"), "{d}/mask_one.nii"),
        2,
        r"ct_one\.nii: the CT has 1 voxel\(s\) of 2 mm along axis k \(2 mm\).*96% of the cube would be 0 HU fill",
    ),
    ("nifti-pixdim-zero", 5, _image(S, "{d}/pixdim0.nii"), 2, r"pixdim0\.nii: .*pixdim\[3\] = 0 mm"),
    ("nifti-pixdim-nan", 5, _image(S, "{d}/pixdimnan.nii"), 2, r"pixdimnan\.nii: .*pixdim\[1\] = nan mm"),
    ("nifti-pixdim-negative", 5, _image(S, "{d}/pixdimneg.nii"), 2, r"pixdimneg\.nii: .*pixdim\[2\] = -1 mm"),
    ("nifti-pixdim-absurd", 5, _image(S, "{d}/pixdimhuge.nii"), 2, r"pixdimhuge\.nii: .*pixdim\[3\] = 1e\+30 mm"),
    ("nifti-pixdim-zero-reference", 5, _image(R, "{d}/pixdim0.nii"), 2, r"pixdim0\.nii: .*pixdim\[3\] = 0 mm"),
    ("nifti-qform-sform-apart", 6, _image(S, "{d}/qsform.nii"), 2, r"qsform\.nii: .*qform .*sform .*30\.0 mm apart"),
    ("nifti-qform-sform-reference", 6, _image(R, "{d}/qsform.nii"), 2, r"qsform\.nii: .*30\.0 mm apart"),
    (
        "rtstruct-two-point-contours",
        7,
        _mask(DCM, "{d}/rs_short20.dcm"),
        2,
        r"rs_short20\.dcm, ROI 'GTV': 20 of 21 contours have fewer than 3 points",
    ),
    (
        "rtstruct-self-crossing",
        7,
        _mask(DCM, "{d}/rs_star.dcm"),
        2,
        r"rs_star\.dcm, ROI 'GTV': 21 contour\(s\) cross themselves .*differs .* in \d+ of \d+ voxels \(\d+\.\d%\)",
    ),
    (
        "rtstruct-overlapping-parts",
        7,
        _mask(DCM, "{d}/rs_overlap.dcm"),
        2,
        r"rs_overlap\.dcm, ROI 'GTV': 0 contour\(s\) cross themselves and 21 pair\(s\) of contours overlap",
    ),
    (
        "nifti-slope-zero-physical",
        9,
        _image(S, "{d}/slope0.nii"),
        2,
        r"slope0\.nii: .*scl_slope = 0 with scl_inter = -1024.*1024 HU",
    ),
    (
        "nifti-slope-zero-reference",
        9,
        _image(R, "{d}/slope0.nii"),
        2,
        r"slope0\.nii: .*scl_slope = 0 with scl_inter = -1024",
    ),
    (
        "dicom-modality-mr",
        10,
        _image(S, "{d}/dcm_mr"),
        2,
        r"dcm_mr/s000\.dcm: this DICOM image has Modality 'MR', not 'CT'",
    ),
    (
        "rtstruct-contourdata-not-triples",
        18,
        _mask(DCM, "{d}/rs_bad3.dcm"),
        2,
        r"rs_bad3\.dcm, ROI 'GTV': contour 4: ContourData holds 11 numbers, not a multiple of 3",
    ),
    (
        "rtstruct-contourdata-nan",
        18,
        _mask(DCM, "{d}/rs_nan.dcm"),
        2,
        r"rs_nan\.dcm, ROI 'GTV': contour 4: .*NaN .*point 2 of 4",
    ),
    (
        "dicom-slice-of-another-size",
        18,
        _image(S, "{d}/dcm_size"),
        2,
        r"dcm_size/s005\.dcm: a slice of 32 x 32 pixels .*has 64 x 64",
    ),
    (
        "dicom-slice-turned",
        18,
        _image(S, "{d}/dcm_turned"),
        2,
        r"dcm_turned/s008\.dcm: its ImageOrientationPatient differs .*10\.00 degrees",
    ),
    (
        "out-dangling-symlink",
        18,
        S.replace("--out {out}", "--out {d}/dangling"),
        2,
        r"--out .*dangling is a symbolic link to .*nowhere, which does not exist",
    ),
    ("dicom-sr-is-a-file", 18, DCM + " --dicom-sr {d}/afile", 2, r"--dicom-sr .*afile is a file"),
]


@pytest.mark.parametrize("kind,row,command,rc,message", REFUSALS, ids=[k[0] for k in REFUSALS])
def test_cli_refuses_geometry_it_does_not_understand(world, tmp_path, capsys, kind, row, command, rc, message):
    out = tmp_path / "out"
    out.mkdir()
    (out / "earlier.json").write_bytes(EARLIER)
    before_world = sorted(p.name for p in world["d"].iterdir())
    got = main(command.format(d=world["d"], w=world["w"], out=out).split())
    err = capsys.readouterr().err
    assert got == rc, err
    assert re.search(message, err, re.S), err
    assert "Traceback" not in err and 'File "' not in err
    assert err.count("error:") == 1
    assert _snapshot(out) == {"earlier.json": EARLIER}  # no partial output; the earlier result untouched
    assert sorted(p.name for p in world["d"].iterdir()) == before_world  # nothing written beside the inputs


# (id, issue row, command, warning regex: in the JSON and on stderr, extra check on the result JSON)
WARNINGS = [
    (
        "cube-runs-off-the-scan",
        4,
        _mask(S, "{d}/mask_top.nii.gz"),
        r"The 50 mm cube runs off the scan: \d+\.\d% of its samples lie outside the CT",
        lambda r: _fill_in_warning(r) == _fill_above_the_scan(r["center_ras"][2]) and r["coverage"] == 1.0,
    ),
    (
        "lesion-reaches-the-scan-edge",
        4,
        _mask(S, "{d}/mask_top.nii.gz"),
        r"The lesion 'mask_top\.nii\.gz' reaches the edge of the scan \(voxel index k = 39 of a 64 x 64 x 40 CT\)",
        lambda r: True,
    ),
    (
        "reference-lesion-reaches-the-scan-edge",
        4,
        _mask(R, "{d}/mask_top.nii"),
        r"The lesion 'mask_top\.nii' reaches the edge of the scan \(voxel index k = 39 of a 64 x 64 x 40 CT\)",
        lambda r: r["geometry"] == "reference",
    ),
    (
        "rtstruct-half-outside-the-field-of-view",
        4,
        _mask(DCM, "{d}/rs_half_out.dcm"),
        r"47\.6% of the lesion 'GTV' in rs_half_out\.dcm lies outside the CT's field of view",
        lambda r: abs(r["coverage"] - 11 / 21) < 1e-9 and r["mask_voxels"] == 11 * 10 * 21,
    ),
    (
        "rtstruct-one-two-point-contour",
        7,
        _mask(DCM, "{d}/rs_short1.dcm"),
        r"rs_short1\.dcm, ROI 'GTV': 1 of 21 contours have fewer than 3 points \(contour 1\).*left out",
        lambda r: r["mask_voxels"] == 10 * 10 * 20,
    ),
    (
        "one-voxel-lesion",
        8,
        _mask(S, "{d}/mask_dot.nii.gz"),
        r"The lesion 'mask_dot\.nii\.gz' is tiny: 1 voxel\(s\), 2\.0 mm3",
        lambda r: r["mask_voxels"] == 1,
    ),
    (
        "mask-on-lung",
        None,
        _mask(S, "{d}/mask_lung.nii.gz"),
        r"The mean CT value under the lesion 'mask_lung\.nii\.gz' is -800 HU \(below -500 HU\)",
        lambda r: r["mask_voxels"] == 600,
    ),
    (
        "reference-mode-raw-values",
        9,
        _image(R, "{d}/ct_raw.nii"),
        r"The image values range from 24 to 1064, which does not look like a CT in Hounsfield units",
        lambda r: r["geometry"] == "reference",
    ),
]


def _fill_above_the_scan(center_s):
    """Share of cube samples above the CT's top face (S = -30 + 2 x 39.5 = 49 mm), from the cube's definition
    (samples 1 mm apart, index 25 on the centre; METHOD.md §2.3): the lesion is centred in-plane, so no other
    face is crossed."""
    return f"{sum(center_s + c - 25 > 49.0 for c in range(50)) / 50:.1%}"


def _fill_in_warning(result):
    (text,) = [w for w in result["warnings"] if w.startswith("The 50 mm cube runs off the scan")]
    return re.search(r"(\d+\.\d%) of its samples", text).group(1)


@pytest.mark.parametrize("kind,row,command,warning,check", WARNINGS, ids=[k[0] for k in WARNINGS])
def test_cli_scores_with_the_warning(world, tmp_path, capsys, kind, row, command, warning, check):
    out = tmp_path / "out"
    out.mkdir()
    (out / "earlier.json").write_bytes(EARLIER)
    got = main((command + " --case-id probe").format(d=world["d"], w=world["w"], out=out).split())
    err = capsys.readouterr().err
    assert got == 0, err
    result = json.loads((out / "probe.dfm50n.json").read_text(encoding="utf-8"))
    assert any(re.search(warning, w) for w in result["warnings"]), result["warnings"]
    assert re.search(warning, err), err
    assert check(result), result
    assert (out / "earlier.json").read_bytes() == EARLIER
    assert "Traceback" not in err


def test_the_good_inputs_score_without_geometry_warnings(world, tmp_path, capsys):
    """The baseline of every probe above: the same CT (as .nrrd and as DICOM + RTSTRUCT) draws none of them."""
    for n, cmd in enumerate((S, DCM)):
        out = tmp_path / f"o{n}"
        assert main((cmd + " --case-id good").format(d=world["d"], w=world["w"], out=out).split()) == 0
        result = json.loads((out / "good.dfm50n.json").read_text(encoding="utf-8"))
        assert [w for w in result["warnings"] if "FCIB weights" not in w and "DEMO" not in w] == [], result
        assert result["coverage"] == 1.0
    capsys.readouterr()


def test_dicom_tilt_numbers_match_the_geometry(world):
    """The tilt's numbers from the headers alone: 20 degrees; the last slice (k = 39) sits 39 x 2 mm x tan 20
    = 28.39 mm beside the position the first slice and the normal give it."""
    from DFM50NLib.io.integrity import check_dicom_series

    files = sorted(str(p) for p in (world["d"] / "dcm_tilt").iterdir())
    expected = 39 * 2.0 * np.tan(np.radians(20.0))
    with pytest.raises(InputError, match=rf"tilted by 20\.0 degrees.*lies {expected:.1f} mm"):
        check_dicom_series(files, world["d"] / "dcm_tilt")
    check_dicom_series(sorted(str(p) for p in (world["d"] / "dcm").iterdir()), world["d"] / "dcm")  # untouched


def test_small_crossing_is_scored_with_its_count(world, tmp_path):
    """A bow-tie twist in one outline crosses itself but both fill rules agree on it: read, with a warning that
    counts it (0 voxels filled differently); that slice holds the bow-tie's voxels as matplotlib's point-in-path
    test finds them, the other slices the plain squares'."""
    import pydicom
    from matplotlib.path import Path as MplPath

    from DFM50NLib import io

    ct = io.read_volume(world["d"] / "dcm")
    src = pydicom.dcmread(str(world["d"] / "rs_ok.dcm"))
    item = src.ROIContourSequence[0].ContourSequence[0]
    k = 10  # the first contour's slice
    # corners 3 and 4 swapped (a bow-tie), nudged so that no edge passes exactly through a voxel centre
    corners = np.array([[27.5, 27.3, k], [37.5, 27.5, k], [27.8, 37.5, k], [37.3, 37.5, k]])
    pts = _lps(world["ct"], corners)
    item.ContourData = [float(v) for v in pts.ravel()]
    src.save_as(str(tmp_path / "rs_twist.dcm"), enforce_file_format=True)
    twisted = io.read_mask(tmp_path / "rs_twist.dcm", reference=ct)
    plain = io.read_mask(world["d"] / "rs_ok.dcm", reference=ct)
    (note,) = twisted.meta["warnings"]
    assert re.search(r"1 contour\(s\) cross themselves and 0 pair\(s\).* in 0 of \d+ voxels \(0\.0%\)", note), note
    assert not plain.meta["warnings"]
    ii, jj = np.meshgrid(np.arange(SHAPE[0]), np.arange(SHAPE[1]), indexing="ij")
    inside = MplPath(corners[:, :2]).contains_points(np.column_stack([ii.ravel(), jj.ravel()])).reshape(ii.shape)
    a, b = _on_ct_grid(twisted, ct), _on_ct_grid(plain, ct)
    np.testing.assert_array_equal(a[:, :, k], inside)
    assert 0 < int(inside.sum()) < 100 == int(b[:, :, k].sum())
    np.testing.assert_array_equal(np.delete(a, k, axis=2), np.delete(b, k, axis=2))


def _on_ct_grid(vol, ct):
    out = np.zeros(ct.shape, bool)
    o = np.round(ct.world_to_ijk(vol.ijk_to_world(np.zeros((1, 3))))[0]).astype(int)
    a = np.asarray(vol.array) > 0
    out[o[0] : o[0] + a.shape[0], o[1] : o[1] + a.shape[1], o[2] : o[2] + a.shape[2]] = a
    return out


def test_read_only_file_system_is_named(world, tmp_path, monkeypatch):
    """--out on a read-only mount (a tmpfs mounted read-only in a user namespace): the message says so, not
    'permission denied'. Where user namespaces are not allowed, the same check runs on a statvfs that reports
    the read-only flag."""
    argv = S.format(d=world["d"], w=world["w"], out="{ro}/out").split()
    unshare = shutil.which("unshare")
    allowed = unshare and subprocess.run([unshare, "-rm", "true"], capture_output=True, check=False).returncode == 0
    if allowed:
        ro = tmp_path / "ro"
        ro.mkdir()
        script = f"mount -t tmpfs -o ro tmpfs {ro} && exec {sys.executable} -m DFM50NLib " + " ".join(argv).format(
            ro=ro
        )
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
        run = subprocess.run([unshare, "-rm", "sh", "-c", script], capture_output=True, text=True, env=env, check=False)
        assert run.returncode == 2, run.stderr
        assert f"--out {ro}/out: {ro} is on a read-only file system" in run.stderr, run.stderr
        assert "permission denied" not in run.stderr.lower() and "Traceback" not in run.stderr
        assert not any(ro.iterdir())
    else:  # pragma: no cover - containers without user namespaces
        from DFM50NLib.cli.common import check_output_dir

        real = os.statvfs

        class ReadOnly:
            def __init__(self, path):
                self.f_flag = real(path).f_flag | os.ST_RDONLY

        monkeypatch.setattr(os, "statvfs", ReadOnly)
        with pytest.raises(InputError, match=rf"{tmp_path}/out: {tmp_path} is on a read-only file system"):
            check_output_dir(tmp_path / "out")


def test_mask_on_another_grid_partly_outside_the_ct_counts_as_unseen(world):
    """A label map on a finer grid, straddling the CT's i = 0 face: the part beyond the CT is measured on the
    mask's own voxels (centres at CT index i = -6, -5.5, ..., 5.5: the 11 below -0.5 are outside), the
    coverage counts it as unseen and the warning says how much."""
    from DFM50NLib.geometry.cube import cube_stats, extract_cube
    from DFM50NLib.geometry.mask import prepare_mask
    from DFM50NLib.scoring.guards import physical_warnings

    ct = world["ct"]
    origin = ct.ijk_to_world(np.array([[-6.0, 28.0, 18.0]]))[0]
    mask = Volume.from_geometry(np.ones((24, 20, 10), np.uint8), (0.5, 0.5, 1.0), origin, LPS_DIRECTION, name="fine")
    pm = prepare_mask(mask, ct)
    assert pm.outside_share == pytest.approx(11 / 24, abs=1e-12)
    cube = extract_cube(ct, pm, ct.ijk_to_world(np.array([[3.0, 32.5, 20.0]]))[0])
    assert cube_stats(cube, pm)["coverage"] == pytest.approx(13 / 24, abs=1e-12)  # every CT-grid voxel is in the cube
    notes = physical_warnings(ct, pm, 0.0, "'fine'")
    assert any(n.startswith("45.8% of the lesion 'fine' lies outside the CT's field of view") for n in notes), notes


@pytest.mark.parametrize("slope,inter", [(0.0, 0.0), (float("nan"), float("nan")), (float("nan"), 0.0)])
def test_unset_scaling_reads_the_same_in_both_geometries(world, tmp_path, slope, inter):
    """scl_slope 0 or NaN without an intercept means "no scaling" to every reader: accepted, and ITK (physical
    geometry) and nibabel (reference geometry) give the stored values unchanged."""
    from DFM50NLib import io
    from DFM50NLib.io.integrity import check_image_file
    from DFM50NLib.io.nifti_source import read_nifti_source

    path = _patch_nifti(world["d"] / "ct.nii", tmp_path / "unset.nii", scl_slope=slope, scl_inter=inter)
    check_image_file(path)
    expected = _ct_array()
    np.testing.assert_array_equal(np.asarray(io.read_volume(path).array), expected)
    np.testing.assert_array_equal(read_nifti_source(path).values(), expected)


def test_crossings_agree_with_testing_every_pair_of_edges():
    """The sweep in polygon_fill.crossings (edges sorted by x, only overlapping boxes tested, in memory blocks)
    finds the same crossing outline pairs as the plain test of every pair of edges, on random outlines."""
    from itertools import combinations

    from DFM50NLib.io.polygon_fill import crossings

    def side(p, q, r):
        return np.sign((q[0] - p[0]) * (r[1] - p[1]) - (q[1] - p[1]) * (r[0] - p[0]))

    def every_pair(polys):
        edges = [(n, p[k], p[(k + 1) % len(p)]) for n, p in enumerate(polys) for k in range(len(p))]
        return {
            tuple(sorted((m, n)))
            for (m, a, b), (n, c, d) in combinations(edges, 2)
            if side(a, b, c) * side(a, b, d) < 0 and side(c, d, a) * side(c, d, b) < 0
        }

    rng = np.random.default_rng(1)
    found = 0
    for _ in range(40):
        polys = [rng.random((int(rng.integers(3, 9)), 2)) * 10 for _ in range(int(rng.integers(1, 4)))]
        expected = every_pair(polys)
        assert {(a, b) for a, b, _ in crossings(polys)} == expected
        assert {(a, b) for a, b, _ in crossings(polys, block=3)} == expected
        found += len(expected)
    assert found > 20  # the random outlines do cross, often
