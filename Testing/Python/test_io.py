"""File I/O: geometry survives every format, DICOM series, Slicer .seg.nrrd, and clear refusals."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
from test_mask_center import rotation

from DFM50NLib import io
from DFM50NLib.errors import InputError
from DFM50NLib.geometry.synthetic import sphere_case
from DFM50NLib.geometry.volume import Volume
from DFM50NLib.io.demo_case import write_demo_case

# direction columns = RAS of i, j, k: oblique and left-handed (a flip), anisotropic spacing
DIRECTION = rotation((1, 2, 3), 25) @ np.diag([-1.0, 1.0, 1.0])


@pytest.fixture(scope="module")
def phantom():
    return sphere_case(
        (5.0, -12.0, 40.0), 6.0, shape=(40, 36, 14), spacing=(0.7, 0.8, 2.5), direction_ras=DIRECTION, seed=7
    )


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha"])
def test_round_trip_keeps_voxels_and_geometry(phantom, tmp_path, suffix):
    ct, mask = phantom
    path = io.write_volume(ct, tmp_path / f"ct{suffix}")
    back = io.read_volume(path)
    assert back.array.dtype == np.int16
    np.testing.assert_array_equal(back.array, ct.array)
    np.testing.assert_allclose(back.ijk_to_ras, ct.ijk_to_ras, atol=1e-4)
    assert back.name == "ct" and not list(tmp_path.glob("*.part*"))
    m = io.read_mask(io.write_volume(mask, tmp_path / f"mask{suffix}"))
    np.testing.assert_array_equal(m.array, mask.array)


def test_nifti_geometry_as_nibabel_sees_it(phantom, tmp_path):
    """Independent reader: nibabel's RAS affine and [i, j, k] data must equal the Volume's."""
    import nibabel as nib

    ct, _ = phantom
    path = io.write_volume(ct, tmp_path / "ct.nii.gz")
    img = nib.load(str(path))
    np.testing.assert_allclose(img.affine, ct.ijk_to_ras, atol=1e-4)
    np.testing.assert_array_equal(np.asarray(img.dataobj), ct.array)
    vol = io.read_volume(path)
    # a file written by nibabel (not by SimpleITK) reads back with nibabel's affine
    nib.save(
        nib.Nifti1Image(np.asarray(img.dataobj)[::-1].copy(), img.affine @ _flip_i(ct.shape[0])),
        str(tmp_path / "nib.nii.gz"),
    )
    other = io.read_volume(tmp_path / "nib.nii.gz")
    np.testing.assert_allclose(other.ijk_to_world([0, 0, 0]), vol.ijk_to_world([ct.shape[0] - 1, 0, 0]), atol=1e-4)
    assert other.array[0, 3, 5] == vol.array[-1, 3, 5]


def _flip_i(n):
    f = np.eye(4)
    f[0, 0], f[0, 3] = -1, n - 1
    return f


def test_array_is_a_view_not_a_copy(phantom, tmp_path):
    import gc

    ct, _ = phantom
    vol = io.read_volume(io.write_volume(ct, tmp_path / "ct.mha"))
    arr = vol.array
    assert not arr.flags.owndata and not arr.flags.writeable
    del vol
    gc.collect()
    _ = [np.full(10**6, 123, np.int16) for _ in range(10)]  # reuse freed memory if the image were gone
    np.testing.assert_array_equal(arr, ct.array)


def write_dicom_series(vol: Volume, folder, series_uid, first=0):
    """A CT series written slice by slice with SimpleITK (LPS tags from the volume's geometry)."""
    import SimpleITK as sitk

    folder.mkdir(parents=True, exist_ok=True)
    img = io.to_sitk(vol)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    d = img.GetDirection()
    for k in range(img.GetDepth()):
        s = img[:, :, k]
        tags = {
            "0008|0060": "CT",
            "0020|000d": "1.2.826.0.1.3680043.2.1125.1",
            "0020|000e": series_uid,
            "0020|0037": "\\".join(f"{v:.10f}" for v in (d[0], d[3], d[6], d[1], d[4], d[7])),
            "0020|0032": "\\".join(f"{v:.6f}" for v in img.TransformIndexToPhysicalPoint((0, 0, k))),
            "0020|0013": str(k + 1),
            "0008|0018": f"{series_uid}.{k + 1}",
            "0028|0030": f"{img.GetSpacing()[1]:.6f}\\{img.GetSpacing()[0]:.6f}",
            "0018|0050": f"{img.GetSpacing()[2]:.6f}",
        }
        for key, value in tags.items():
            s.SetMetaData(key, value)
        writer.SetFileName(str(folder / f"s{first + k:03d}.dcm"))
        writer.Execute(s)


def test_dicom_series_folder(tmp_path):
    ct, _ = sphere_case(
        (0.0, 0.0, 0.0),
        5.0,
        shape=(32, 28, 6),
        spacing=(0.7, 0.7, 2.5),
        direction_ras=np.diag([-1.0, -1.0, 1.0]),
        seed=1,
    )
    write_dicom_series(ct, tmp_path / "dcm", "1.2.826.0.1.3680043.2.1125.2")
    vol = io.read_volume(tmp_path / "dcm")
    np.testing.assert_array_equal(vol.array, ct.array)
    np.testing.assert_allclose(vol.ijk_to_ras, ct.ijk_to_ras, atol=1e-4)
    # a second series in the same folder: refused, both UIDs named; then chosen explicitly
    write_dicom_series(ct, tmp_path / "dcm", "1.2.826.0.1.3680043.2.1125.3", first=100)
    with pytest.raises(InputError, match=r"2 DICOM series.*1125\.2.*1125\.3"):
        io.read_volume(tmp_path / "dcm")
    chosen = io.read_volume(tmp_path / "dcm", series_uid="1.2.826.0.1.3680043.2.1125.3")
    np.testing.assert_array_equal(chosen.array, ct.array)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="No DICOM series"):
        io.read_volume(tmp_path / "empty")


