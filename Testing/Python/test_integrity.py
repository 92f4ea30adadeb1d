"""Incomplete or absurd image files are refused before SimpleITK zero-fills them (issue: silent wrong score)."""

from __future__ import annotations

import gzip
import os
import re
import struct

import numpy as np
import pytest
from test_io import write_dicom_series

from DFM50NLib import io
from DFM50NLib.errors import InputError
from DFM50NLib.geometry.synthetic import sphere_case
from DFM50NLib.io import integrity


@pytest.fixture(scope="module")
def ct():
    vol, _ = sphere_case((0.0, 0.0, 0.0), 5.0, shape=(24, 22, 10), spacing=(0.8, 0.8, 2.0), seed=3)
    return vol


def _cut(path, fraction):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return len(data)


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz", ".nrrd", ".mha"])
def test_intact_files_pass_and_truncated_ones_are_refused(ct, tmp_path, suffix):
    path = io.write_volume(ct, tmp_path / f"ct{suffix}")
    integrity.check_image_file(path)  # the intact file passes
    np.testing.assert_array_equal(io.read_volume(path).array, ct.array)
    _cut(path, 0.6)
    with pytest.raises(InputError, match=re.escape(f"ct{suffix}: ") + "(incomplete|corrupt)") as err:
        io.read_volume(path)
    if suffix == ".nrrd":  # gzip-encoded voxel data: the declared byte count is named
        assert f"declares {24 * 22 * 10 * 2:,} bytes" in str(err.value)
    if suffix == ".nii.gz":
        assert f"declares {352 + 24 * 22 * 10 * 2:,} bytes" in str(err.value)


def test_truncated_nifti_message_has_the_byte_counts(ct, tmp_path):
    path = io.write_volume(ct, tmp_path / "ct.nii")
    full = _cut(path, 0.5)
    with pytest.raises(InputError) as err:
        io.read_volume(path)
    msg = str(err.value)
    assert f"declares {full:,} bytes" in msg and f"holds {full // 2:,}" in msg, msg


