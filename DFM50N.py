"""DFM50N Slicer module: module description, a thin widget, and the self-test.

All computation is in DFM50NLib (DFM50NLogic is Qt-free and console-callable). Nothing heavy is
imported at load time (no torch/monai/sklearn); packages are installed only on first use, with consent.
"""

import logging
import os
from typing import Annotated

import qt
import slicer
import vtk
from slicer.parameterNodeWrapper import Choice, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

from DFM50NLib.constants import DEMO_LABEL, DISCLAIMER
from DFM50NLib.scene.logic import MODEL_SETTING, WEIGHTS_SETTING, DFM50NLogic, ScoringCancelled

README_URL = "https://github.com/DFM50N/SlicerDFM50N#readme"
# The choices of each combo box: the parameter node's Choice and the items the widget adds are one list
CENTER_CHOICES = ["dt_peak", "centroid"]
ORIENTATION_CHOICES = ["LPS", "LAS", "RAS", "SPL"]
GEOMETRY_CHOICES = ["physical", "reference"]
YES_NO_CHOICES = ["unknown", "yes", "no"]


class DFM50N(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        parent.title = "DFM50N"
        parent.categories = ["Quantification"]
        parent.dependencies = ["Segmentations"]
        parent.contributors = ["DFM50N contributors"]
        parent.helpText = (
            "DFM50N score: probability of occult lymph-node metastasis in resectable early small-cell lung cancer, "
            "from a chest CT and the primary lesion segment (50 mm cube -> FCIB foundation model -> 9 features -> "
            "random forest; score >= 0.25 = high OLM risk). " + DISCLAIMER + " The bundled classifier is a DEMO. "
            f'See the <a href="{README_URL}">README</a>.'
        )
        parent.acknowledgementText = (
            "DFM50N-score workflow: Xu Jiang et al., Peking Union Medical College (2025). FCIB foundation model: "
            "Pai S, Bontempi D, Hadzic I, et al. Foundation model for cancer imaging biomarkers. Nature Machine "
            "Intelligence 6, 354-367 (2024), https://doi.org/10.1038/s42256-024-00807-9 (weights: Zenodo 10528450)."
        )


@parameterNodeWrapper
class DFM50NParameterNode:
    """Every panel setting, saved with the scene (the weights path is a machine setting: QSettings)."""

    inputVolume: slicer.vtkMRMLScalarVolumeNode
    segmentationNode: slicer.vtkMRMLSegmentationNode
    segmentId: str = ""
    allSegments: bool = False
    centerMethod: Annotated[str, Choice(CENTER_CHOICES)] = "dt_peak"
    orientation: Annotated[str, Choice(ORIENTATION_CHOICES)] = "LPS"
    geometry: Annotated[str, Choice(GEOMETRY_CHOICES)] = "physical"
    classifierFolder: str = ""
    smoking: Annotated[str, Choice(YES_NO_CHOICES)] = "unknown"
    spiculation: Annotated[str, Choice(YES_NO_CHOICES)] = "unknown"
    shortAxisCm: float = 0.0  # 0 = measured on the segment


class DFM50NWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._guiObserver = None
        self._running = False
        self._last = None  # (result, volume, segmentation, segment id)

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/DFM50N.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = DFM50NLogic()
        for combo, items in (
            (self.ui.centerMethodComboBox, CENTER_CHOICES),
            (self.ui.orientationComboBox, ORIENTATION_CHOICES),
            (self.ui.geometryComboBox, GEOMETRY_CHOICES),
            (self.ui.smokingComboBox, YES_NO_CHOICES),
            (self.ui.spiculationComboBox, YES_NO_CHOICES),
        ):
            combo.addItems(items)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndImportEvent, self.onSceneImported)
        self.ui.segmentSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.onSegmentSelection)
        self.ui.segmentSelector.connect("currentSegmentChanged(QString)", self.onSegmentSelection)
        self.ui.scoreButton.connect("clicked(bool)", self.onScoreButton)
        self.ui.measureShortAxisButton.connect("clicked(bool)", self.onMeasureShortAxis)
        self.ui.downloadWeightsButton.connect("clicked(bool)", self.onDownloadWeights)
        self.ui.browseWeightsButton.connect("clicked(bool)", lambda: self.ui.weightsPathLineEdit.browse())
        self.ui.weightsPathLineEdit.connect("currentPathChanged(QString)", self.onModelPathsChanged)
        self.ui.classifierPathLineEdit.connect("currentPathChanged(QString)", self.onModelPathsChanged)
        self.ui.showCubeButton.connect("clicked(bool)", self.onShowCube)
        self.ui.openReportButton.connect("clicked(bool)", self.onOpenReport)
        self.ui.editSegmentButton.connect("clicked(bool)", self.onEditSegment)
        self.ui.weightsPathLineEdit.currentPath = qt.QSettings().value(WEIGHTS_SETTING, "")
        self.ui.classifierPathLineEdit.currentPath = qt.QSettings().value(MODEL_SETTING, "")
        self.ui.progressBar.visible = False
        self.initializeParameterNode()
        self.updateModelStatus()
        self.updateButtons()

    def cleanup(self):
        self.removeObservers()
        if self.logic:
            self.logic.removeObservers()

    # ---- parameter node (template pattern)
    def enter(self):
        self.initializeParameterNode()

    def exit(self):
        self.setParameterNode(None)

    def onSceneStartClose(self, caller, event):
        self.setParameterNode(None)
        self.logic.removeObservers()
        self._last = None

    def onSceneEndClose(self, caller, event):
        if self.parent.isEntered:
            self.initializeParameterNode()

    def onSceneImported(self, caller, event):
        self.logic.refreshStale()

    def initializeParameterNode(self):
        node = slicer.mrmlScene.GetSingletonNode("DFM50N", "vtkMRMLScriptedModuleNode")
        if node is None:  # DFM50NLogic is Qt- and module-free, so the widget owns the parameter node
            node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScriptedModuleNode", "DFM50N")
            node.SetSingletonTag("DFM50N")
            node.SetAttribute("ModuleName", "DFM50N")
        wrapped = DFM50NParameterNode(node)
        if not wrapped.inputVolume:
            wrapped.inputVolume = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
        self.setParameterNode(wrapped)

    def setParameterNode(self, node):
        if self._parameterNode and self._guiObserver is not None:
            self._parameterNode.disconnectGui(self._guiObserver)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateButtons)
            self._guiObserver = None
        self._parameterNode = node
        if node:
            self._guiObserver = node.connectGui(self.ui)
            self.addObserver(node, vtk.vtkCommand.ModifiedEvent, self.updateButtons)
            self.ui.segmentSelector.setCurrentNode(node.segmentationNode)
            if node.segmentId:
                self.ui.segmentSelector.setCurrentSegmentID(node.segmentId)
            self.ui.classifierPathLineEdit.currentPath = (
                node.classifierFolder or self.ui.classifierPathLineEdit.currentPath
            )

    def onSegmentSelection(self, *args):
        if self._parameterNode:
            self._parameterNode.segmentationNode = self.ui.segmentSelector.currentNode()
            self._parameterNode.segmentId = self.ui.segmentSelector.currentSegmentID() or ""
        self.updateButtons()

    # ---- models
    def onModelPathsChanged(self, *args):
        qt.QSettings().setValue(WEIGHTS_SETTING, self.ui.weightsPathLineEdit.currentPath)
        qt.QSettings().setValue(MODEL_SETTING, self.ui.classifierPathLineEdit.currentPath)
        if self._parameterNode:
            self._parameterNode.classifierFolder = self.ui.classifierPathLineEdit.currentPath
        self.updateModelStatus()

    def updateModelStatus(self):
        from DFM50NLib.errors import DFM50NError

        try:
            from DFM50NLib.model.weights import resolve_weights

            path = resolve_weights(self.ui.weightsPathLineEdit.currentPath or None)
            self.ui.weightsStatusLabel.text, found = f"found: {path}", True
        except (DFM50NError, ImportError) as exc:
            self.ui.weightsStatusLabel.text, found = "not found", False
            self.ui.weightsStatusLabel.toolTip = str(exc)
        self.ui.downloadWeightsButton.visible = not found
        try:
            from DFM50NLib.model.classifier import load_classifier

            clf = load_classifier(self.ui.classifierPathLineEdit.currentPath or None)
            demo = f' <b style="color:#b3261e">{DEMO_LABEL}</b>' if clf.is_demo else ""
            self.ui.classifierStatusLabel.text = f"{clf.name} (threshold {clf.threshold:g}){demo}"
        except (DFM50NError, ImportError) as exc:
            self.ui.classifierStatusLabel.text = f'<span style="color:#b3261e">{exc}</span>'

    def onDownloadWeights(self):
        with slicer.util.tryWithErrorDisplay("Download of the FCIB weights failed.", waitCursor=True):
            from DFM50NLib.model import weights
            from DFM50NLib.scene import dependencies

            dependencies.ensure(self.confirm)
            self.ui.progressBar.visible = True

            def progress(done, total):
                self.ui.progressBar.value = int(100 * done / total) if total else 0
                slicer.app.processEvents()

            try:
                path = weights.download_weights(progress=progress)
            finally:
                self.ui.progressBar.visible = False
            self.ui.weightsPathLineEdit.currentPath = str(path)

    # ---- scoring
    def confirm(self, message):
        return slicer.util.confirmOkCancelDisplay(message, "DFM50N: install Python packages")

    def updateButtons(self, *args):
        p = self._parameterNode
        ready = bool(p and p.inputVolume and p.segmentationNode and (p.segmentId or p.allSegments))
        self.ui.scoreButton.enabled = ready or self._running
        self.ui.scoreButton.text = "Cancel" if self._running else "Score"
        for b in (self.ui.showCubeButton, self.ui.openReportButton):
            b.enabled = self._last is not None and not self._running
        self.ui.editSegmentButton.enabled = bool(p and p.segmentationNode and p.segmentId)

    def options(self):
        p = self._parameterNode
        return dict(
            center=p.centerMethod,
            orientation=p.orientation,
            geometry=p.geometry,
            weights=self.ui.weightsPathLineEdit.currentPath or None,
            model=self.ui.classifierPathLineEdit.currentPath or None,
            clinical={"smoking": p.smoking, "spiculated": p.spiculation, "short_axis_cm": p.shortAxisCm or None},
        )

    def progress(self, fraction, message):
        self.ui.progressBar.value = int(100 * fraction)
        self.ui.statusLabel.text = message
        slicer.app.processEvents()  # lets Cancel be pressed between stages

    def onScoreButton(self):
        if self._running:
            self.logic.requestCancel()
            return
        p = self._parameterNode
        self._running = True
        self.ui.progressBar.visible = True
        self.updateButtons()
        try:
            with slicer.util.tryWithErrorDisplay("DFM50N scoring failed.", waitCursor=True):
                try:
                    kw = dict(progress=self.progress, confirm=self.confirm, **self.options())
                    if p.allSegments:
                        results = self.logic.scoreAllSegments(p.inputVolume, p.segmentationNode, **kw)
                        sid = p.segmentId if p.segmentId in results else next(iter(results))
                        self._last = (results[sid], p.inputVolume, p.segmentationNode, sid)
                    else:
                        r = self.logic.scoreSegment(p.inputVolume, p.segmentationNode, p.segmentId, **kw)
                        self._last = (r, p.inputVolume, p.segmentationNode, p.segmentId)
                    self.showResult(self._last[0])
                except ScoringCancelled:
                    self.ui.statusLabel.text = "Cancelled."
        finally:
            self._running = False
            self.ui.progressBar.visible = False
            self.updateButtons()

    def showResult(self, r):
        color = "#b3261e" if r.high_risk else "#1e6b34"
        self.ui.demoLabel.text = (
            f'<b style="color:white;background:#b3261e">&nbsp;{DEMO_LABEL}&nbsp;</b>' if r.classifier_is_demo else ""
        )
        combined = (
            ""
            if r.combined_probability is None
            else f"<br>Combined model: {r.combined_probability:.3f} "
            f"({'positive' if r.combined_positive else 'negative'})"
        )
        self.ui.resultLabel.text = (
            f'DFM50N score <b style="color:{color}">{r.score:.3f}</b> '
            f'(threshold {r.threshold:g}): <b style="color:{color}">{r.risk_label}</b>'
            f"{combined}"
        )
        self.ui.warningsLabel.text = "\n".join(w for w in r.warnings if w != DEMO_LABEL)
        table = self.logic.getTableNode()
        slicer.app.applicationLogic().GetSelectionNode().SetActiveTableID(table.GetID())
        slicer.app.applicationLogic().PropagateTableSelection()

    def onMeasureShortAxis(self):
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay("Short axis could not be measured.", waitCursor=True):
            short_cm, long_mm = self.logic.measureShortAxis(p.inputVolume, p.segmentationNode, p.segmentId)
            p.shortAxisCm = round(short_cm, 2)

    def onShowCube(self):
        with slicer.util.tryWithErrorDisplay("Could not show the cube.", waitCursor=True):
            r, vol, seg, sid = self._last
            roi, cube = self.logic.showCube(r, vol, seg, sid)
            slicer.util.setSliceViewerLayers(background=vol)
            slicer.modules.markups.logic().JumpSlicesToLocation(*r.center_ras, True)

    def onOpenReport(self):
        with slicer.util.tryWithErrorDisplay("Could not write the report.", waitCursor=True):
            r, vol, seg, sid = self._last
            out = os.path.join(slicer.app.defaultScenePath, "DFM50N-reports")
            paths = self.logic.writeReport(r, vol, seg, sid, out)
            qt.QDesktopServices.openUrl(qt.QUrl.fromLocalFile(str(paths["report_html"])))

    def onEditSegment(self):
        p = self._parameterNode
        slicer.util.selectModule("SegmentEditor")
        editor = slicer.modules.segmenteditor.widgetRepresentation().self().editor
        editor.setSegmentationNode(p.segmentationNode)
        editor.setSourceVolumeNode(p.inputVolume)
        editor.setCurrentSegmentID(p.segmentId)