def test_refusals_name_the_problem(tmp_path):
    import SimpleITK as sitk

    with pytest.raises(InputError, match=r"File not found: .*nope\.nii\.gz"):
        io.read_volume(tmp_path / "nope.nii.gz")
    (tmp_path / "junk.nii.gz").write_bytes(gzip.compress(b"not an image at all" * 10))
    with pytest.raises(InputError, match=r"Cannot read .*junk\.nii\.gz"):
        io.read_volume(tmp_path / "junk.nii.gz")
    sitk.WriteImage(sitk.Image([8, 8], sitk.sitkInt16), str(tmp_path / "flat.nrrd"))
    with pytest.raises(InputError, match="2-D"):
        io.read_volume(tmp_path / "flat.nrrd")
    sitk.WriteImage(sitk.Image([8, 8, 8, 3], sitk.sitkInt16), str(tmp_path / "time.nii.gz"))
    with pytest.raises(InputError, match="4-D"):
        io.read_volume(tmp_path / "time.nii.gz")
    sitk.WriteImage(sitk.Image([8, 8, 8], sitk.sitkVectorFloat32, 3), str(tmp_path / "rgb.mha"))
    with pytest.raises(InputError, match="3 values per voxel"):
        io.read_volume(tmp_path / "rgb.mha")
    a = np.zeros((8, 8, 40), np.float32)
    a[2, 3, 37] = np.nan
    io.write_volume(Volume.from_geometry(a, (1, 1, 1)), tmp_path / "nan.nii.gz")
    with pytest.raises(InputError, match=r"NaN.*\(2, 3, 37\)"):
        io.read_volume(tmp_path / "nan.nii.gz")
    with pytest.raises(InputError, match="use one of"):
        io.write_volume(Volume.from_geometry(a, (1, 1, 1)), tmp_path / "x.png")


def test_ct_intensity_check_warns_for_non_hu_images(phantom):
    ct, _ = phantom
    assert io.check_ct_intensities(ct) == []
    mr = ct.with_array((np.asarray(ct.array, float) + 1024) * 0.4)  # values 0..~430: MR-like
    notes = io.check_ct_intensities(mr)
    assert len(notes) == 1 and "Hounsfield" in notes[0]
    raw = ct.with_array(np.asarray(ct.array, np.int32) + 1024 + 3000)  # unrescaled 12-bit-style values
    assert len(io.check_ct_intensities(raw)) == 1


def write_seg_nrrd(path, layers, ijk_to_ras, segments):
    """A Slicer-style .seg.nrrd written by hand: LPS space, raw uint8, 3-D or 4-D (list of layers)."""
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ ijk_to_ras
    dirs = " ".join("(" + ",".join(f"{v:.6f}" for v in lps[:3, c]) + ")" for c in range(3))
    data = np.stack(layers) if len(layers) > 1 else layers[0]
    four = len(layers) > 1
    sizes = " ".join(str(s) for s in ((len(layers),) if four else ()) + layers[0].shape)
    header = [
        "NRRD0004",
        "type: unsigned char",
        f"dimension: {4 if four else 3}",
        "space: left-posterior-superior",
        f"sizes: {sizes}",
        f"space directions: {'none ' if four else ''}{dirs}",
        f"kinds: {'list ' if four else ''}domain domain domain",
        "endian: little",
        "encoding: raw",
        "space origin: (" + ",".join(f"{v:.6f}" for v in lps[:3, 3]) + ")",
    ]
    for n, (name, value, layer) in enumerate(segments):
        header += [
            f"Segment{n}_ID:=Segment_{n + 1}",
            f"Segment{n}_Name:={name}",
            f"Segment{n}_LabelValue:={value}",
            f"Segment{n}_Layer:={layer}",
            f"Segment{n}_Color:=0.5 0.5 0.5",
        ]
    # file order: layer fastest (4-D), then i, j, k; data axes are (layer,) i, j, k
    path.write_bytes(("\n".join(header) + "\n\n").encode() + data.tobytes(order="F"))
    return path