def test_gzip_crc_damage_is_refused(ct, tmp_path):
    """Same length, one byte of the CRC trailer changed: only a full decompression with the CRC check sees it."""
    path = io.write_volume(ct, tmp_path / "ct.nii.gz")
    data = bytearray(path.read_bytes())
    data[-8] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match=r"corrupt gzip data.*CRC"):
        io.read_volume(path)
    # 64 zero bytes in the middle of the stream: SimpleITK reads it without a word (different voxels)
    good = io.write_volume(ct, tmp_path / "ct2.nii.gz")
    data = bytearray(good.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = bytes(64)
    good.write_bytes(bytes(data))
    with pytest.raises(InputError, match=r"ct2\.nii\.gz: corrupt gzip data"):
        io.read_volume(good)


def test_huge_declared_size_is_refused_before_allocation(tmp_path):
    """A 352-byte NIfTI declaring 2000^3 int16 (16 GB): refused from the header, nothing allocated."""
    import nibabel as nib

    hdr = nib.Nifti1Header()
    hdr.set_data_shape((2000, 2000, 2000))
    hdr.set_data_dtype(np.int16)
    raw = hdr.binaryblock + b"\0" * 4
    (tmp_path / "big.nii").write_bytes(raw)
    with gzip.open(tmp_path / "big.nii.gz", "wb") as f:
        f.write(raw)
    for name in ("big.nii", "big.nii.gz"):
        with pytest.raises(InputError, match=r"2000 x 2000 x 2000 = 8,000,000,000 voxels"):
            io.read_volume(tmp_path / name)
    # 1200^3 (below the bound) but the file holds 352 bytes: refused by the length check
    hdr.set_data_shape((1200, 1200, 1200))
    (tmp_path / "mid.nii").write_bytes(hdr.binaryblock + b"\0" * 4)
    with pytest.raises(InputError, match=rf"declares {352 + 1200**3 * 2:,} bytes.*holds 352 "):
        io.read_volume(tmp_path / "mid.nii")


def test_detached_nhdr_and_mhd_data_files_are_checked(ct, tmp_path):
    raw = np.ascontiguousarray(ct.array.T).astype("<i2").tobytes()
    (tmp_path / "ct.raw").write_bytes(raw[: len(raw) // 2])
    (tmp_path / "ct.nhdr").write_text(
        "NRRD0004\ntype: short\ndimension: 3\nsizes: 24 22 10\nendian: little\nencoding: raw\n"
        "space: left-posterior-superior\nspace directions: (0.8,0,0) (0,0.8,0) (0,0,2)\nspace origin: (0,0,0)\n"
        "data file: ct.raw\n"
    )
    with pytest.raises(InputError, match=rf"ct\.raw: incomplete file.*declares {len(raw):,}.*holds {len(raw) // 2:,}"):
        io.read_volume(tmp_path / "ct.nhdr")
    (tmp_path / "ct.mhd").write_text(
        "ObjectType = Image\nNDims = 3\nDimSize = 24 22 10\nElementType = MET_SHORT\nElementSpacing = 0.8 0.8 2\n"
        "ElementDataFile = ct.raw\n"
    )
    with pytest.raises(InputError, match=rf"declares {len(raw):,}.*holds {len(raw) // 2:,}"):
        io.read_volume(tmp_path / "ct.mhd")
    (tmp_path / "ct.raw").write_bytes(raw)  # complete: both read
    np.testing.assert_array_equal(io.read_volume(tmp_path / "ct.nhdr").array, ct.array)
    np.testing.assert_array_equal(io.read_volume(tmp_path / "ct.mhd").array, ct.array)


def test_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "x.nii.gz"
    os.mkfifo(fifo)
    with pytest.raises(InputError, match=r"x\.nii\.gz: is a FIFO"):
        io.read_volume(fifo)
    with pytest.raises(InputError, match=r"is a FIFO"):
        io.read_mask(tmp_path / "x.nii.gz")
    seg = tmp_path / "m.seg.nrrd"
    os.mkfifo(seg)
    with pytest.raises(InputError, match=r"m\.seg\.nrrd: is a FIFO"):
        io.read_mask(seg)


def test_dicom_series_with_a_missing_or_duplicated_slice_is_refused(ct, tmp_path):
    folder = tmp_path / "dcm"
    write_dicom_series(ct, folder, "1.2.826.0.1.3680043.2.1125.9")
    np.testing.assert_array_equal(io.read_volume(folder).array, ct.array)
    (folder / "s004.dcm").unlink()  # slice 5 of 10 gone: one 4 mm gap among 2 mm gaps
    with pytest.raises(
        InputError, match=r"uneven slice spacing: 1 gap\(s\) differ from the usual 2\.000 mm.*4\.000 mm"
    ):
        io.read_volume(folder)
    write_dicom_series(ct, folder, "1.2.826.0.1.3680043.2.1125.9")  # restored ...
    (folder / "dup.dcm").write_bytes((folder / "s003.dcm").read_bytes())  # ... plus a copy of one slice
    with pytest.raises(InputError, match=r"1 slice position\(s\) occur twice among 11 files"):
        io.read_volume(folder)


def test_dicom_series_declaring_too_many_voxels_is_refused_before_reading(ct, tmp_path):
    """Rows x Columns x slices over 2^31 (a corrupt header): refused from the headers, before GDCM allocates."""
    import pydicom

    folder = tmp_path / "dcm"
    write_dicom_series(ct, folder, "1.2.826.0.1.3680043.2.1125.9")
    for f in sorted(folder.glob("*.dcm")):
        ds = pydicom.dcmread(f)
        ds.Rows = ds.Columns = 60000
        ds.save_as(f)
    with pytest.raises(InputError, match=r"declares 60000 x 60000 x 10 = 36,000,000,000 voxels"):
        io.read_volume(folder)


def test_nifti2_and_big_endian_headers_are_parsed(ct, tmp_path):
    import nibabel as nib

    data = np.asarray(ct.array, dtype=np.int16)
    nib.save(nib.Nifti2Image(data, ct.ijk_to_ras), str(tmp_path / "n2.nii"))
    integrity.check_image_file(tmp_path / "n2.nii")
    _cut(tmp_path / "n2.nii", 0.7)
    with pytest.raises(InputError, match="incomplete file"):
        integrity.check_image_file(tmp_path / "n2.nii")
    hdr = nib.Nifti1Header(endianness=">")
    hdr.set_data_shape(data.shape)
    hdr.set_data_dtype(np.int16)
    hdr.set_qform(ct.ijk_to_ras)
    (tmp_path / "be.nii").write_bytes(hdr.binaryblock + b"\0" * 4 + data.astype(">i2").tobytes(order="F"))
    assert struct.unpack(">i", (tmp_path / "be.nii").read_bytes()[:4])[0] == 348
    integrity.check_image_file(tmp_path / "be.nii")
    _cut(tmp_path / "be.nii", 0.7)
    with pytest.raises(InputError, match="incomplete file"):
        integrity.check_image_file(tmp_path / "be.nii")


def test_reference_mode_reports_upstreams_padding_flag_beside_touches_border(tmp_path):
    """Upstream's `touched_border` (cube padded off the image) is not the project's `touches_border` (mask on a
    cube face): a small lesion at the scan's edge pads without touching; a central one does neither."""
    import nibabel as nib

    from DFM50NLib.scoring.pipeline import prepare_case, upstream_padded

    ii, jj, kk = np.ogrid[:60, :60, :60]
    ct = np.full((60, 60, 60), -800, np.int16)
    for name, centre in (("edge", (6, 30, 30)), ("middle", (30, 30, 30))):
        ball = (ii - centre[0]) ** 2 + (jj - centre[1]) ** 2 + (kk - centre[2]) ** 2 <= 9
        ct_i = ct.copy()
        ct_i[ball] = 40
        nib.save(nib.Nifti1Image(ct_i, np.eye(4)), str(tmp_path / f"{name}.nii.gz"))
        nib.save(nib.Nifti1Image(ball.astype(np.uint8), np.eye(4)), str(tmp_path / f"{name}_m.nii.gz"))
    edge = prepare_case(tmp_path / "edge.nii.gz", tmp_path / "edge_m.nii.gz", geometry="reference")
    middle = prepare_case(tmp_path / "middle.nii.gz", tmp_path / "middle_m.nii.gz", geometry="reference")
    assert edge.stats["cube_padded"] is True and edge.stats["touches_border"] is False
    assert middle.stats["cube_padded"] is False and middle.stats["touches_border"] is False
    assert any("touched_border" in w for w in edge.warnings) and not any("touched_border" in w for w in middle.warnings)
    assert upstream_padded((25, 25, 25), (50, 50, 50)) is False and upstream_padded((25, 25, 26), (50, 50, 50))


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd"])
def test_header_only_mode_catches_a_cut_gzip_by_its_trailer(ct, tmp_path, suffix, monkeypatch):
    """decompress=False (for a reader that inflates and CRC-checks the stream itself): the ISIZE trailer of a
    cut file is not the declared size."""
    path = io.write_volume(ct, tmp_path / f"ct{suffix}")
    real = integrity._gzip_length
    with monkeypatch.context() as m:
        m.setattr(integrity, "_gzip_length", lambda *a: pytest.fail("intact file inflated"))
        integrity.check_image_file(path, decompress=False)  # the trailer agrees: nothing inflated
    assert integrity._gzip_length is real
    _cut(path, 0.6)
    with pytest.raises(InputError, match="incomplete gzip stream"):  # mismatch: inflated after all
        integrity.check_image_file(path, decompress=False)


def test_nrrd_header_fields_keyvalues_and_length(tmp_path):
    """One parser for the integrity check and the .seg.nrrd reader: fields by lower-cased name, key/value
    pairs as written, and the header's byte length (where attached data begin)."""
    from DFM50NLib.io import nrrd_header

    head = (
        b"NRRD0005\n# a comment: with a colon\nType: uint8\nDimension: 3\nsizes: 2 3 4\nencoding: raw\n"
        b"Segment0_Name:=Tumor: left lower lobe\nSegment0_LabelValue:=3\n\n"
    )
    path = tmp_path / "s.seg.nrrd"
    path.write_bytes(head + bytes(24))
    h = nrrd_header.read(path)
    assert h.fields == {"type": "uint8", "dimension": "3", "sizes": "2 3 4", "encoding": "raw"}
    assert h.keyvalues == {"Segment0_Name": "Tumor: left lower lobe", "Segment0_LabelValue": "3"}
    assert h.length == len(head)
    (tmp_path / "x.nrrd").write_bytes(b"P5 not nrrd\n")
    assert nrrd_header.read(tmp_path / "x.nrrd") is None
