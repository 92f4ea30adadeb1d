"""`DFM50NLogic`: score a segment from Slicer's scene - Qt-free, so the widget, the Python console,
the self-test and pytest (slicer-core) all run the same code.

The pipeline does the maths (`DFM50NLib.scoring.pipeline.score_volumes`); this class only turns nodes into
`Volume`s (mrml.py), reports progress between stages, and writes the results back into the scene
(scene_table.py, a text node with the report, optionally the cube as ROI + volume). It never
modifies the user's CT or segmentation.
"""

from __future__ import annotations

import contextlib
import logging
import time

import slicer
import vtk

from DFM50NLib.errors import DFM50NError, WeightsError
from DFM50NLib.scene import mrml
from DFM50NLib.scene import table as st

MODEL_SETTING = "DFM50N/ClassifierFolder"  # machine settings (QSettings in Slicer), never in the scene
WEIGHTS_SETTING = "DFM50N/FCIBWeightsPath"  # = model.weights.SETTING_NAME
REPORT_ATTRIBUTE = "DFM50N.Report"  # "1" on our report text nodes
SEGMENT_ATTRIBUTE = "DFM50N.SegmentID"  # segment IDs are not MRML IDs: plain text is right for them
KIND_ATTRIBUTE = "DFM50N.Kind"  # report | cubeROI | cubeVolume
VOLUME_ROLE, SEGMENTATION_ROLE = "dfm50nVolume", "dfm50nSegmentation"  # node references (remapped on import)

try:  # in Slicer: the module-logic base class (parameter node, module name); slicer-core has none
    from slicer.ScriptedLoadableModule import ScriptedLoadableModuleLogic as _LogicBase
except ImportError:
    _LogicBase = object

# score_volumes keyword arguments the Logic passes through unchanged
PIPELINE_OPTIONS = (
    "center",
    "point_ras",
    "orientation",
    "geometry",
    "weights",
    "model",
    "device",
    "clinical",
    "keep_features",
    "download",
    "out_dir",
    "report",
    "write_cubes",
)


class ScoringCancelled(DFM50NError):
    """The user pressed Cancel; nothing was written to the scene."""


