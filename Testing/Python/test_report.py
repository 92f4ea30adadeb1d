"""Reports: self-contained HTML and A4 PDF, rendered by real viewers (chromium, poppler) when installed."""

from __future__ import annotations

import base64
import math
import re
import shutil
import subprocess
import tempfile

import numpy as np
import pytest

from DFM50NLib.errors import InputError
from DFM50NLib.geometry.volume import Volume
from DFM50NLib.report import views as rv
from DFM50NLib.report.writer import report_html_minimal, write_cohort_summary, write_report
from DFM50NLib.scoring.result import Result

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def chest_phantom(
    lesion_center=(-60.0, 15.0, 20.0),
    semi=(14.0, 9.0, 10.0),
    spin_deg=30.0,
    spacing=(0.9, 0.9, 2.5),
    shape=(300, 230, 44),
    direction=None,
    seed=1,
):
    """A small chest-like CT (body, lungs, spine, heart, vessels) with an ellipsoidal, lobulated lesion."""
    from scipy import ndimage

    sp = np.asarray(spacing, float)
    d = np.eye(3) if direction is None else np.asarray(direction, float)
    mid = (np.asarray(shape) - 1) / 2.0
    origin = np.array([0.0, 0.0, 20.0]) - (d * sp) @ mid
    grid = Volume.from_geometry(np.zeros(shape, np.int16), sp, origin, d)
    ijk = np.indices(shape, dtype=np.float32).reshape(3, -1).T
    ras = grid.ijk_to_world(ijk).reshape(*shape, 3)
    x, y, z = ras[..., 0], ras[..., 1], ras[..., 2]
    ct = np.full(shape, -1000.0, np.float32)
    ct[(x / 140) ** 2 + ((y - 5) / 100) ** 2 <= 1] = 30.0  # body
    ct[(x / 128) ** 2 + ((y - 5) / 88) ** 2 <= 1] = 0.0
    for side in (-1, 1):
        ct[((x - side * 62) / 52) ** 2 + ((y - 12) / 72) ** 2 + ((z - 20) / 140) ** 2 <= 1] = -860.0  # lungs
    ct[((x - 12) / 40) ** 2 + ((y - 35) / 35) ** 2 <= 1] = 40.0  # heart
    ct[(x / 16) ** 2 + ((y + 62) / 16) ** 2 <= 1] = 450.0  # vertebra
    ct[((x + 3) / 9) ** 2 + ((y - 2) / 9) ** 2 <= 1] = 45.0  # aorta
    rng = np.random.default_rng(seed)
    for _ in range(40):  # vessels: thin tubes along S
        vx, vy = rng.uniform(-100, 100), rng.uniform(-60, 70)
        lung = ((abs(vx) - 62) / 52) ** 2 + ((vy - 12) / 72) ** 2 < 0.8
        if lung:
            ct[((x - vx) ** 2 + (y - vy) ** 2) <= rng.uniform(1.0, 2.5) ** 2] = -50.0
    c = np.asarray(lesion_center, float)
    rot = np.array(
        [
            [math.cos(math.radians(spin_deg)), -math.sin(math.radians(spin_deg)), 0],
            [math.sin(math.radians(spin_deg)), math.cos(math.radians(spin_deg)), 0],
            [0, 0, 1],
        ]
    )
    local = (ras - c) @ rot
    q = np.sqrt(((local / np.asarray(semi)) ** 2).sum(-1))
    mask = q <= 1.0
    ang = np.arctan2(local[..., 1], local[..., 0])
    lobulated = q <= 1.0 + 0.12 * np.cos(7 * ang)  # lobulated outline in the CT, mask is the ellipsoid
    ct[lobulated] = 35.0
    ct += ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), 1.2) * 25
    ct = grid.with_array(np.clip(ct, -1024, 3071).astype(np.int16), name="chest")
    return ct, grid.with_array(mask.astype(np.uint8), name="lesion"), c


