"""The browser app in Chromium: draw a lesion on real Slicer core, score it, and check the page against the
Slicer panel's own Logic run here on the same segment; stale rows, Cancel, report downloads, safe defaults."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest
from test_io import write_seg_nrrd
from web_harness import (
    add_segment_and_paint,
    browser_page,
    choose_effect,
    choose_option,
    open_demo,
    paint,
    painted_voxels,
    require_browser,
    score_and_wait,
    wait_for_views,
    web_server,
)

from DFM50NLib.errors import InputError
from DFM50NLib.scene.params import CHOICE_LABELS

STROKE = [(0.40, 0.45), (0.55, 0.45), (0.55, 0.55), (0.40, 0.55)]  # fractions of the axial view


@pytest.fixture()
def page_on_server(tmp_path, random_weights):
    require_browser()
    with web_server(tmp_path, "--weights", str(random_weights)) as url, browser_page(url) as page:
        yield page


def logic_score_of(seg_file, random_weights, tmp_path, segment_name):
    """The Slicer panel's Logic on a fresh slicer-core scene: the demo CT + the segmentation the page saved."""
    import slicer_harness as sh

    from DFM50NLib.io import read_volume
    from DFM50NLib.io.demo_case import write_demo_case
    from DFM50NLib.scene.logic import DFM50NLogic

    scene = sh.fresh_scene()
    ct_path, _ = write_demo_case(tmp_path / "demo_again")
    ct_node = sh.add_volume(read_volume(ct_path), "demo_phantom", scene)
    seg = sh.slicer.modules.segmentations.logic().LoadSegmentationFromFile(str(seg_file), False, "lesion")
    assert seg is not None, f"Slicer could not read {seg_file}"
    sid = seg.GetSegmentation().GetSegmentIdBySegmentName(segment_name)
    assert sid, f"no segment '{segment_name}' in the saved segmentation"
    logic = DFM50NLogic(scene)
    voxels = int(logic.maskOnCTGrid(ct_node, seg, sid).voxels)
    clinical = {"smoking": True, "spiculated": False}  # as chosen on the page; short axis measured
    result = logic.scoreSegment(
        ct_node, seg, sid, weights=str(random_weights), checkDependencies=False, clinical=clinical
    )
    return result, voxels


def test_drawn_lesion_scores_as_the_logic_scores_it_and_reports_and_goes_stale(
    page_on_server, random_weights, tmp_path
):
    page = page_on_server
    open_demo(page)
    add_segment_and_paint(page, STROKE)
    for field, param, value in (("smoking", "smoking", "yes"), ("spiculated", "spiculation", "no")):
        choose_option(page, field, CHOICE_LABELS[param][value])  # clicked by the Slicer panel's words
    page_score = score_and_wait(page)
    segment_name = page.inner_text("#dfm-result-segment")
    assert segment_name != "demo lesion"  # the panel follows the segment being edited
    page_voxels = int(page.get_attribute("#dfm-lesion", "data-voxels"))
    assert page_voxels > 100, "the drag painted (almost) nothing"
    shown = page.inner_text("#dfm-score-value")
    assert shown == f"{float(page_score):.4f}"
    assert page.inner_text("#dfm-risk") in ("high OLM risk", "low OLM risk")
    assert page.is_visible("#dfm-demo")  # the bundled classifier is the DEMO one
    assert page.locator("#dfm-dicom-sr").count() == 0  # a NIfTI CT: no DICOM SR to reference it

    with page.expect_download() as dl:
        page.click("#dfm-download-seg")
    seg_file = tmp_path / "lesion.seg.nrrd"
    dl.value.save_as(seg_file)
    result, voxels = logic_score_of(seg_file, random_weights, tmp_path, segment_name)
    assert voxels == page_voxels == result.mask_voxels
    assert float(page_score) == result.score  # exact: the page shows repr() of the same float
    assert result.combined_probability is not None
    assert float(page.get_attribute("#dfm-combined", "data-combined")) == result.combined_probability

    # the report of that score, both formats
    with page.expect_download() as dl:
        page.click("#dfm-report-html")
    html = dl.value.path().read_text(encoding="utf-8")
    assert result.case_id == f"demo_phantom_{segment_name}"
    assert f"{result.score:.3f}" in html
    assert result.case_id in html
    with page.expect_download() as dl:
        page.click("#dfm-report-pdf")
    pdf = tmp_path / "r.pdf"
    dl.value.save_as(pdf)
    assert pdf.read_bytes()[:5] == b"%PDF-"
    text = subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True, text=True, check=True).stdout
    assert f"{result.score:.3f}" in text
    assert result.case_id in text.replace("\n", "")

    # one row, fresh; an edit of the scored segment turns it stale
    rows = page.locator("#dfm-table tr[data-stale]")
    assert rows.count() == 1 and rows.first.get_attribute("data-stale") == "0"
    choose_effect(page, "mdi-eraser")  # scoring put the editor back on 'no tool'; erase part of the stroke
    left = paint(page, STROKE[:2])
    assert 0 <= left < page_voxels
    page.wait_for_selector("#dfm-table tr[data-stale='1']", timeout=30_000)
    assert "stale" in rows.first.inner_text()


