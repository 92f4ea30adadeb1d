"""The DFM50N browser app: trame-slicer's viewer and segment editor, plus the DFM50N panel (panel.py).

State lives on the server, one scene per process (launcher.py starts a process per browser). Scoring is the
Slicer panel's own flow: `PanelPresenter` (DFM50NLib.scene.presenter) captures the inputs, runs its background job
and writes the results into the scene; this page only pushes its choices into the presenter's parameter node and
polls it from the event loop (the panel polls from a QTimer). Every scene change happens on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import math
import tempfile
import threading
from pathlib import Path

from trame.app import TrameApp
from trame.widgets import client
from trame_slicer import module as trame_slicer_module
from trame_slicer.app.logic import SegmentationAppLogic
from trame_slicer.core import SlicerApp

from DFM50NLib.errors import DFM50NError
from DFM50NLib.web import input_order
from DFM50NLib.web.files import LESION_SUFFIXES, VOLUME_SUFFIXES, DataFolder, UploadFolder
from DFM50NLib.web.streaming import UPLOAD_JS, UploadReceiver
from DFM50NLib.web.viewer import ViewerAnnotations

log = logging.getLogger("DFM50N.web")

SEGMENT_NAME_FOR_DEMO = "demo lesion"


class DFM50NWebApp(TrameApp):
    """One server = one scene. `weights`/`model` as for the CLI (None: $DFM50N_FCIB_WEIGHTS / cache; bundled
    DEMO forest)."""

    def __init__(self, server=None, *, data_dir=None, weights=None, model=None, max_upload_mb=1024, upload_root=None):
        super().__init__(server)
        from DFM50NLib.scene.logic import DFM50NLogic
        from DFM50NLib.web.panel import DFM50NAppUI

        self.server.enable_module(trame_slicer_module)
        input_order.install(self.server)  # a click never overtakes the strokes drawn before it
        self.slicer_app = SlicerApp()
        self.viewer = SegmentationAppLogic(self.server, self.slicer_app)
        _crop_switch_waits_for_a_volume(self.state, self.viewer._volume_properties_logic)
        self.logic = DFM50NLogic(scene=self.slicer_app.scene)
        self.data = DataFolder(data_dir)
        self.uploads = UploadFolder(max_upload_mb, parent=upload_root)
        self.weights_option = weights
        self.model = model
        self.presenter = None  # the Slicer panel's PanelPresenter, made on the first Score
        self._dicom_files = {}  # SOPInstanceUID -> file of the open CT, when it came from a DICOM series
        self._table_observed = None
        self._refresh_pending = False
        self._earlier_rows = []  # the scores table of the cases opened before this one (kept for comparison)
        self._cases_opened = 0
        self._coloured_segments = set()
        self._ct_upload = UploadReceiver(self.uploads, VOLUME_SUFFIXES, self._open_uploaded, self._show_error)
        self._lesion_upload = UploadReceiver(
            self.uploads,
            LESION_SUFFIXES,
            lambda path, name: self.add_lesion(path, name.split(".")[0]),
            self._show_error,
        )

        s = self.state
        s.trame__title = "DFM50N"
        s.dfm_data_files = self.data.list()
        s.dfm_case_name = ""
        s.dfm_segments = []
        s.dfm_segment_id = None
        s.dfm_center = "dt_peak"
        s.dfm_smoking = "unknown"  # the page's selects hold the parameter node's values (panel.choices)
        s.dfm_spiculated = "unknown"
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
        self.annotations = ViewerAnnotations(self.server, self.slicer_app)
        self.annotations.attach(self.viewer.layout_manager, self.viewer._layout_button_logic.data)
        with self.ui_builder.layout:
            client.Script(UPLOAD_JS)  # window.dfm_stream_upload, which the upload inputs call
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
        from DFM50NLib.io.demo_case import write_demo_case

        folder = Path(tempfile.mkdtemp(prefix="demo", dir=self.uploads.path))
        ct_path, mask_path = write_demo_case(folder)
        self._open(ct_path, mask_path, "Demo phantom (synthetic)", node_name="demo_phantom")

    def open_data_file(self, name):
        self._guard(lambda: self._open(self.data.resolve(name), None, name))

    def upload_chunk(self, message):
        """A CT streamed from the page (streaming.UPLOAD_JS): one message per piece, written to disk as it comes."""
        return self._ct_upload.receive(message)

    def upload_lesion_chunk(self, message):
        """An existing lesion segmentation for the open CT, streamed as the CT is: a label map, a .seg.nrrd,
        a DICOM-SEG or an RTSTRUCT (.dcm)."""
        if isinstance(message, dict) and "id" not in message and getattr(self, "volume_node", None) is None:
            self.state.dfm_error = "Open the CT first, then add its lesion segmentation."
            return False
        return self._lesion_upload.receive(message)

    def _show_error(self, message):
        self.state.dfm_error = message

    def add_lesion(self, path, name):
        """An existing segmentation -> segments of the one being edited: each segment of a .seg.nrrd, DICOM-SEG
        or RTSTRUCT under its own name (read as the CLI reads it), a label map one segment per value."""
        from DFM50NLib.io import lesion_segments, read_volume
        from DFM50NLib.scene import mrml

        editor = self.slicer_app.segmentation_editor
        before = set(editor.get_segment_ids())
        named = lesion_segments(path, reference=mrml.volume_from_node(self.volume_node))
        if named is None:
            if not self._import_labelmap(read_volume(path), name):
                raise DFM50NError(f"{name}: the label map is empty (no voxel above 0).")
        elif not sum(self._import_labelmap(vol, seg_name) for seg_name, vol in named):
            raise DFM50NError(f"{name}: none of its segments holds a voxel.")
        # Copied segments do not modify the node, so trame-slicer's segment editor would not list them: make the
        # first imported one the segment being edited and let the editor refresh its list (editable as drawn ones)
        added = [sid for sid in editor.get_segment_ids() if sid not in before]
        editor.set_active_segment_id(added[0])
        editor.trigger_all_signals()  # its segmentation_modified runs _on_segments_changed (the list, colours, table)
        self.state.dfm_segment_id = added[0]

    def _import_labelmap(self, volume, name) -> int:
        """Slicer's label map import into the segmentation being edited; a single segment takes `name`.
        Returns the number of segments added (0 for an empty label map)."""
        from DFM50NLib.scene import mrml

        scene = self.slicer_app.scene
        label = mrml.add_volume_node(volume, name, scene, labelmap=True)
        try:
            tmp = self.slicer_app.segmentation_editor.create_segmentation_node_from_labelmap(label)
            src, dst = tmp.GetSegmentation(), self.segmentation_node.GetSegmentation()
            count = src.GetNumberOfSegments()
            for i in range(count):
                seg_id = src.GetNthSegmentID(i)
                if count == 1:
                    src.GetSegment(seg_id).SetName(name)
                dst.CopySegmentFromSegmentation(src, seg_id)
            scene.RemoveNode(tmp)
        finally:
            scene.RemoveNode(label)
        return count

    def _open_uploaded(self, path, name):
        self._open(path, None, name)

    def _open(self, ct_path, mask_path, title, node_name=None):
        """Read with DFM50N's own reader (same checks as the CLI), then put the CT into the scene."""
        from DFM50NLib.io import read_volume
        from DFM50NLib.scene import mrml

        if self.state.dfm_busy:
            raise DFM50NError("Wait for the running score to finish (or Cancel it) before opening another case.")
        ct = read_volume(ct_path)
        self._keep_rows_of_this_case()
        self.logic.removeObservers()
        self.slicer_app.scene.Clear()
        self._table_observed = None
        name = node_name or Path(str(title)).name.split(".")[0] or "CT"
        volume_node = mrml.add_volume_node(ct, name, self.slicer_app.scene)
        self._dicom_files = _remember_dicom_instances(volume_node, ct_path)
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
        self._on_segments_changed()  # also clears the previous case's messages
        self.annotations.render_all()  # the previous case's cube and lesion leave every view at once

    def _keep_rows_of_this_case(self):
        """Before the scene is cleared for a new case: its rows stay in the table (no longer live: their nodes go)."""
        self._cases_opened += 1
        self._earlier_rows += [
            dict(r, key=f"case{self._cases_opened}|{r['key']}", earlier=True)
            for r in self.state.dfm_rows
            if not r.get("earlier")
        ]

    def _clear_messages(self):
        """Status and errors belong to the case and lesion they were about: gone when either changes."""
        if self.state.dfm_busy:
            return
        self.state.dfm_message = ""
        self.state.dfm_error = ""
        self.state.dfm_progress = 0

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
        seg = self.segmentation_node
        if seg is not None:
            self._coloured_segments = self.annotations.recolour_segments(seg, self._coloured_segments)
        self.state.dfm_segments = [{"title": p.name, "value": sid} for sid, p in props.items()]
        active = editor.get_active_segment_id()
        if self.state.dfm_segment_id not in props:
            self.state.dfm_segment_id = active or next(iter(props), None)
        self._clear_messages()  # the lesion changed: "Done", "is empty" or a failed score no longer apply
        self._schedule_refresh()

    def segment_chosen(self, segment_id):
        if segment_id != self.state.dfm_segment_id:
            self._clear_messages()
        self.state.dfm_segment_id = segment_id
        self._schedule_refresh()

    def _on_active_segment(self, segment_id=None, *_):
        """The panel scores the segment being edited (the user may still pick another one)."""
        self._on_segments_changed()
        if segment_id and not self.state.dfm_busy:
            self.state.dfm_segment_id = segment_id
            self._schedule_refresh()

    # ---------------------------------------------------------------- scoring (the Slicer panel's presenter)

    def _presenter(self):
        """The Slicer panel's Qt-free presenter over this scene's parameter node (re-bound after a case is
        opened, since opening clears the scene)."""
        from DFM50NLib.scene.presenter import MemorySettings, PanelPresenter

        if self.presenter is None:
            self.presenter = PanelPresenter(self.logic, settings=MemorySettings())
        params = self.presenter.params
        if params is None or not _in_scene(params, self.slicer_app.scene):
            self.presenter.setParameters(self.logic.getParameterNode())
        self.presenter.setWeightsPath(self.weights)
        self.presenter.setClassifierFolder(self.model)
        return self.presenter

    def _push_choices(self, presenter, seg, sid):
        """The page's choices into the parameter node, validated there (same names as the Slicer panel)."""
        s = self.state
        presenter.params.inputVolume = self.volume_node
        presenter.selectSegment(seg, sid)
        short = str(s.dfm_short_axis or "").strip()
        try:
            short_cm = float(short) if short else 0.0  # 0 = measured, as the panel's spin box
        except ValueError:
            raise DFM50NError(f"Short axis '{short}': give a number in cm, or leave it empty (measured).")
        for name, value in (
            ("centerMethod", s.dfm_center),
            ("orientation", s.dfm_orientation),
            ("geometry", s.dfm_geometry),
            ("device", s.dfm_device),
            ("smoking", s.dfm_smoking),
            ("spiculation", s.dfm_spiculated),
            ("shortAxisCm", short_cm),
        ):
            presenter.setParameter(name, value)

    def score(self):
        if self.state.dfm_busy or (self.presenter is not None and self.presenter.state() == "running"):
            return  # a double click: the first one is scoring
        self.state.dfm_error = ""
        self.check_weights()
        if self.state.dfm_weights_missing:
            return
        seg, sid = self.segmentation_node, self.state.dfm_segment_id
        if getattr(self, "volume_node", None) is None or seg is None:
            self.state.dfm_error = "Open a case first (demo, upload or a file under --data)."
            return
        try:
            presenter = self._presenter()
            self._push_choices(presenter, seg, sid)
            self.slicer_app.segmentation_editor.deactivate_effect()
            presenter.apply()
        except DFM50NError as exc:
            self.state.dfm_error = str(exc)
            return
        self.state.dfm_busy = True
        self.state.dfm_progress = 0
        self.state.dfm_message = "Scoring…"
        self._scoring_segment = sid
        asyncio.get_event_loop().create_task(self._poll())

    async def _poll(self):
        """The panel's QTimer, as an asyncio task: poll() delivers a finished job into the scene."""
        from DFM50NLib.scene.presenter import POLL_INTERVAL_MS

        while True:
            view = self.presenter.poll()
            with self.state:
                self.state.dfm_progress = int(view.progress or 0)
                self.state.dfm_message = view.status
            if not view.polling and self.presenter.state() == "idle":
                break
            await asyncio.sleep(POLL_INTERVAL_MS / 1000)
        with self.state:
            self._finish(view)

    def _finish(self, view):
        self.state.dfm_busy = False
        error = self.presenter.takeError()
        if error:
            self.state.dfm_error = error
            return
        if not self.presenter.scored or view.status.startswith("Cancelled"):
            self.state.dfm_progress = 0
            return
        scored = self.presenter.current(self._scoring_segment)
        key = (scored.volume_node.GetID(), scored.segmentation_node.GetID(), scored.segment_id)
        card = result_card(scored.result, key)
        card["segment"] = scored.segment_name
        card["dicom_sr"] = bool(view.dicom_sr_enabled)  # the CT came from a DICOM series (its files are kept)
        self.state.dfm_result = card
        self.state.dfm_message = "Done"
        if self.state.dfm_show_cube:
            self.show_cube(scored.result)
        self._observe_table()
        self._refresh_table_state()

    def cancel(self):
        if self.presenter is not None and self.presenter.state() == "running":
            self.presenter.cancel()
            self.state.dfm_message = "Cancelling at the next step…"

    def show_cube(self, result):
        """The 50 mm cube as an outline (the panel's Show cube: a locked ROI, slices jumped to its centre)."""
        if result.geometry != "physical":
            return
        try:
            roi, _cube, _centre = self.presenter.showCube(self._scoring_segment, cubeVolume=False, centered=False)
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
                        "key": _row_key(row),
                    }
                )
        self.state.dfm_rows = self._earlier_rows + rows
        self.state.dfm_segment_voxels = self._segment_voxels()
        card = self.state.dfm_result
        if card and not card.get("stale") and any(r["key"] == card["key"] and r["stale"] for r in rows):
            self.state.dfm_result = {**card, "stale": True}  # the card says what the table says, at once

    def _segment_voxels(self) -> int:
        """Voxels of the chosen segment on the CT grid (the page shows it live while drawing)."""
        seg, sid = self.segmentation_node, self.state.dfm_segment_id
        if self.state.dfm_busy:
            return self.state.dfm_segment_voxels or 0
        if seg is None or not sid or getattr(self, "volume_node", None) is None:
            return 0
        try:
            return int((self.logic.segmentMask(self.volume_node, seg, sid).array > 0).sum())
        except DFM50NError:
            return 0

    # ---------------------------------------------------------------- downloads

    def _fresh_result_segment(self) -> str:
        """The segment id of the result on the card, after checking its mask is still the one scored (the
        report's pictures and the SR's SEG are drawn from the segment as it is now, so an edited lesion would
        give a report that mixes two lesions): refused, and the card marked stale, when it changed."""
        from DFM50NLib.scene import table as st

        card = self.state.dfm_result
        if not card or self.presenter is None:
            raise DFM50NError("Score a lesion first.")
        table = self.logic.getTableNode(create=False)
        keys = [_row_key(st.get_row(table, r)) for r in range(table.GetTable().GetNumberOfRows())] if table else []
        # the card's mask hashed again now, not a cached flag (only its row: the others are not downloaded)
        if card["key"] not in keys or self.logic.checkRow(table, keys.index(card["key"])):
            self.state.dfm_result = {**card, "stale": True}
            raise DFM50NError(
                f"The lesion '{card['segment']}' was edited after it was scored ({card['mask_voxels']} voxels then): "
                "score it again, then download."
            )
        return card["key"].split("|")[2]

    def report_bytes(self, fmt):
        """The full report (HTML or PDF) of the result on the card, written by the panel's presenter."""
        segment_id = self._fresh_result_segment()
        with tempfile.TemporaryDirectory(dir=self.uploads.path) as tmp:
            paths = self.presenter.writeReport(tmp, segmentId=segment_id, formats=(fmt,))
            return Path(paths[f"report_{fmt}"]).read_bytes()

    def dicom_sr_bytes(self):
        """A zip of the DICOM SR (TID 1500) + SEG of the result on the card, referencing the uploaded series'
        images (written by the panel's presenter, as Slicer's Save DICOM SR does)."""
        import io
        import zipfile

        segment_id = self._fresh_result_segment()
        with tempfile.TemporaryDirectory(dir=self.uploads.path) as tmp:
            paths = self.presenter.writeDicomSR(tmp, segmentId=segment_id, fileForInstance=self._dicom_files.get)
            buf = io.BytesIO()
            with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
                for key in ("sr", "seg"):
                    zf.write(paths[key], Path(paths[key]).name)
            return buf.getvalue()

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