def make_result(case_id="Case-001", score=0.312, demo=True, **kw) -> Result:
    r = Result(
        case_id=case_id,
        score=score,
        threshold=0.25,
        risk_label="high OLM risk" if score >= 0.25 else "low OLM risk",
        high_risk=score >= 0.25,
        classifier_is_demo=demo,
        classifier_name="dfm50n-demo-v1",
        classifier_sha256="3f" * 32,
        fcib_weights_sha256="a1" * 32,
        software_version="0.1.0",
        geometry="physical",
        orientation="LPS",
        center_method="dt_peak",
        center_ras=[0.0, 0.0, 0.0],
        center_lps=[0.0, 0.0, 0.0],
        cube_to_ras=[],
        mask_volume_mm3=5278.0,
        mask_voxels=2606,
        cube_mask_voxels=5270,
        coverage=1.0,
        touches_border=False,
        components_dropped=1,
        timings={"read": 0.41, "mask": 0.05, "center": 0.02, "cube": 0.08, "forward": 3.2, "classify": 0.001},
        warnings=(["DEMO — not the published DFM50N classifier"] if demo else [])
        + [
            "1 smaller disconnected mask component(s) were ignored; only the largest (6-connected) "
            "component was scored."
        ],
        created="2024-05-17T09:31:00+00:00",
        image_path="/data/cases/Case-001/ct.nii.gz",
        mask_path="/data/cases/Case-001/lesion.nii.gz",
    )
    for k, v in kw.items():
        setattr(r, k, v)
    return r


@pytest.fixture(scope="module")
def case():
    return build_case()


def build_case(**phantom):
    from DFM50NLib.geometry.center import find_center
    from DFM50NLib.geometry.cube import extract_cube
    from DFM50NLib.geometry.diameters import axial_diameters
    from DFM50NLib.geometry.mask import prepare_mask
    from DFM50NLib.geometry.volume import ras_to_lps
    from DFM50NLib.scoring.clinical import apply_clinical

    ct, mask, _ = chest_phantom(**phantom)
    pm = prepare_mask(mask, ct)
    center = find_center(pm, "dt_peak")
    cube = extract_cube(ct, pm, center, "LPS")
    diam = axial_diameters(pm)
    result = make_result(
        center_ras=[float(v) for v in center],
        center_lps=[float(v) for v in ras_to_lps(center)],
        cube_to_ras=cube.cube_to_ras.tolist(),
        mask_volume_mm3=pm.volume_mm3,
        mask_voxels=pm.voxels,
        cube_mask_voxels=int(cube.mask.sum()),
        long_axis_mm=diam.long_mm,
    )
    apply_clinical(result, smoking="yes", spiculated="no", measured_short_axis_cm=diam.short_cm)
    return dict(ct=ct, pm=pm, cube=cube, diam=diam, result=result)


def data_pngs(text):
    return [base64.b64decode(m) for m in re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)]


def test_html_is_self_contained_with_images_and_numbers(case, tmp_path):
    paths = write_report(
        case["result"], tmp_path, ct=case["ct"], prepared_mask=case["pm"], cube=case["cube"], formats=("html",)
    )
    assert set(paths) == {"report_html"} and paths["report_html"].name == "Case-001_report.html"
    text = paths["report_html"].read_text(encoding="utf-8")
    pngs = data_pngs(text)
    assert len(pngs) >= 4  # score bar, CT planes, cube slices, measurement
    assert all(p.startswith(PNG_MAGIC) for p in pngs)
    assert "0.312" in text and "HIGH OLM RISK" in text
    assert "DEMO — not the published DFM50N classifier" in text
    assert "Research use only" in text
    assert f"{case['result'].combined_probability:.3f}" in text
    assert "3f" * 32 in text and "a1" * 32 in text  # full hashes
    assert not re.search(r'(src|href)="(https?:|//|file:)', text)  # nothing fetched from elsewhere


def test_html_escapes_all_text(tmp_path):
    r = make_result(case_id='<script>alert("x")</script>&', warnings=["<b>bold</b> & co"])
    path = write_report(r, tmp_path, formats=("html",))["report_html"]
    text = path.read_text(encoding="utf-8")
    assert "<script>" not in text and "<b>bold</b>" not in text
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;" in text
    assert "/" not in path.name.replace("_report.html", "")
    assert "<script>" not in report_html_minimal(r)


def test_reference_mode_cube_only(case, tmp_path):
    r = make_result(geometry="reference", orientation="file-ijk")
    paths = write_report(r, tmp_path, cube=case["cube"])
    text = paths["report_html"].read_text(encoding="utf-8")
    assert len(data_pngs(text)) == 2  # score bar + cube slices, no CT, no measurement
    assert "only the cube is shown" in text
    assert paths["report_pdf"].read_bytes().startswith(b"%PDF")