def test_cancel_stops_a_running_score_and_writes_nothing(page_on_server):
    page = page_on_server
    open_demo(page)
    page.click("#dfm-score")
    page.wait_for_selector("#dfm-progress", state="visible")
    page.click("#dfm-cancel")
    page.wait_for_selector("#dfm-message:has-text('Cancelled')", timeout=240_000)
    assert page.locator("#dfm-result").count() == 0
    assert page.locator("#dfm-table").count() == 0
    assert not page.is_disabled("#dfm-score")  # ready again


def test_without_weights_the_page_says_how_and_cases_open_by_upload_and_from_data(tmp_path):
    require_browser()
    from DFM50NLib.io import read_volume
    from DFM50NLib.io.demo_case import write_demo_case

    ct_path, mask_path = write_demo_case(tmp_path / "data" / "case1")
    missing = tmp_path / "nowhere" / "model_weights.torch"
    with (
        web_server(tmp_path, "--data", str(tmp_path / "data"), env={"DFM50N_FCIB_WEIGHTS": str(missing)}) as url,
        browser_page(url) as page,
    ):
        text = page.inner_text("#dfm-weights-missing")
        assert str(missing) in text
        assert "(1) --weights PATH" in text and "(2) environment variable" in text and "(3) download" in text
        # upload: the CT file goes through the page into the server's private folder
        page.set_input_files("#dfm-upload", str(ct_path))
        page.wait_for_selector("#dfm-case:has-text('demo_phantom.nii.gz')")
        wait_for_views(page)
        assert page.is_disabled("#dfm-score")  # no weights, no scoring
        # an existing lesion (the demo's label map) becomes a segment of the open CT, voxel for voxel
        page.set_input_files("#dfm-upload-lesion", str(mask_path))
        page.wait_for_selector("#dfm-segment-voxels:not([data-voxels='0'])")
        expected = int((read_volume(mask_path).array > 0).sum())
        assert painted_voxels(page) == expected
        # a Slicer .seg.nrrd: every segment comes in under its own name; choosing one shows its voxels
        mask = read_volume(mask_path)
        node = np.zeros(mask.shape, np.uint8)
        node[5:9, 6:11, 2:5] = 1  # 4 x 5 x 3 voxels, away from the lesion
        layer = ((np.asarray(mask.array) > 0) * 1 + node * 2).astype(np.uint8)
        segs = [("GTV", 1, 0), ("Node 4R", 2, 0)]
        seg_path = write_seg_nrrd(tmp_path / "lesions.seg.nrrd", [layer], mask.ijk_to_ras, segs)
        page.set_input_files("#dfm-upload-lesion", str(seg_path))
        titles = "() => (window.trame.state.get('dfm_segments') || []).map(s => s.title)"
        page.wait_for_function(f"({titles})().includes('Node 4R')")
        assert page.evaluate(titles)[-2:] == ["GTV", "Node 4R"]
        page.locator(".v-field:has(#dfm-segment)").click()
        page.locator(".v-overlay .v-list-item").filter(has_text="Node 4R").first.click()
        page.wait_for_selector("#dfm-segment-voxels[data-voxels='60']")
        page.wait_for_selector(".v-overlay .v-list-item", state="detached")  # its list gone before the next one
        assert painted_voxels(page) == 4 * 5 * 3
        # --data: only the files under it are offered, by relative name
        page.locator(".v-field:has(#dfm-data-file)").click()
        items = page.locator(".v-overlay .v-list-item")
        items.first.wait_for()
        assert sorted(items.all_inner_texts()) == ["case1/demo_phantom.nii.gz", "case1/demo_phantom_mask.nii.gz"]
        items.filter(has_text="case1/demo_phantom.nii.gz").first.click()
        page.wait_for_selector("#dfm-case:has-text('case1/demo_phantom.nii.gz')")