class DFM50NLogic(_LogicBase):
    """Console use::

    logic = DFM50NLogic()
    result = logic.scoreSegment(ctNode, segNode, segNode.GetSegmentation().GetSegmentIdBySegmentName("Tumor"),
                                weights="/path/model_weights.torch")
    print(result.score, result.risk_label)
    """

    def __init__(self, scene=None, parameterWrapper=None):
        if _LogicBase is not object:
            _LogicBase.__init__(self)
        self.scene = scene if scene is not None else slicer.mrmlScene
        self.parameterWrapper = parameterWrapper  # the widget's @parameterNodeWrapper class, if any
        self._cancel = False
        self._observations = []  # (vtkSegmentation, tag)
        self._labelmapStates = {}  # (segmentation id, segment id) -> labelmap state when last hashed
        self.lastResults = {}  # (volume id, segmentation id, segment id) -> Result

    # ------------------------------------------------------------------ scoring

    def requestCancel(self):
        """Ask a running scoring to stop at the next stage boundary (the widget's Cancel button)."""
        self._cancel = True

    def getParameterNode(self):
        """The module's parameter node, wrapped: by the widget's @parameterNodeWrapper class in Slicer,
        by the Qt-free `SceneParameters` (same storage) elsewhere."""
        from DFM50NLib.scene import params

        node = params.parameter_node(self.scene)
        wrapper = self.parameterWrapper or params.SceneParameters
        return wrapper(node)

    def writeResult(
        self,
        result,
        volumeNode,
        segmentationNode,
        segmentId,
        maskSha256,
        tableNode=None,
        *,
        addToTable=True,
        reportNode=True,
    ):
        """Put one result into the scene (main thread): its table row and its report node."""
        key = (volumeNode.GetID(), segmentationNode.GetID(), segmentId)
        self.lastResults[key] = result
        if addToTable:
            tableNode = tableNode or self.getTableNode()
            name = segmentationNode.GetSegmentation().GetSegment(segmentId).GetName()
            row = st.set_row(
                tableNode,
                st.row_values(
                    result,
                    volume_name=volumeNode.GetName(),
                    segment_name=name,
                    volume_node_id=key[0],
                    segmentation_node_id=key[1],
                    segment_id=segmentId,
                    mask_sha256=maskSha256,
                ),
            )
            self.observeSegmentation(segmentationNode)
            self.checkRow(tableNode, row)  # edited while it was being scored: stale at once
        if reportNode:
            self.reportTextNode(result, volumeNode, segmentationNode, segmentId)
        return tableNode

    def scoreSegment(
        self,
        volumeNode,
        segmentationNode,
        segmentId,
        tableNode=None,
        *,
        progress=None,
        confirm=None,
        checkDependencies=True,
        addToTable=True,
        reportNode=True,
        **options,
    ):
        """Score one segment on `volumeNode`; returns the `Result` and updates the table.

        options: center ("dt_peak" | "centroid" | "point"), point_ras, orientation ("LPS"), geometry,
        weights (path of model_weights.torch), model (classifier folder; None = bundled DEMO), device,
        clinical (dict smoking/spiculated/short_axis_cm), download, out_dir + report=True (report files).
        progress(fraction, message) is called between stages; confirm(message) -> bool before any install.
        """
        self._cancel = False
        return self._scoreSegment(
            volumeNode,
            segmentationNode,
            segmentId,
            tableNode,
            progress=progress,
            confirm=confirm,
            checkDependencies=checkDependencies,
            addToTable=addToTable,
            reportNode=reportNode,
            **options,
        )

    def _scoreSegment(
        self,
        volumeNode,
        segmentationNode,
        segmentId,
        tableNode,
        *,
        progress,
        confirm,
        checkDependencies,
        addToTable,
        reportNode,
        **options,
    ):
        self._check_inputs(volumeNode, segmentationNode, segmentId)
        unknown = set(options) - set(PIPELINE_OPTIONS) - {"encoder", "classifier"}
        if unknown:
            raise TypeError(f"Unknown option(s) {sorted(unknown)}; known: {', '.join(PIPELINE_OPTIONS)}")
        t0 = time.perf_counter()
        if checkDependencies:
            self._step(progress, 0.02, "Checking Python packages")
            from DFM50NLib.scene import dependencies

            dependencies.ensure(confirm)
        from DFM50NLib.scoring import pipeline

        if options.get("encoder") is None:  # the session's warm FCIB process: it loads while the CT is read
            self._step(progress, 0.05, "Starting the FCIB model")
            with contextlib.suppress(WeightsError):  # not found: said after the inputs (a bad input first)
                options["encoder"] = _sharedEncoder(options, download=False)
        self._step(progress, 0.1, "Reading the segment on the CT grid")
        ct = mrml.volume_from_node(volumeNode)
        mask = mrml.segment_mask(volumeNode, segmentationNode, segmentId)
        mask_sha = mrml.mask_hash(mask)
        self._step(progress, 0.15, "Loading the FCIB model and the classifier")
        if options.get("encoder") is None:
            options["encoder"] = _sharedEncoder(options, download=options.get("download", False))
        options["encoder"], options["classifier"] = pipeline.load_models(
            None, options.get("model"), encoder=options["encoder"], classifier=options.get("classifier")
        )
        if hasattr(options["encoder"], "ready"):
            options["encoder"].ready()  # its error (e.g. a damaged weights file) before any computing
        options["device"] = getattr(options["encoder"], "device", options.get("device", "cpu"))  # "auto" resolved
        self._step(progress, 0.5, "Computing the DFM50N score")
        case_id = f"{volumeNode.GetName()}_{mask.name}"
        if options.get("geometry") == "reference":
            result = score_reference(ct, mask, case_id, options)
        else:
            result = pipeline.score_volumes(ct, mask, case_id=case_id, **options)
        self._step(progress, 0.9, "Writing results into the scene")
        self.writeResult(
            result,
            volumeNode,
            segmentationNode,
            segmentId,
            mask_sha,
            tableNode if addToTable else None,
            addToTable=addToTable,
            reportNode=reportNode,
        )
        if progress:
            progress(1.0, f"Done in {time.perf_counter() - t0:.1f} s")
        return result

    def scoreAllSegments(self, volumeNode, segmentationNode, tableNode=None, *, progress=None, **options):
        """Score every segment; returns {segment id: Result}. A failing segment does not stop the others:
        the failures are raised together at the end (the table already holds the successful rows)."""
        ids = vtk.vtkStringArray()
        segmentationNode.GetSegmentation().GetSegmentIDs(ids)
        ids = [ids.GetValue(i) for i in range(ids.GetNumberOfValues())]
        if not ids:
            raise DFM50NError(f"'{segmentationNode.GetName()}' has no segment: draw the lesion first.")
        results, errors = {}, []
        self._cancel = False
        kw = dict(confirm=None, checkDependencies=True, addToTable=True, reportNode=True)
        kw.update({k: options.pop(k) for k in list(kw) if k in options})
        for n, sid in enumerate(ids):

            def sub(f, msg, n=n):
                if progress:
                    return progress((n + f) / len(ids), f"Segment {n + 1}/{len(ids)}: {msg}")

            try:
                results[sid] = self._scoreSegment(
                    volumeNode, segmentationNode, sid, tableNode, progress=sub, **kw, **options
                )
            except ScoringCancelled:
                raise
            except DFM50NError as exc:
                name = segmentationNode.GetSegmentation().GetSegment(sid).GetName()
                errors.append(f"{name}: {exc}")
            # the FCIB process stays warm (encoder_process.shared_encoder): later segments reuse its model
        if errors:
            raise DFM50NError(f"{len(errors)} of {len(ids)} segments could not be scored:\n" + "\n".join(errors))
        return results

    def segmentMask(self, volumeNode, segmentationNode, segmentId):
        """The mask `Volume` handed to the pipeline (segment's own grid, CT node's frame)."""
        return mrml.segment_mask(volumeNode, segmentationNode, segmentId)

    def maskOnCTGrid(self, volumeNode, segmentationNode, segmentId):
        """The segment as the pipeline sees it on the CT grid (`PreparedMask`, cropped to the lesion)."""
        from DFM50NLib.geometry.mask import prepare_mask

        return prepare_mask(
            self.segmentMask(volumeNode, segmentationNode, segmentId), mrml.volume_from_node(volumeNode)
        )

    def measureShortAxis(self, volumeNode, segmentationNode, segmentId):
        """(short axis cm, long axis mm) of the segment on the axial slice where it is longest."""
        from DFM50NLib.geometry.diameters import axial_diameters

        d = axial_diameters(self.maskOnCTGrid(volumeNode, segmentationNode, segmentId))
        return d.short_cm, d.long_mm

    def _check_inputs(self, volumeNode, segmentationNode, segmentId):
        if (
            volumeNode is None
            or not volumeNode.IsA("vtkMRMLScalarVolumeNode")
            or volumeNode.IsA("vtkMRMLLabelMapVolumeNode")
        ):
            raise DFM50NError("Select the CT volume (a scalar volume in Hounsfield units).")
        if segmentationNode is None or not segmentationNode.IsA("vtkMRMLSegmentationNode"):
            raise DFM50NError("Select the segmentation that holds the lesion.")
        if not segmentId or segmentationNode.GetSegmentation().GetSegment(segmentId) is None:
            raise DFM50NError("Select the lesion segment.")

    def _step(self, progress, fraction, message):
        logging.info("DFM50N: %s", message)
        if progress:
            progress(fraction, message)
        if self._cancel:
            self._cancel = False
            raise ScoringCancelled("Scoring cancelled.")

    # ------------------------------------------------------------------ table and staleness

    def getTableNode(self, create=True):
        return st.get_table(self.scene, create=create)

    def observeSegmentation(self, segmentationNode):
        """Keep the stale flags of this segmentation's rows (in every DFM50N table of the scene) equal to
        "the segment differs from what was scored" while the user edits it."""
        segmentation = segmentationNode.GetSegmentation()
        if any(s is segmentation for s, _ in self._observations):
            return
        segNodeId = segmentationNode.GetID()

        @vtk.calldata_type(vtk.VTK_STRING)
        def onModified(caller, event, segmentId=None):
            for table in st.scores_tables(self.scene):
                self._markIfChanged(table, segmentationNode, segNodeId, segmentId)

        for ev in (
            slicer.vtkSegmentation.SegmentModified,
            slicer.vtkSegmentation.RepresentationModified,
            slicer.vtkSegmentation.SegmentRemoved,
        ):
            self._observations.append((segmentation, segmentation.AddObserver(ev, onModified)))

    def _markIfChanged(self, table, segmentationNode, segNodeId, segmentId):
        """Recheck the rows of this segment whose labelmap changed since they were last hashed. A colour or
        name change leaves the labelmap alone (no work). Both ways: saving a scene collapses labelmap layers
        and one event in between shows a segment with its neighbour's voxels; the next event clears it."""
        t = table.GetTable()
        for r in range(t.GetNumberOfRows()):
            row = st.get_row(table, r)
            if row["segmentation_node_id"] != segNodeId or (segmentId and row["segment_id"] != segmentId):
                continue
            state = _labelmapState(segmentationNode, row["segment_id"])
            if state is None or self._labelmapStates.get((segNodeId, row["segment_id"])) != state:
                self.checkRow(table, r, row)

    def checkRow(self, table, r, row=None):
        """Stale = the segment's voxels or geometry differ from the hash the row was scored with (or its
        nodes are gone). Returns the flag."""
        row = row or st.get_row(table, r)
        stale = self._currentHash(row) != row["mask_sha256"]
        st.set_stale(table, r, stale)
        seg = self.scene.GetNodeByID(row["segmentation_node_id"]) if row["segmentation_node_id"] else None
        if seg is not None and seg.IsA("vtkMRMLSegmentationNode"):
            self._labelmapStates[(seg.GetID(), row["segment_id"])] = _labelmapState(seg, row["segment_id"])
        return stale

    def removeObservers(self):
        for segmentation, tag in self._observations:
            segmentation.RemoveObserver(tag)
        self._observations = []

    def _currentHash(self, row):
        vol = self.scene.GetNodeByID(row["volume_node_id"]) if row["volume_node_id"] else None
        seg = self.scene.GetNodeByID(row["segmentation_node_id"]) if row["segmentation_node_id"] else None
        if vol is None or seg is None or seg.GetSegmentation().GetSegment(row["segment_id"]) is None:
            return None
        try:
            return mrml.mask_hash(mrml.segment_mask(vol, seg, row["segment_id"]))
        except DFM50NError:
            return None

    def refreshStale(self, tableNode=None):
        """Recheck every row against its segment now (e.g. after loading a scene) and keep watching the
        segmentations; returns the stale rows of `tableNode` (default: recheck every DFM50N table, return
        the default table's)."""
        tables = [tableNode] if tableNode is not None else st.scores_tables(self.scene)
        for table in tables:
            for r in range(table.GetTable().GetNumberOfRows()):
                row = st.get_row(table, r)
                seg = self.scene.GetNodeByID(row["segmentation_node_id"] or "")
                if seg is not None and seg.IsA("vtkMRMLSegmentationNode"):
                    self.observeSegmentation(seg)
                self.checkRow(table, r, row)
        shown = tableNode or self.getTableNode(create=False)
        if shown is None:
            return []
        return [r for r in range(shown.GetTable().GetNumberOfRows()) if st.get_row(shown, r)["stale"]]

    # ------------------------------------------------------------------ outputs in the scene

    def ownedNode(self, kind, volumeNode, segmentationNode, segmentId, className, name):
        """The one node of `kind` (report | cubeROI | cubeVolume) for this volume + segment, created on
        first use and reused after. Found by node references (remapped when a scene is imported) and the
        segment ID, never by MRML ID strings."""
        for i in range(self.scene.GetNumberOfNodesByClass(className)):
            node = self.scene.GetNthNodeByClass(i, className)
            if (
                node.GetAttribute(KIND_ATTRIBUTE) == kind
                and node.GetAttribute(SEGMENT_ATTRIBUTE) == segmentId
                and node.GetNodeReference(VOLUME_ROLE) is volumeNode
                and node.GetNodeReference(SEGMENTATION_ROLE) is segmentationNode
            ):
                return node
        node = self.scene.AddNewNodeByClass(className, self.scene.GenerateUniqueName(name))
        node.SetAttribute(KIND_ATTRIBUTE, kind)
        node.SetAttribute(SEGMENT_ATTRIBUTE, segmentId)
        node.SetNodeReferenceID(VOLUME_ROLE, volumeNode.GetID())
        node.SetNodeReferenceID(SEGMENTATION_ROLE, segmentationNode.GetID())
        return node

    def _segmentLabel(self, volumeNode, segmentationNode, segmentId):
        segment = segmentationNode.GetSegmentation().GetSegment(segmentId)
        return f"{volumeNode.GetName()} - {segment.GetName() if segment else segmentId}"

    def reportTextNode(self, result, volumeNode, segmentationNode, segmentId):
        """The short HTML report as a text node: one per volume + segment, replaced on re-scoring."""
        label = self._segmentLabel(volumeNode, segmentationNode, segmentId)
        node = self.ownedNode(
            "report", volumeNode, segmentationNode, segmentId, "vtkMRMLTextNode", f"DFM50N report - {label}"
        )
        node.SetAttribute(REPORT_ATTRIBUTE, "1")
        node.SetText(report_html(result))
        return node

    def cubeCenterWorld(self, result, volumeNode):
        """The cube centre in world RAS: `result.center_ras` is in the CT node's frame (below its parent
        transform); slice views and the user's eye are in world coordinates."""
        import numpy as np

        p = np.r_[np.asarray(result.center_ras, dtype=float), 1.0]
        parent = volumeNode.GetParentTransformNode()
        if parent is None:
            return [float(v) for v in p[:3]]
        to_world = vtk.vtkGeneralTransform()
        parent.GetTransformToWorld(to_world)
        return [float(v) for v in to_world.TransformPoint(p[:3].tolist())]

    def jumpToCube(self, result, volumeNode, centered=True):
        """Every slice view through the cube centre (world RAS), centred on it or (centered=False) only moved
        along its normal, so the view keeps its framing; returns that point."""
        ras = self.cubeCenterWorld(result, volumeNode)
        mode = slicer.vtkMRMLSliceNode.CenteredJumpSlice if centered else slicer.vtkMRMLSliceNode.OffsetJumpSlice
        slicer.vtkMRMLSliceNode.JumpAllSlices(self.scene, *ras, mode)
        return ras

    def showCube(self, result, volumeNode, segmentationNode=None, segmentId=None, cubeVolume=True):
        """ROI of the 50 mm cube (and, with cubeVolume, the sampled cube as a volume, shown over the CT in
        the slice views) in the CT's frame. One ROI and one cube volume per volume + segment, reused."""
        if result.geometry != "physical":
            raise DFM50NError(
                "Show cube needs physical geometry: a reference-geometry cube is cut on the file's "
                "voxel grid (not 1 mm, not patient-aligned) and cannot be drawn as a 50 mm box."
            )
        parent = volumeNode.GetParentTransformNode()
        label = self._segmentLabel(volumeNode, segmentationNode, segmentId) if segmentationNode else result.case_id
        owner = (volumeNode, segmentationNode, segmentId or "")
        if segmentationNode is not None:
            roi = self.ownedNode("cubeROI", *owner, "vtkMRMLMarkupsROINode", f"DFM50N cube - {label}")
        else:
            roi = None
        roi = mrml.cube_roi(result.cube_to_ras, f"DFM50N cube - {label}", self.scene, parent, roi=roi)
        cube_node = None
        if cubeVolume and segmentationNode is not None:
            from DFM50NLib.scoring.pipeline import prepare_as_scored

            prep = prepare_as_scored(
                mrml.volume_from_node(volumeNode), mrml.segment_mask(volumeNode, segmentationNode, segmentId), result
            )
            cube_node = self.ownedNode("cubeVolume", *owner, "vtkMRMLScalarVolumeNode", f"DFM50N cube CT - {label}")
            mrml.update_volume_node(cube_node, prep.cube.ct_volume(), parent_transform=parent)
            self.showInSliceViews(volumeNode, cube_node)
        return roi, cube_node

    def showInSliceViews(self, background, foreground=None, opacity=0.5):
        """Every slice view: the CT behind, the cube CT over it (MRML only, so it works without Qt)."""
        for i in range(self.scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode")):
            composite = self.scene.GetNthNodeByClass(i, "vtkMRMLSliceCompositeNode")
            composite.SetBackgroundVolumeID(background.GetID())
            composite.SetForegroundVolumeID(foreground.GetID() if foreground is not None else None)
            composite.SetForegroundOpacity(opacity if foreground is not None else 0.0)

    def writeReport(self, result, volumeNode, segmentationNode, segmentId, outDir, formats=("html",)):
        """Write the full report (pictures of the CT, lesion and cube) into outDir; returns {kind: path}.

        Falls back to the short HTML when the report module (or matplotlib) is not available."""
        from pathlib import Path

        try:
            from DFM50NLib.report.writer import write_report
            from DFM50NLib.scoring.pipeline import prepare_as_scored

            if result.geometry != "physical":  # the report draws what it has: numbers only
                return write_report(result, outDir, formats=formats)
            prep = prepare_as_scored(
                mrml.volume_from_node(volumeNode), mrml.segment_mask(volumeNode, segmentationNode, segmentId), result
            )
            return write_report(
                result,
                outDir,
                ct=prep.ct,
                prepared_mask=prep.prepared_mask,
                cube=prep.cube,
                diameters=prep.diameters,
                formats=formats,
            )
        except ImportError as exc:
            logging.warning("DFM50N: full report unavailable (%s); writing the short one", exc)
            from DFM50NLib import atomic

            path = Path(outDir) / f"{atomic.safe_stem(result.case_id)}_report.html"
            return {"report_html": atomic.write_text(path, f"<html><body>{report_html(result)}</body></html>")}

    def writeDicomSR(self, result, volumeNode, segmentationNode, segmentId, outDir):
        """DICOM SR (TID 1500) + SEG of a scored segment, for a CT loaded from DICOM; see scene/dicom_export.py."""
        from DFM50NLib.scene.dicom_export import write_dicom_sr_for_segment

        return write_dicom_sr_for_segment(result, volumeNode, segmentationNode, segmentId, outDir)


def prepare_in_scene(ct, mask, case_id, options):
    """The panel's prepare_case on the captured Volumes: physical geometry directly, upstream-parity geometry
    through the NIfTI files it reads (`reference_files`). `options`: center, point_ras, orientation, geometry."""
    from DFM50NLib.scoring import pipeline

    kw = dict(
        case_id=case_id,
        center=options.get("center", "dt_peak"),
        point_ras=options.get("point_ras"),
        orientation=options.get("orientation", "LPS"),
    )
    if options.get("geometry") != "reference":
        return pipeline.prepare_case(ct, mask, geometry="physical", **kw)
    with reference_files(ct, mask) as (ct_path, mask_path):
        return pipeline.prepare_case(ct_path, mask_path, geometry="reference", **kw)


def score_reference(ct, mask, case_id, options):
    """Upstream-parity geometry (METHOD.md §3) works on NIfTI files, as the upstream scripts do."""
    from DFM50NLib.scoring import pipeline

    with reference_files(ct, mask) as (ct_path, mask_path):
        result = pipeline.score_case(ct_path, mask_path, case_id=case_id, **options)
    result.image_path = result.mask_path = ""  # the temporary files are gone
    return result


@contextlib.contextmanager
def reference_files(ct, mask):
    """The CT and the segment on the CT grid written to a temporary folder exactly as Slicer would export
    them; yields (CT path, mask path), deleted after."""
    import shutil
    import tempfile
    from pathlib import Path

    import numpy as np

    from DFM50NLib import io
    from DFM50NLib.geometry.mask import prepare_mask

    pm = prepare_mask(mask, ct)
    full = np.zeros(ct.shape[:3], np.uint8)
    o, n = pm.offset_ijk, pm.volume.shape
    full[o[0] : o[0] + n[0], o[1] : o[1] + n[1], o[2] : o[2] + n[2]] = pm.volume.array
    folder = Path(tempfile.mkdtemp(prefix="dfm50n-reference-"))
    try:
        ct_path = io.write_volume(ct, folder / "ct.nii")
        mask_path = io.write_volume(ct.with_array(full, name=mask.name), folder / "mask.nii")
        yield ct_path, mask_path
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _sharedEncoder(options, download):
    """The warm FCIB process (model/encoder_process.py) for the options' weights and device: in Slicer's
    console, scoring 10 segments costs one model load and 10 forwards, and torch never loads into Slicer."""
    from DFM50NLib.model.encoder_process import shared_encoder
    from DFM50NLib.model.weights import resolve_weights

    path = resolve_weights(options.get("weights"), download=download)
    return shared_encoder(path, options.get("device") or "cpu")


def _labelmapState(segmentationNode, segmentId):
    """What changes when the segment's voxels may have: its labelmap (shared by a layer) and label value."""
    segment = segmentationNode.GetSegmentation().GetSegment(segmentId)
    rep = segment.GetRepresentation(mrml.BINARY_LABELMAP) if segment is not None else None
    return None if rep is None else (rep.GetMTime(), segment.GetLabelValue())


def report_html(result) -> str:
    """The report module's short HTML when available, else a minimal one (never empty)."""
    try:
        from DFM50NLib.report.writer import report_html_minimal

        return report_html_minimal(result)
    except ImportError:
        import html

        demo = "<p><b>DEMO — not the published DFM50N classifier</b></p>" if result.classifier_is_demo else ""
        notes = "".join(f"<p>{html.escape(w)}</p>" for w in result.warnings)
        return (
            f"{demo}<p>DFM50N score <b>{result.score:.3f}</b> ({html.escape(result.risk_label)}, threshold "
            f"{result.threshold:g})</p>{notes}<p><i>{html.escape(result.disclaimer)}</i></p>"
        )