def test_nothing_but_the_result(tmp_path):
    paths = write_report(make_result(demo=False), tmp_path)
    text = paths["report_html"].read_text(encoding="utf-8")
    assert len(data_pngs(text)) == 1 and "DEMO" not in text
    assert paths["report_pdf"].stat().st_size > 1000


def test_unknown_format_is_input_error(tmp_path):
    with pytest.raises(InputError, match="html"):
        write_report(make_result(), tmp_path, formats=("docx",))


def test_minimal_html_for_slicer():
    text = report_html_minimal(make_result(score=0.1, risk_label="low OLM risk", high_risk=False))
    assert "0.100" in text and "low OLM risk" in text and "Research use only" in text and "DEMO" in text


def test_cohort_summary(tmp_path):
    results = [make_result(f"C{i:02d}", s, demo=(i == 2)) for i, s in enumerate([0.05, 0.2, 0.31, 0.7, 0.26])]
    paths = write_cohort_summary(results, tmp_path)
    assert paths["cohort_html"].name == "cohort_summary.html" and paths["cohort_pdf"].name == "cohort_summary.pdf"
    text = paths["cohort_html"].read_text(encoding="utf-8")
    assert len(data_pngs(text)) == 1
    assert all(f"C{i:02d}" in text for i in range(5))
    assert "DEMO — not the published DFM50N classifier (1 of 5 cases)" in text
    assert "3 high risk" in text
    with pytest.raises(InputError):
        write_cohort_summary([], tmp_path)


# ---- geometry of the pictures, against independent computations


def test_ct_planes_follow_radiological_convention_on_oblique_grid():
    c = np.array([10.0, -20.0, 5.0])
    d = np.array([[math.cos(0.3), 0, math.sin(0.3)], [0, 1, 0], [-math.sin(0.3), 0, math.cos(0.3)]])  # oblique
    grid = Volume.from_geometry(
        np.zeros((90, 90, 90), np.float32), (1.1, 1.1, 1.1), c - (d * 1.1) @ np.array([44.5] * 3), d
    )
    ras = grid.ijk_to_world(np.indices(grid.shape).reshape(3, -1).T).reshape(*grid.shape, 3)
    ct = grid.with_array((ras[..., 0] * 3 + ras[..., 1] * 5 + ras[..., 2] * 7).astype(np.float32))  # linear in RAS
    views = rv.ct_planes(c, ct=ct, fov_mm=40, pixel_mm=1.0)
    ax, co, sa = views
    n = ax.image.shape[0]
    rr, cc = np.meshgrid(np.arange(n) - (n - 1) / 2, np.arange(n) - (n - 1) / 2, indexing="ij")
    hu0 = c @ np.array([3, 5, 7])
    # axial: columns toward patient Left (-R), rows toward Posterior (-A)
    np.testing.assert_allclose(ax.image, hu0 - 3 * cc - 5 * rr, atol=1e-2)
    # coronal: columns toward L, rows toward Inferior
    np.testing.assert_allclose(co.image, hu0 - 3 * cc - 7 * rr, atol=1e-2)
    # sagittal: columns toward Posterior, rows toward Inferior
    np.testing.assert_allclose(sa.image, hu0 - 5 * cc - 7 * rr, atol=1e-2)
    assert ax.letters == ("R", "L", "A", "P")


def test_cube_outline_and_lesion_in_planes(case):
    views = rv.ct_planes(
        case["result"].center_ras,
        ct=case["ct"],
        mask_vol=case["pm"].volume,
        cube_to_ras=case["cube"].cube_to_ras,
        fov_mm=120,
        pixel_mm=0.5,
    )
    for v in views:
        assert v.cube.sum() * 0.25 == pytest.approx(50 * 50, rel=0.03)  # a 50 mm square cross-section
        assert v.lesion.any()
        r, c = np.argwhere(v.cube).mean(axis=0)
        assert (r, c) == pytest.approx(v.center_rc, abs=1.5)  # cube centred on the plane centre
    # axial cross-section of the lesion: an ellipse ~ pi * 14 * 9 mm^2 (mask semi-axes), within the voxelisation
    assert views[0].lesion.sum() * 0.25 == pytest.approx(math.pi * 14 * 9, rel=0.12)


