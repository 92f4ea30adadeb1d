"""The DFM50N browser app: trame-slicer's viewer and segment editor, plus the DFM50N panel (panel.py).

State lives on the server (one shared session per process: every tab sees the same scene). All scene changes
happen in trame callbacks on the event loop, except the score itself, which runs the Slicer panel's Logic on a
worker thread (job.py) while the page keeps editing and loading disabled.
"""

from __future__ import annotations

import asyncio
import logging
import math
import tempfile
import threading
from pathlib import Path

from trame.app import TrameApp
from trame_slicer import module as trame_slicer_module
from trame_slicer.app.logic import SegmentationAppLogic
from trame_slicer.core import SlicerApp

from DFM50NLib.errors import DFM50NError
from DFM50NLib.web.files import DataFolder, UploadFolder
from DFM50NLib.web.job import ScoringJob

log = logging.getLogger("DFM50N.web")

SEGMENT_NAME_FOR_DEMO = "demo lesion"


class DFM50NWebApp(TrameApp):
    """One server = one scene. `weights`/`model` as for the CLI (None: $DFM50N_FCIB_WEIGHTS / cache; bundled
    DEMO forest)."""

    def __init__(self, server=None, *, data_dir=None, weights=None, model=None, max_upload_mb=1024):
        super().__init__(server)
        from DFM50NLib.scene.logic import DFM50NLogic
        from DFM50NLib.web.panel import DFM50NAppUI

        self.server.enable_module(trame_slicer_module)
        self.slicer_app = SlicerApp()
        self.viewer = SegmentationAppLogic(self.server, self.slicer_app)
        self.logic = DFM50NLogic(scene=self.slicer_app.scene)
        self.data = DataFolder(data_dir)
        self.uploads = UploadFolder(max_upload_mb)
        self.weights_option = weights
        self.model = model
        self.job = None
        self.results = {}  # (volume id, segmentation id, segment id) -> Result, for the card and the report
        self._table_observed = None
        self._refresh_pending = False
        self._upload_parts = []
        self._upload_bytes = 0

        s = self.state
        s.trame__title = "DFM50N"
        s.dfm_data_files = self.data.list()
        s.dfm_case_name = ""
        s.dfm_segments = []
        s.dfm_segment_id = None
        s.dfm_center = "dt_peak"
        s.dfm_smoking = "not given"
        s.dfm_spiculated = "not given"
        s.dfm_short_axis = ""
        s.dfm_orientation = "LPS"
        s.dfm_geometry = "physical"
        s.dfm_device = "cpu"
        s.dfm_show_cube = True
        s.dfm_busy = False
        s.dfm_progress = 0
        s.dfm_message = ""
        s.dfm_error = ""
        s.dfm_result = None
        s.dfm_rows = []
        s.dfm_segment_voxels = 0
        s.dfm_max_upload_mb = max_upload_mb
        s.dfm_weights_missing = ""
        self.check_weights()

        self.ui_builder = DFM50NAppUI(self.server, self.viewer.layout_manager, self)
        self.viewer.set_ui(self.ui_builder)
        editor = self.slicer_app.segmentation_editor
        editor.segmentation_modified.connect(self._on_segments_changed)
        editor.active_segment_id_changed.connect(self._on_active_segment)

    @property
    def ui(self):
        return self.ui_builder.layout

    # ---------------------------------------------------------------- weights

    def check_weights(self):
        """Empty when the FCIB weights are found; else the page shows how to provide them."""
        from DFM50NLib.model.paths import how_to_provide
        from DFM50NLib.model.weights import resolve_weights

        try:
            self.weights = resolve_weights(self.weights_option)
            self.state.dfm_weights_missing = ""
        except DFM50NError as exc:
            self.weights = None
            msg = str(exc)
            self.state.dfm_weights_missing = msg if how_to_provide() in msg else f"{msg} {how_to_provide()}"

    # ---------------------------------------------------------------- opening a case

    def open_demo(self):
        from DFM50NLib.geometry.synthetic import write_demo_case

        folder = Path(tempfile.mkdtemp(prefix="demo", dir=self.uploads.path))
        ct_path, mask_path = write_demo_case(folder)
        self._open(ct_path, mask_path, "Demo phantom (synthetic)", node_name="demo_phantom")

    def open_data_file(self, name):
        self._guard(lambda: self._open(self.data.resolve(name), None, name))

    def upload_chunk(self, files):
        """Files arrive in chunks (trame's `load_files_by_chunks`); an empty list ends the upload."""
        if files:
            for f in files:
                size = int(f.get("size") or len(f.get("content") or b""))
                self._upload_bytes += size
            try:
                self.uploads.check_size(self._upload_bytes)
            except DFM50NError as exc:
                self._upload_parts, self._upload_bytes = [], 0
                self.state.dfm_error = str(exc)
                return
            self._upload_parts.extend(files)
            return
        parts, self._upload_parts, self._upload_bytes = self._upload_parts, [], 0
        if parts:
            self._guard(lambda: self._open_upload(parts))

    def _open_upload(self, parts):
        from trame_slicer.utils import ClientFile

        files = [ClientFile(p) for p in parts]
        if len(files) != 1:
            raise DFM50NError("Upload one file: a CT (.nii.gz / .nrrd) or one zipped DICOM series (.zip).")
        path = self.uploads.save(files[0].name, files[0].content)
        self._open(path, None, files[0].name)

    def _open(self, ct_path, mask_path, title, node_name=None):
        """Read with DFM50N's own reader (same checks as the CLI), then put the CT into the scene."""
        from DFM50NLib.geometry.io import read_volume
        from DFM50NLib.scene import mrml

        if self.job is not None and self.job.running:
            raise DFM50NError("Wait for the running score to finish (or Cancel it) before opening another case.")
        ct = read_volume(ct_path)
        self.logic.removeObservers()
        self.slicer_app.scene.Clear()
        self.results.clear()
        self._table_observed = None
        name = node_name or Path(str(title)).name.split(".")[0] or "CT"
        volume_node = mrml.add_volume_node(ct, name, self.slicer_app.scene)
        if mask_path is not None:
            mask = read_volume(mask_path)
            label = mrml.add_volume_node(mask, "lesion", self.slicer_app.scene, labelmap=True)
            seg = self.slicer_app.segmentation_editor.create_segmentation_node_from_labelmap(label)
            segmentation = seg.GetSegmentation()
            if segmentation.GetNumberOfSegments():
                segmentation.GetNthSegment(0).SetName(SEGMENT_NAME_FOR_DEMO)
            self.slicer_app.scene.RemoveNode(label)
        self.slicer_app.display_manager.show_volume(volume_node, do_reset_views=True)
        self.viewer._on_volume_changed(volume_node)
        self.viewer._segment_editor_logic.on_volume_changed(volume_node)
        self.viewer._volume_properties_logic.on_volume_changed(volume_node)
        self.volume_node = volume_node
        self.state.dfm_case_name = str(title)
        self.state.dfm_result = None
        self.state.dfm_rows = []
        self.state.dfm_error = ""
        self._on_segments_changed()

    def _guard(self, fn):
        try:
            fn()
        except DFM50NError as exc:
            self.state.dfm_error = str(exc)
        except Exception as exc:  # an unreadable upload must not take the server down
            log.exception("DFM50N web")
            self.state.dfm_error = f"{type(exc).__name__}: {exc}"

    # ---------------------------------------------------------------- segments

    @property
    def segmentation_node(self):
        return self.slicer_app.segmentation_editor.active_segmentation_node

    def _on_segments_changed(self, *_):
        editor = self.slicer_app.segmentation_editor
        if threading.current_thread() is not threading.main_thread():
            return
        try:
            props = editor.get_all_segment_properties()
        except Exception:
            props = {}
        self.state.dfm_segments = [{"title": p.name, "value": sid} for sid, p in props.items()]
        active = editor.get_active_segment_id()
        if self.state.dfm_segment_id not in props:
            self.state.dfm_segment_id = active or next(iter(props), None)
        self._schedule_refresh()

    def segment_chosen(self, segment_id):
        self.state.dfm_segment_id = segment_id
        self._schedule_refresh()

    def _on_active_segment(self, segment_id=None, *_):
        """The panel scores the segment being edited (the user may still pick another one)."""
        self._on_segments_changed()
        if segment_id and not self.state.dfm_busy:
            self.state.dfm_segment_id = segment_id
            self._schedule_refresh()

    # ---------------------------------------------------------------- scoring

    def options(self):
        """The panel's choices, as `DFM50NLogic.scoreSegment` keywords (same names as the Slicer panel)."""
        s = self.state
        clinical = {}
        for key in ("smoking", "spiculated"):
            v = s[f"dfm_{key}"]
            if v in ("yes", "no"):
                clinical[key] = v == "yes"
        if str(s.dfm_short_axis).strip():
            try:
                clinical["short_axis_cm"] = float(s.dfm_short_axis)
            except ValueError:
                raise DFM50NError(f"Short axis '{s.dfm_short_axis}': give a number in cm, or leave it empty.")
        return dict(
            center=s.dfm_center,
            orientation=s.dfm_orientation,
            geometry=s.dfm_geometry,
            device=s.dfm_device,
            weights=str(self.weights) if self.weights else None,
            model=self.model,
            clinical=clinical or None,
        )

    def score(self):
        self.state.dfm_error = ""
        self.check_weights()
        if self.state.dfm_weights_missing:
            return
        seg, sid = self.segmentation_node, self.state.dfm_segment_id
        if getattr(self, "volume_node", None) is None or seg is None:
            self.state.dfm_error = "Open a case first (demo, upload or a file under --data)."
            return
        try:
            options = self.options()
            self.logic._check_inputs(self.volume_node, seg, sid)
        except DFM50NError as exc:
            self.state.dfm_error = str(exc)
            return
        self.slicer_app.segmentation_editor.deactivate_effect()
        loop = asyncio.get_event_loop()
        self.job = ScoringJob(self.logic, loop, on_progress=self._on_progress, on_done=self._on_done)
        self.state.dfm_busy = True
        self.state.dfm_progress = 0
        self.state.dfm_message = "Starting"
        self._scoring_key = (self.volume_node.GetID(), seg.GetID(), sid)
        self.job.start(self.volume_node, seg, sid, **options)

    def cancel(self):
        if self.job is not None and self.job.running:
            self.job.cancel()
            self.state.dfm_message = "Cancelling at the next step..."

    def _on_progress(self, fraction, message):
        with self.state:
            self.state.dfm_progress = round(100 * float(fraction))
            self.state.dfm_message = message

    def _on_done(self, result, error, cancelled):
        with self.state:
            self.state.dfm_busy = False
            if cancelled:
                self.state.dfm_message = "Cancelled: nothing was written."
                self.state.dfm_progress = 0
            elif error is not None:
                self.state.dfm_error = str(error)
                self.state.dfm_message = ""
            else:
                self.results[self._scoring_key] = result
                segment = self.slicer_app.scene.GetNodeByID(self._scoring_key[1])
                segment = segment.GetSegmentation().GetSegment(self._scoring_key[2]) if segment else None
                card = result_card(result, self._scoring_key)
                card["segment"] = segment.GetName() if segment else self._scoring_key[2]
                self.state.dfm_result = card
                self.state.dfm_message = "Done"
                if self.state.dfm_show_cube:
                    self.show_cube(result)
            self._observe_table()
            self._refresh_table_state()

    def show_cube(self, result):
        """The 50 mm cube as an outline (a locked markups ROI) in the slice views and 3D; one at a time."""
        scene = self.slicer_app.scene
        for node in list(scene.GetNodesByClass("vtkMRMLMarkupsROINode")):
            if node.GetName().startswith("DFM50N cube"):
                scene.RemoveNode(node)
        if result.geometry != "physical":
            return
        try:
            roi, _ = self.logic.showCube(result, self.volume_node, cubeVolume=False)
            d = roi.GetDisplayNode()
            if d is not None:
                d.SetFillVisibility(False)
                d.SetHandlesInteractive(False)
                d.SetPropertiesLabelVisibility(False)
                d.SetSelectedColor(1.0, 0.85, 0.1)
                d.SetColor(1.0, 0.85, 0.1)
        except Exception:
            log.exception("DFM50N web: cube outline")

    # ---------------------------------------------------------------- table

    def _observe_table(self):
        table = self.logic.getTableNode(create=False)
        if table is not None and table is not self._table_observed:
            table.AddObserver("ModifiedEvent", lambda *_: self._schedule_refresh())
            self._table_observed = table

    def _schedule_refresh(self):
        if self._refresh_pending:
            return
        self._refresh_pending = True
        try:
            loop = asyncio.get_event_loop() if threading.current_thread() is threading.main_thread() else None
        except RuntimeError:
            loop = None
        loop = loop or getattr(self, "_loop", None)
        if loop is None:
            self._refresh_pending = False
            return
        self._loop = loop
        loop.call_soon_threadsafe(self._refresh_in_loop)

    def _refresh_in_loop(self):
        self._refresh_pending = False
        with self.state:
            self._refresh_table_state()

    def _refresh_table_state(self):
        from DFM50NLib.scene import table as st

        table = self.logic.getTableNode(create=False)
        rows = []
        if table is not None:
            for r in range(table.GetTable().GetNumberOfRows()):
                row = st.get_row(table, r)
                rows.append(
                    {
                        "volume": row["volume"],
                        "segment": row["segment"],
                        "score": _fmt(row["score"]),
                        "risk": row["risk_label"],
                        "demo": bool(row["classifier_is_demo"]),
                        "stale": bool(row["stale"]),
                        "key": "|".join((row["volume_node_id"], row["segmentation_node_id"], row["segment_id"])),
                    }
                )
        self.state.dfm_rows = rows
        self.state.dfm_segment_voxels = self._segment_voxels()

    def _segment_voxels(self) -> int:
        """Voxels of the chosen segment on the CT grid (the page shows it live while drawing)."""
        seg, sid = self.segmentation_node, self.state.dfm_segment_id
        if self.job is not None and self.job.running:
            return self.state.dfm_segment_voxels or 0
        if seg is None or not sid or getattr(self, "volume_node", None) is None:
            return 0
        try:
            return int((self.logic.segmentMask(self.volume_node, seg, sid).array > 0).sum())
        except DFM50NError:
            return 0

    # ---------------------------------------------------------------- downloads

    def report_bytes(self, fmt):
        """The full report (HTML or PDF) of the result on the card, written by the same Logic call as Slicer's."""
        card = self.state.dfm_result
        if not card:
            raise DFM50NError("Score a lesion first.")
        key = tuple(card["key"].split("|"))
        result = self.results[key]
        scene = self.slicer_app.scene
        vol, seg = scene.GetNodeByID(key[0]), scene.GetNodeByID(key[1])
        with tempfile.TemporaryDirectory(dir=self.uploads.path) as tmp:
            paths = self.logic.writeReport(result, vol, seg, key[2], tmp, formats=(fmt,))
            return Path(paths[f"report_{fmt}"]).read_bytes()

    def segmentation_bytes(self):
        seg = self.segmentation_node
        if seg is None:
            raise DFM50NError("No segmentation yet.")
        with tempfile.TemporaryDirectory(dir=self.uploads.path) as tmp:
            path = Path(tmp) / "lesion.seg.nrrd"
            storage = seg.GetStorageNode()
            if storage is None:  # Slicer's own .seg.nrrd writer: segment names, colours and geometry kept
                seg.AddDefaultStorageNode()
                storage = seg.GetStorageNode()
            old = storage.GetFileName()
            storage.SetFileName(str(path))
            ok = storage.WriteData(seg)
            storage.SetFileName(old)
            if not ok or not path.is_file():
                raise DFM50NError("Could not write the segmentation file.")
            return path.read_bytes()


