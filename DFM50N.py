"""DFM50N Slicer module: module description, a widget that only binds Qt to the presenter, and the self-test.

All behaviour lives in DFM50NLib.scene (Qt-free, tested under slicer-core): `PanelPresenter` owns the
panel's state machine and the background scoring; `DFM50NLogic` reads and writes the scene. Nothing heavy
is imported at load time (no torch/sklearn/matplotlib) and nothing is installed at startup: packages are
offered on first use, with consent.
"""

import logging
import os
from typing import Annotated

import qt
import slicer
import vtk
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, Decimals, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

from DFM50NLib.constants import DISCLAIMER
from DFM50NLib.scene.logic import DFM50NLogic
from DFM50NLib.scene.params import (
    CENTER_CHOICES,
    DEVICE_CHOICES,
    GEOMETRY_CHOICES,
    ORIENTATION_CHOICES,
    SHORT_AXIS_DECIMALS,
    SHORT_AXIS_RANGE_CM,
    YES_NO_CHOICES,
    choice_labels,
)
from DFM50NLib.scene.presenter import POLL_INTERVAL_MS, PanelPresenter
from DFM50NLib.scene.table import keep_full_precision

README_URL = "https://github.com/DFM50N/SlicerDFM50N#readme"


class DFM50N(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        parent.title = _("DFM50N")
        parent.categories = [translate("qSlicerAbstractCoreModule", "Quantification")]
        parent.dependencies = ["Segmentations", "SegmentEditor", "Markups", "Tables"]
        parent.contributors = ["DFM50N contributors"]
        parent.helpText = _(
            "DFM50N score: probability of occult lymph-node metastasis in resectable early small-cell lung cancer, "
            "from a chest CT and the primary lesion segment (50 mm cube -> FCIB foundation model -> 9 features -> "
            "random forest; score >= 0.25 = high OLM risk). {disclaimer} The bundled classifier is a DEMO. "
            'See the <a href="{url}">README</a>.'
        ).format(disclaimer=DISCLAIMER, url=README_URL)
        parent.acknowledgementText = _(
            "DFM50N-score workflow: Xu Jiang et al., Peking Union Medical College (2025). FCIB foundation model: "
            "Pai S, Bontempi D, Hadzic I, et al. Foundation model for cancer imaging biomarkers. Nature Machine "
            "Intelligence 6, 354-367 (2024), https://doi.org/10.1038/s42256-024-00807-9 (weights: Zenodo 10528450)."
        )
        slicer.app.connect("startupCompleted()", registerSampleData)
        keep_full_precision(slicer.mrmlScene)  # scores tables exact after any scene load, panel opened or not


def registerSampleData():
    """Sample Data entry "DFM50N demo chest phantom": the generated phantom, shipped as two files in
    Resources/SampleData, loaded by Sample Data itself (so downloadSample works from code too)."""
    try:
        import SampleData
    except ImportError:  # Sample Data module disabled
        return
    from DFM50NLib.scene.sampledata import source_arguments

    icon = os.path.join(os.path.dirname(__file__), "Resources", "Icons", "DFM50N.png")
    SampleData.SampleDataLogic.registerCustomSampleDataSource(**source_arguments(icon))


def confirmInstall(message):
    return slicer.util.confirmOkCancelDisplay(message, _("DFM50N: install Python packages"))


@parameterNodeWrapper
class DFM50NParameterNode:
    """The panel settings saved with the scene (same fields and storage as DFM50NLib.scene.params; machine
    settings - weights file, classifier folder - are QSettings, never in the scene)."""

    inputVolume: slicer.vtkMRMLScalarVolumeNode
    segmentationNode: slicer.vtkMRMLSegmentationNode
    outputTable: slicer.vtkMRMLTableNode
    segmentId: str = ""
    allSegments: bool = False
    centerMethod: Annotated[str, Choice(CENTER_CHOICES)] = "dt_peak"
    orientation: Annotated[str, Choice(ORIENTATION_CHOICES)] = "LPS"
    geometry: Annotated[str, Choice(GEOMETRY_CHOICES)] = "physical"
    device: Annotated[str, Choice(DEVICE_CHOICES)] = "auto"
    smoking: Annotated[str, Choice(YES_NO_CHOICES)] = "unknown"
    spiculation: Annotated[str, Choice(YES_NO_CHOICES)] = "unknown"
    shortAxisCm: Annotated[float, WithinRange(*SHORT_AXIS_RANGE_CM), Decimals(SHORT_AXIS_DECIMALS)] = 0.0


class DFM50NWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Binds the .ui to `PanelPresenter` and renders its `PanelView`; no decision is taken here."""

    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self.presenter = None
        self._parameterNode = None
        self._guiObserver = None
        self._shownRevision = 0
        self.reportViewer = None

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        self.uiWidget = uiWidget = slicer.util.loadUI(self.resourcePath("UI/DFM50N.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = DFM50NLogic(parameterWrapper=DFM50NParameterNode)
        self.presenter = PanelPresenter(
            self.logic, None, qt.QSettings(), confirm=confirmInstall, afterImport=self.restoreSegmentSelection
        )
        self.timer = qt.QTimer()
        self.timer.setInterval(POLL_INTERVAL_MS)
        self.timer.connect("timeout()", self.onTimer)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.segmentSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.onSegmentSelection)
        self.ui.segmentSelector.connect("currentSegmentChanged(QString)", self.onSegmentSelection)
        self.ui.scoreButton.connect("clicked(bool)", self.onScoreButton)
        self.ui.measureShortAxisButton.connect("clicked(bool)", self.onMeasureShortAxis)
        self.ui.downloadWeightsButton.connect("clicked(bool)", self.onDownloadWeights)
        self.ui.browseWeightsButton.connect("clicked(bool)", lambda: self.ui.weightsPathLineEdit.browse())
        self.ui.weightsPathLineEdit.connect("currentPathChanged(QString)", self.presenter.setWeightsPath)
        self.ui.classifierPathLineEdit.connect("currentPathChanged(QString)", self.presenter.setClassifierFolder)
        self.ui.weightsPathLineEdit.connect("currentPathChanged(QString)", self.render)
        self.ui.classifierPathLineEdit.connect("currentPathChanged(QString)", self.render)
        self.ui.showCubeButton.connect("clicked(bool)", self.onShowCube)
        self.ui.openReportButton.connect("clicked(bool)", self.onOpenReport)
        self.ui.saveDicomSRButton.connect("clicked(bool)", self.onSaveDicomSR)
        self.ui.editSegmentButton.connect("clicked(bool)", self.onEditSegment)
        self.ui.weightsPathLineEdit.currentPath = self.presenter.weightsPath() or ""
        self.ui.classifierPathLineEdit.currentPath = self.presenter.classifierFolder() or ""
        self.initializeParameterNode()
        self.render()

    def cleanup(self):
        self.timer.stop()
        self.presenter.cancel()
        self.presenter.removeObservers()
        self.removeObservers()
        self.logic.removeObservers()

    # ---- parameter node (template pattern)
    def enter(self):
        self.initializeParameterNode()

    def exit(self):
        self.setParameterNode(None)

    def onSceneStartClose(self, caller, event):
        self.setParameterNode(None)  # the presenter drops the scene's result and cancels its job itself

    def onSceneEndClose(self, caller, event):
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self):
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            self._parameterNode.inputVolume = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")

    def setParameterNode(self, node):
        if self._parameterNode and self._guiObserver is not None:
            self._parameterNode.disconnectGui(self._guiObserver)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.render)
            self._guiObserver = None
        self._parameterNode = node
        self.presenter.setParameters(node)
        if node:
            self.restoreSegmentSelection()
            self._guiObserver = node.connectGui(self.ui)
            self.showChoiceLabels()
            self.addObserver(node, vtk.vtkCommand.ModifiedEvent, self.render)
        self.render()

    def showChoiceLabels(self):
        """connectGui fills each bound combo box with the raw values ("dt_peak", "auto"); show words instead.
        The connector reads and writes the item index, so renaming the items keeps the binding."""
        for combo in slicer.util.findChildren(self.uiWidget, className="QComboBox"):
            for index, label in enumerate(choice_labels(combo.property("SlicerParameterName") or "")):
                combo.setItemText(index, label)

    def restoreSegmentSelection(self):
        """Put the saved segment back (panel shown, scene loaded) without letting the selector's signals
        write it again; the presenter ignores the selector while a scene is being imported."""
        segmentationNode, segmentId = self.presenter.savedSelection()
        wasBlocked = self.ui.segmentSelector.blockSignals(True)
        self.ui.segmentSelector.setCurrentNode(segmentationNode)
        self.ui.segmentSelector.setCurrentSegmentID(segmentId)
        self.ui.segmentSelector.blockSignals(wasBlocked)

    def onSegmentSelection(self, *args):
        selector = self.ui.segmentSelector
        self.presenter.selectSegment(selector.currentNode(), selector.currentSegmentID())
        self.render()

    # ---- actions
    def onScoreButton(self):
        with slicer.util.tryWithErrorDisplay(_("DFM50N scoring could not start.")):
            self.presenter.apply()
        self.startPolling()

    def onDownloadWeights(self):
        with slicer.util.tryWithErrorDisplay(_("Download of the FCIB weights could not start.")):
            self.presenter.toggleDownload()
        self.startPolling()

    def onMeasureShortAxis(self):
        with slicer.util.tryWithErrorDisplay(_("Short axis could not be measured."), waitCursor=True):
            self.presenter.measureShortAxis()

    def onShowCube(self):
        with slicer.util.tryWithErrorDisplay(_("Could not show the cube."), waitCursor=True):
            self.presenter.showCube()

    def onOpenReport(self):
        with slicer.util.tryWithErrorDisplay(_("Could not write the report."), waitCursor=True):
            folder = os.path.join(slicer.app.defaultScenePath, "DFM50N-reports")
            paths = self.presenter.writeReport(folder)
            self.reportViewer = self.reportViewer or ReportViewer(slicer.util.mainWindow())
            self.reportViewer.show(paths["report_html"])
        self.render()

    def onSaveDicomSR(self):
        folder = qt.QFileDialog.getExistingDirectory(None, _("Folder for the DICOM SR and SEG"))
        if folder:
            with slicer.util.tryWithErrorDisplay(_("Could not write the DICOM SR."), waitCursor=True):
                paths = self.presenter.writeDicomSR(folder)
                slicer.util.infoDisplay(_("Written: {sr}").format(sr=paths["sr"]))

    def onEditSegment(self):
        p = self._parameterNode
        slicer.util.selectModule("SegmentEditor")
        editor = slicer.modules.segmenteditor.widgetRepresentation().self().editor
        editor.setSegmentationNode(p.segmentationNode)
        editor.setSourceVolumeNode(p.inputVolume)
        editor.setCurrentSegmentID(p.segmentId)

    # ---- polling and rendering
    def startPolling(self):
        if self.presenter.view().polling and not self.timer.isActive():
            self.timer.start()
        self.render()

    def onTimer(self):
        view = self.presenter.poll()
        self.render(view)
        if not view.polling:
            self.timer.stop()
            self.afterJob(view)

    def afterJob(self, view):
        error = self.presenter.takeError()
        if error:
            slicer.util.errorDisplay(error, windowTitle=_("DFM50N"))
        if view.table_id and view.revision != self._shownRevision:
            self._shownRevision = view.revision
            self.showTable(view.table_id)

    def showTable(self, tableId):
        """Switch to a layout with a table view and show the scores there (as SegmentStatistics does)."""
        layoutManager = slicer.app.layoutManager()
        layoutManager.setLayout(slicer.modules.tables.logic().GetLayoutWithTable(layoutManager.layout))
        slicer.app.applicationLogic().GetSelectionNode().SetActiveTableID(tableId)
        slicer.app.applicationLogic().PropagateTableSelection()

    def render(self, *args):
        view = args[0] if args and hasattr(args[0], "apply_text") else self.presenter.view()
        self.renderControls(view)
        self.renderResult(view)

    def renderControls(self, v):
        self.ui.scoreButton.text, self.ui.scoreButton.enabled = v.apply_text, v.apply_enabled
        self.ui.scoreButton.toolTip = v.apply_tooltip
        for box in (self.ui.inputsCollapsibleButton, self.ui.clinicalCollapsibleButton):
            box.enabled = v.inputs_enabled
        self.ui.advancedCollapsibleButton.enabled = self.ui.modelsCollapsibleButton.enabled = v.inputs_enabled
        self.ui.progressBar.visible, self.ui.progressBar.value = v.progress_visible, v.progress
        self.ui.statusLabel.text = v.status
        self.ui.downloadWeightsButton.visible, self.ui.downloadWeightsButton.text = v.download_visible, v.download_text
        self.ui.downloadWeightsButton.enabled = True
        self.ui.weightsStatusLabel.text, self.ui.classifierStatusLabel.text = v.weights_status, v.classifier_status
        if self.ui.weightsPathLineEdit.currentPath != v.weights_path:
            self.ui.weightsPathLineEdit.currentPath = v.weights_path
        self.ui.measureShortAxisButton.enabled = v.measure_enabled

    def renderResult(self, v):
        self.ui.resultLabel.text, self.ui.demoLabel.text = v.result_html, v.demo_html
        self.ui.warningsLabel.text = "\n".join(x for x in (v.warnings, v.errors) if x)
        self.ui.showCubeButton.enabled = v.show_cube_enabled
        self.ui.openReportButton.enabled = v.open_report_enabled
        self.ui.saveDicomSRButton.enabled = v.dicom_sr_enabled
        self.ui.editSegmentButton.enabled = v.edit_segment_enabled


class ReportViewer:
    """The HTML report inside Slicer (qSlicerWebWidget) with "Save PDF…" (printToPdf is asynchronous)."""

    def __init__(self, parent=None):
        self.dialog = qt.QDialog(parent)
        self.dialog.setWindowTitle(_("DFM50N report"))
        layout = qt.QVBoxLayout(self.dialog)
        self.web = slicer.qSlicerWebWidget()
        layout.addWidget(self.web)
        self.saveButton = qt.QPushButton(_("Save PDF…"))
        layout.addWidget(self.saveButton)
        self.saveButton.connect("clicked(bool)", self.onSavePdf)
        self.web.connect("pdfPrintingFinished(QString,bool)", self.onPdfFinished)
        self.dialog.resize(900, 1000)
        self.htmlPath = ""

    def show(self, htmlPath):
        self.htmlPath = str(htmlPath)
        self.web.url = qt.QUrl.fromLocalFile(self.htmlPath).toString()
        self.dialog.show()
        self.dialog.raise_()

    def onSavePdf(self):
        default = os.path.splitext(self.htmlPath)[0] + ".pdf"
        path = qt.QFileDialog.getSaveFileName(self.dialog, _("Save report as PDF"), default, "PDF (*.pdf)")
        if path:
            self.web.printToPdf(path)

    def onPdfFinished(self, path, success):
        if success:
            slicer.util.showStatusMessage(_("Report saved: {path}").format(path=path), 5000)
        else:
            slicer.util.errorDisplay(_("The PDF could not be written to {path}.").format(path=path))


class DFM50NTest(ScriptedLoadableModuleTest):
    """Synthetic CT + sphere segment, scored with a random-weight FCIB network; checks the table.

    Fails (never skips) when it cannot score: e.g. torch or scipy missing in Slicer's Python."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_score_synthetic_sphere()

    def test_score_synthetic_sphere(self):
        import shutil
        import tempfile

        import numpy as np

        from DFM50NLib.scene import dependencies

        missing = dependencies.missing()
        self.assertEqual(missing, [], f"Cannot score: missing packages {dependencies.describe(missing)}")
        from DFM50NLib.geometry.synthetic import sphere_case
        from DFM50NLib.model import fcib
        from DFM50NLib.scene import mrml
        from DFM50NLib.scene import table as scene_table

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
            self.delayDisplay("Scoring again the way the panel does (background job, polled)")
            background = self.scoreLikeThePanel(ctNode, segNode, segmentId, weights)
        finally:
            fcib.clear_encoder_cache()
            shutil.rmtree(folder, ignore_errors=True)
        self.assertTrue(0.0 <= result.score <= 1.0)
        self.assertTrue(result.classifier_is_demo)
        self.assertLess(np.linalg.norm(np.array(result.center_ras) - (10.0, -20.0, 30.0)), 2.0)
        table = scene_table.get_table(slicer.mrmlScene, create=False)
        self.assertEqual(table.GetTable().GetNumberOfRows(), 1)
        self.assertAlmostEqual(scene_table.get_row(table, 0)["score"], result.score, places=9)
        self.assertAlmostEqual(background.score, result.score, places=6)
        logging.info("DFM50N self-test score %.4f", result.score)
        self.delayDisplay("Test passed")

    def scoreLikeThePanel(self, ctNode, segNode, segmentId, weights):
        """The presenter's path: the model's child process, polled from this (the main) thread until it delivers."""
        import time

        from DFM50NLib.scene.logic import WEIGHTS_SETTING
        from DFM50NLib.scene.presenter import MemorySettings, PanelPresenter

        presenter = PanelPresenter(DFM50NLogic(), settings=MemorySettings({WEIGHTS_SETTING: weights}))
        presenter.params.inputVolume = ctNode
        presenter.selectSegment(segNode, segmentId)
        presenter.setParameter("device", "cpu")
        presenter.apply()
        t0 = time.monotonic()
        while presenter.poll().polling and time.monotonic() - t0 < 600:
            time.sleep(0.05)
        view = presenter.poll()
        self.assertEqual(view.status, "Scored 1 segment.", view.error)
        return presenter.scored[0].result