class DFM50NTest(ScriptedLoadableModuleTest):
    """Synthetic CT + sphere segment, scored with a random-weight FCIB network; checks the table."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_score_synthetic_sphere()

    def test_score_synthetic_sphere(self):
        import shutil
        import tempfile

        import numpy as np

        from DFM50NLib.geometry.synthetic import sphere_case
        from DFM50NLib.model import fcib
        from DFM50NLib.scene import dependencies, mrml
        from DFM50NLib.scene import table as scene_table

        if dependencies.missing():
            self.delayDisplay(f"Skipped: missing packages {dependencies.describe(dependencies.missing())}")
            return
        self.delayDisplay("Building a synthetic CT and lesion")
        ct, mask = sphere_case((10.0, -20.0, 30.0), 8.0, shape=(64, 64, 24), spacing=(0.8, 0.8, 2.0))
        ctNode = mrml.add_volume_node(ct, "DFM50N test CT")
        labelNode = mrml.add_volume_node(mask, "lesion", labelmap=True)
        segNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "lesion segmentation")
        slicer.modules.segmentations.logic().ImportLabelmapToSegmentationNode(labelNode, segNode)
        segmentId = segNode.GetSegmentation().GetNthSegmentID(0)
        folder = tempfile.mkdtemp(prefix="dfm50n-selftest-")
        weights = os.path.join(folder, "fcib_random.torch")
        self.delayDisplay("Writing a random-weight FCIB checkpoint (738 MB, real format)")
        fcib.save_random_checkpoint(weights, seed=0)
        try:
            self.delayDisplay("Scoring")
            result = DFM50NLogic().scoreSegment(ctNode, segNode, segmentId, weights=weights)
        finally:
            fcib.clear_encoder_cache()
            shutil.rmtree(folder, ignore_errors=True)
        self.assertTrue(0.0 <= result.score <= 1.0)
        self.assertTrue(result.classifier_is_demo)
        self.assertLess(np.linalg.norm(np.array(result.center_ras) - (10.0, -20.0, 30.0)), 2.0)
        table = scene_table.get_table(slicer.mrmlScene, create=False)
        self.assertEqual(table.GetTable().GetNumberOfRows(), 1)
        self.assertAlmostEqual(scene_table.get_row(table, 0)["score"], result.score, places=9)
        logging.info("DFM50N self-test score %.4f", result.score)
        self.delayDisplay("Test passed")