def _fmt(v, digits=4):
    try:
        v = float(v)
    except (TypeError, ValueError):
        return ""
    return "" if math.isnan(v) else f"{v:.{digits}f}"


def result_card(result, key) -> dict:
    """What the result card shows (plain JSON for the page); `score_exact` is repr() for exact checks."""
    combined = None
    if result.combined_probability is not None:
        combined = (
            f"{result.combined_probability:.3f} ({'positive' if result.combined_positive else 'negative'}; "
            f"smoking {_yn(result.smoking)}, spiculated {_yn(result.spiculated)}, "
            f"short axis {result.short_axis_cm:.2f} cm {result.short_axis_source or ''})"
        )
    return {
        "key": "|".join(key),
        "case": result.case_id,
        "score": f"{result.score:.4f}",
        "score_exact": repr(float(result.score)),
        "threshold": f"{result.threshold:.2f}",
        "risk": result.risk_label,
        "high": bool(result.high_risk),
        "demo": bool(result.classifier_is_demo),
        "classifier": result.classifier_name,
        "warnings": list(result.warnings),
        "combined": combined,
        "mask_voxels": int(result.mask_voxels),
        "mask_volume": f"{result.mask_volume_mm3 / 1000:.2f} cm³",
        "center": ", ".join(f"{c:.1f}" for c in result.center_ras),
        "center_method": result.center_method,
        "geometry": result.geometry,
    }


def _yn(v):
    return "not given" if v is None else ("yes" if v else "no")