def test_lesion_segments_of_a_seg_nrrd_by_name_and_none_for_a_label_map(phantom, tmp_path):
    ct, mask = phantom
    other = np.zeros_like(mask.array)
    other[:5, :5, :3] = 1
    overlap = np.zeros_like(mask.array)
    overlap[10:30, 10:30, 4:10] = 1
    layers = [(mask.array * 2 + other * 5).astype(np.uint8), (overlap * 3).astype(np.uint8)]
    segs = [("lesion", 2, 0), ("vessel", 5, 0), ("lobe", 3, 1)]
    got = io.lesion_segments(write_seg_nrrd(tmp_path / "s.seg.nrrd", layers, ct.ijk_to_ras, segs))
    assert [name for name, _ in got] == ["lesion", "vessel", "lobe"]
    for (_, vol), want in zip(got, (mask.array, other, overlap)):
        np.testing.assert_array_equal(vol.array, want)  # 0/1, each on its own, overlaps kept
    same = [("lesion", 2, 0), ("lesion", 5, 0)]
    with pytest.raises(InputError, match=r"segment names repeat \(lesion, lesion\)"):
        io.lesion_segments(write_seg_nrrd(tmp_path / "d.seg.nrrd", layers[:1], ct.ijk_to_ras, same))
    io.write_volume(mask, tmp_path / "m.nii.gz")
    assert io.lesion_segments(tmp_path / "m.nii.gz") is None  # a label map: the caller splits its values


def test_seg_nrrd_by_segment_name_and_label(phantom, tmp_path):
    ct, mask = phantom
    other = np.zeros_like(mask.array)
    other[:5, :5, :3] = 1
    layer0 = (mask.array * 2 + other * 5).astype(np.uint8)  # one layer, two segments
    p = write_seg_nrrd(tmp_path / "one.seg.nrrd", [layer0], ct.ijk_to_ras, [("lesion", 2, 0), ("vessel", 5, 0)])
    seg = io.read_mask(p, segment="lesion")
    np.testing.assert_array_equal(seg.array, mask.array)
    np.testing.assert_allclose(seg.ijk_to_ras, ct.ijk_to_ras, atol=1e-5)
    by_label = io.read_mask(p, label=5)
    np.testing.assert_array_equal(by_label.array, layer0)  # label map; prepare_mask picks the value
    with pytest.raises(InputError, match=r"no segment named 'tumor'.*'lesion' \(label 2, layer 0\)"):
        io.read_mask(p, segment="tumor")
    with pytest.raises(InputError, match="holds 2 segments"):
        io.read_mask(p)

    # two layers (overlapping segments): 4-D file
    overlap = np.zeros_like(mask.array)
    overlap[10:30, 10:30, 4:10] = 1
    p4 = write_seg_nrrd(
        tmp_path / "two.seg.nrrd",
        [mask.array.astype(np.uint8), overlap * 3],
        ct.ijk_to_ras,
        [("lesion", 1, 0), ("lobe", 3, 1)],
    )
    np.testing.assert_array_equal(io.read_mask(p4, segment="lobe").array, overlap)
    np.testing.assert_array_equal(io.read_mask(p4, segment="lesion").array, mask.array)
    np.testing.assert_array_equal(io.read_mask(p4, label=3).array, overlap * 3)
    with pytest.raises(InputError, match="not a Slicer .seg.nrrd"):
        io.read_mask(io.write_volume(mask, tmp_path / "m.nrrd"), segment="lesion")


def test_demo_case_is_small_and_deterministic(tmp_path):
    from DFM50NLib.geometry.center import find_center
    from DFM50NLib.geometry.cube import cube_stats, extract_cube
    from DFM50NLib.geometry.mask import prepare_mask

    ct_a, mask_a = write_demo_case(tmp_path / "a")
    ct_b, _ = write_demo_case(tmp_path / "b")
    assert ct_a.name == "demo_phantom.nii.gz"
    assert ct_a.stat().st_size + mask_a.stat().st_size < 3e6
    ct, mask = io.read_volume(ct_a), io.read_mask(mask_a)
    np.testing.assert_array_equal(ct.array, io.read_volume(ct_b).array)
    np.testing.assert_allclose(ct.spacing, [0.7, 0.7, 2.5], atol=1e-6)
    pm = prepare_mask(mask, ct)
    assert 3000 < pm.volume_mm3 < 4500 and pm.components_dropped == 0  # ~2 cm lesion (4/3 pi 11*9*8.5)
    cube = extract_cube(ct, pm, find_center(pm), "LPS")
    assert cube_stats(cube, pm)["coverage"] == 1.0
    assert io.check_ct_intensities(ct) == []
    lesion = np.median(cube.ct[cube.mask > 0])  # +40 HU inside, a partial-volume rim at the edge
    assert 0 < lesion < 80 and np.median(cube.ct[cube.mask == 0]) < -600  # a lesion in the lung