def _remember_dicom_instances(volume_node, ct_path) -> dict:
    """For a CT read from a DICOM series folder: mark the node as Slicer's DICOM loader does (the
    ``DICOM.instanceUIDs`` attribute, which enables Save DICOM SR) and return SOPInstanceUID -> file."""
    folder = Path(ct_path)
    if not folder.is_dir():
        return {}
    import pydicom

    from DFM50NLib.io.dicom_source import ct_series_files

    files = [str(f) for f in ct_series_files(folder)]
    uids = [
        str(pydicom.dcmread(f, stop_before_pixels=True, specific_tags=["SOPInstanceUID"]).SOPInstanceUID) for f in files
    ]
    volume_node.SetAttribute("DICOM.instanceUIDs", " ".join(uids))
    return dict(zip(uids, files))


def _crop_switch_waits_for_a_volume(state, volume_logic):
    """trame-slicer's Volume Properties handler for its crop switch assumes an open volume, and the first state
    flush (server start, no CT yet) runs it: "'NoneType' object has no attribute 'GetROINode'" in every log.
    Its change callbacks are wrapped to do nothing until a volume is shown."""
    key = state.translator.translate_key(str(volume_logic.name.volume_crop_active))

    def guarded(fn):
        return lambda **kw: fn(**kw) if volume_logic._volume_node is not None else None

    callbacks = state._change_callbacks.get(key, [])
    state._change_callbacks[key] = [(guarded(fn), translator) for fn, translator in callbacks]


def _row_key(row) -> str:
    """volume|segmentation|segment node ids: the result card's key for its table row."""
    return "|".join((row["volume_node_id"], row["segmentation_node_id"], row["segment_id"]))


def _in_scene(params, scene) -> bool:
    node = getattr(params, "parameterNode", None) or getattr(params, "node", None)
    return node is None or (node.GetScene() is scene and scene.IsNodePresent(node))


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
        "combined_exact": "" if result.combined_probability is None else repr(float(result.combined_probability)),
        "mask_voxels": int(result.mask_voxels),
        "mask_volume": f"{result.mask_volume_mm3 / 1000:.2f} cm³",
        "center": ", ".join(f"{c:.1f}" for c in result.center_ras),
        "center_method": result.center_method,
        "geometry": result.geometry,
    }


def _yn(v):
    return "not given" if v is None else ("yes" if v else "no")