def test_zipped_dicom_series_upload_scores_as_the_command_line_scores_the_folder(tmp_path, random_weights):
    """A DICOM series zipped as a PACS export gives it, uploaded through the page, plus a label-map lesion:
    the same score, bit for bit, as `score_case` on the unzipped folder and the same file."""
    require_browser()
    import zipfile

    from test_dicomseg import ct_datasets

    from DFM50NLib.io import read_volume
    from DFM50NLib.io.demo_case import write_demo_case
    from DFM50NLib.scoring.pipeline import score_case

    ct_path, mask_path = write_demo_case(tmp_path / "case")
    folder = tmp_path / "dicom"
    folder.mkdir()
    for k, ds in enumerate(ct_datasets(read_volume(ct_path))):  # full CT headers, frame of reference included
        ds.save_as(str(folder / f"ct{k:03d}.dcm"), enforce_file_format=True)
    archive = tmp_path / "ct_series.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(folder.iterdir()):
            zf.write(f, f"export/DICOM/{f.name}")  # nested, as exports are: unzipped flat by the server
    threads = {"OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}  # the server's torch, as this process's
    with web_server(tmp_path, "--weights", str(random_weights), env=threads) as url, browser_page(url) as page:
        page.set_input_files("#dfm-upload", str(archive))
        page.wait_for_selector("#dfm-case:has-text('ct_series.zip')")
        wait_for_views(page)
        page.set_input_files("#dfm-upload-lesion", str(mask_path))
        page.wait_for_selector("#dfm-segment-voxels:not([data-voxels='0'])")
        page_score = float(score_and_wait(page))
        page_voxels = int(page.get_attribute("#dfm-lesion", "data-voxels"))
        with page.expect_download() as dl:  # offered because the CT came from DICOM
            page.click("#dfm-dicom-sr")
        sr_zip = tmp_path / "sr.zip"
        dl.value.save_as(sr_zip)
    want = score_case(folder, mask_path, weights=random_weights)
    assert page_voxels == want.mask_voxels
    assert page_score == want.score
    # the SR + SEG read back: the same score, referencing the uploaded series' own images
    import highdicom as hd
    import pydicom

    with zipfile.ZipFile(sr_zip) as zf:
        names = sorted(zf.namelist())
        zf.extractall(tmp_path / "sr")
    assert [n.rsplit(".", 2)[-2:] for n in names] == [["seg", "dcm"], ["sr", "dcm"]]
    sr = hd.sr.srread(str(tmp_path / "sr" / next(n for n in names if n.endswith(".sr.dcm"))))
    (group,) = sr.content.get_volumetric_roi_measurement_groups()
    got = {m.name.meaning: m.value for m in group.get_measurements()}
    assert got["DFM50N probability of occult lymph node metastasis"] == pytest.approx(want.score, abs=1e-9)
    series = {str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in folder.iterdir()}
    seg_uid = str(pydicom.dcmread(tmp_path / "sr" / next(n for n in names if n.endswith(".seg.dcm"))).SOPInstanceUID)
    evidence = {
        str(ref.ReferencedSOPInstanceUID)
        for study in sr.CurrentRequestedProcedureEvidenceSequence
        for ser in study.ReferencedSeriesSequence
        for ref in ser.ReferencedSOPSequence
    }
    assert evidence == series | {seg_uid}  # every uploaded CT image and the lesion SEG


def test_data_folder_serves_only_its_own_files(tmp_path):
    from DFM50NLib.web.files import DataFolder

    root = tmp_path / "data"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "ct.nii.gz").write_bytes(b"x")
    (root / "notes.txt").write_text("x")
    secret = tmp_path / "secret.nii.gz"
    secret.write_bytes(b"x")
    (root / "link.nii.gz").symlink_to(secret)
    data = DataFolder(root)
    assert data.list() == ["link.nii.gz", "sub/ct.nii.gz"]
    assert data.resolve("sub/ct.nii.gz") == (root / "sub" / "ct.nii.gz").resolve()
    for bad in ("../secret.nii.gz", str(secret), "link.nii.gz", "sub/../../secret.nii.gz", "missing.nii.gz"):
        with pytest.raises(InputError):
            data.resolve(bad)
    with pytest.raises(InputError, match="No --data folder"):
        DataFolder(None).resolve("sub/ct.nii.gz")


def test_uploads_are_size_limited_private_and_unzipped_flat(tmp_path):
    import io
    import stat
    import zipfile

    from DFM50NLib.web.files import UploadFolder

    up = UploadFolder(max_mb=1)
    try:
        assert stat.S_IMODE(up.path.stat().st_mode) == 0o700
        with pytest.raises(InputError, match="over the server's limit"):
            up.save("big.nii.gz", b"0" * (1024 * 1024 + 1))
        p = up.save("../../etc/ct.nii.gz", b"abc")
        assert p.parent.parent == up.path and p.name == "ct.nii.gz"
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            z.writestr("../../evil/1.dcm", b"a")
            z.writestr("series/2.dcm", b"b")
        folder = up.save("series.zip", buf.getvalue())
        files = sorted(f.name for f in folder.iterdir())
        assert files == ["00000_1.dcm", "00001_2.dcm"] and folder.parent.parent == up.path
        with pytest.raises(InputError, match="NIfTI"):
            up.save("report.pdf", b"%PDF")
    finally:
        up.cleanup()
    assert not up.path.exists()


def test_web_command_binds_localhost_by_default():
    from DFM50NLib.cli import build_parser

    args = build_parser().parse_args(["web"])
    assert (args.host, args.port, args.data) == ("127.0.0.1", 8080, None)