def test_cube_views_are_the_samples_shown_radiologically():
    from DFM50NLib.geometry.cube import cube_to_ras_matrix

    for code in ("LPS", "RAS", "SPL", "LAS"):
        m = cube_to_ras_matrix([1.0, 2.0, 3.0], code)
        idx = np.indices((50, 50, 50)).reshape(3, -1).T
        ras = (idx @ m[:3, :3].T + m[:3, 3]).reshape(50, 50, 50, 3)
        cube_ct = (ras @ np.array([1.0, 100.0, 10000.0])).astype(np.float64)  # encodes R, A, S
        views = {v.name: v for v in rv.cube_views(cube_ct, None, m)}
        assert set(views) == {"axial", "coronal", "sagittal"}
        ax = views["axial"].image
        assert ax[0, 0] > ax[0, -1]  # patient Right on the image left
        assert ax[0, 0] > ax[-1, 0]  # Anterior on top
        sa = views["sagittal"].image
        assert sa[0, 0] > sa[0, -1] and sa[0, 0] > sa[-1, 0]  # Anterior left, Superior top
        # exactly the cube's own values, no resampling: the centre sample is cube[25, 25, 25]
        r, c = views["axial"].center_rc
        assert ax[int(r), int(c)] == cube_ct[25, 25, 25]


# ---- real viewers


def grey_fraction(img):
    """Share of mid/dark grey pixels (CT in lung window), as opposed to white paper and coloured text."""
    rgb = img[..., :3].astype(float)
    return float(((rgb.max(-1) < 0.8) & (rgb.max(-1) - rgb.min(-1) < 0.06)).mean())


def _tool(name):
    return shutil.which(name)


def test_pdf_has_score_text_and_images(case, tmp_path):
    paths = write_report(
        case["result"], tmp_path, ct=case["ct"], prepared_mask=case["pm"], cube=case["cube"], formats=("pdf",)
    )
    data = paths["report_pdf"].read_bytes()
    assert data.startswith(b"%PDF") and b"/Subtype /Image" in data
    if not _tool("pdftotext"):
        pytest.skip("pdftotext (poppler-utils) not installed")
    text = subprocess.run(
        ["pdftotext", "-layout", str(paths["report_pdf"]), "-"], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert "0.312" in text and "HIGH OLM RISK" in text and "Research use only" in text
    assert "Case-001" in text and "DEMO" in text


def test_pdf_converts_to_png_pages(case, tmp_path):
    if not _tool("pdftoppm"):
        pytest.skip("pdftoppm (poppler-utils) not installed")
    from matplotlib.image import imread

    pdf = write_report(
        case["result"], tmp_path, ct=case["ct"], prepared_mask=case["pm"], cube=case["cube"], formats=("pdf",)
    )["report_pdf"]
    subprocess.run(["pdftoppm", "-png", "-r", "60", str(pdf), str(tmp_path / "page")], check=True, timeout=120)
    pages = sorted(tmp_path.glob("page*.png"))
    assert len(pages) == 2
    for page in pages:
        img = imread(page)
        assert img.shape[0] > img.shape[1]  # portrait
        assert img.shape[0] / img.shape[1] == pytest.approx(297 / 210, rel=0.02)  # A4
        assert grey_fraction(img) > 0.08  # CT pixels: the images are there, not a blank page


def test_html_renders_in_headless_chromium(case, tmp_path):
    browser = _tool("chromium") or _tool("chromium-browser") or _tool("google-chrome")
    if not browser:
        pytest.skip("chromium not installed (Debian package `chromium`)")
    from matplotlib.image import imread

    html = write_report(
        case["result"], tmp_path, ct=case["ct"], prepared_mask=case["pm"], cube=case["cube"], formats=("html",)
    )["report_html"]
    shot = tmp_path / "shot.png"
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [
                browser,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--hide-scrollbars",
                f"--user-data-dir={profile}",
                "--window-size=900,1400",
                f"--screenshot={shot}",
                html.as_uri(),
            ],
            capture_output=True,
            timeout=120,
        )
    assert shot.exists()
    img = imread(shot)
    assert img.shape[:2] == (1400, 900)
    assert grey_fraction(img) > 0.08  # the CT images were drawn
    red = (img[..., 0] > 0.6) & (img[..., 1] < 0.3) & (img[..., 2] < 0.3)
    assert red.mean() > 0.002  # DEMO banner / high-risk score in red
