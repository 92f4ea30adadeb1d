"""The DFM50N panel's behaviour without Qt: one presenter for the Slicer widget and the browser front end.

The presenter owns the panel's state machine (idle / running / cancelling / downloading), decides which
inputs are valid and which buttons are enabled, starts the background jobs (jobs.py), pairs each result
with the inputs its job captured (never with the selection as it is when the job ends), and says what
the result box shows. A front end only forwards user actions (`apply`, `selectSegment`, `setParameter`,
`showCube`, ...) and renders `view()`; it calls `poll()` from its main-loop timer while `view().polling`.

Threading: every method is called on the main thread, and so is the jobs' own work (`poll()` steps them); the
model load, the forwards and the download run in child processes (model/encoder_process.py), which never see a
node. `poll()` writes finished results into the scene.
"""

from __future__ import annotations

import html
import weakref

from DFM50NLib.constants import DEMO_LABEL
from DFM50NLib.errors import DFM50NError
from DFM50NLib.scene import jobs
from DFM50NLib.scene.logic import MODEL_SETTING, WEIGHTS_SETTING
from DFM50NLib.scene.view import (
    CANCELLING,
    DOWNLOADING,
    HIGH_COLOR,
    IDLE,
    POLL_INTERVAL_MS,
    RUNNING,
    PanelView,
    ResultLine,
    line_html,
    model_status,
    result_line,
)

__all__ = [
    "CANCELLING",
    "DOWNLOADING",
    "IDLE",
    "POLL_INTERVAL_MS",
    "RUNNING",
    "MemorySettings",
    "PanelPresenter",
    "PanelView",
    "ResultLine",
]


class MemorySettings:
    """QSettings' `value`/`setValue` over a dict (tests, the browser); Slicer passes `qt.QSettings()`."""

    def __init__(self, values=None):
        self.values = dict(values or {})

    def value(self, key, default=None):
        return self.values.get(key, default)

    def setValue(self, key, value):
        self.values[key] = value


class PanelPresenter:
    """Qt-free controller of the DFM50N panel.

    presenter = PanelPresenter(logic, params=None, settings=None, confirm=None, checkDependencies=True,
                               afterImport=None)
        logic: DFM50NLogic (its scene is used); params: the parameter node wrapper (default
        `logic.getParameterNode()`); settings: QSettings-like `value`/`setValue` for machine settings;
        confirm(message) -> bool: asked before installing a missing package (None = never install: a
        missing package is an error that says how to install it); afterImport(): called once a scene
        load or import is over (a front end puts `savedSelection()` back into its segment selector).
    """

    def __init__(self, logic, params=None, settings=None, confirm=None, checkDependencies=True, afterImport=None):
        self.logic = logic
        self.afterImport = afterImport
        self._importing = False  # a scene load/import is running: the selector's writes are not the user's
        self._closedJob = None  # a job that was running when its scene closed: never delivered
        self._jobOutputTable = None  # the output table chosen when the running job started
        self._sceneObservations = self._observeScene(logic.scene)
        self.confirm = confirm
        self.checkDependencies = checkDependencies
        self.params = params if params is not None else logic.getParameterNode()
        self.settings = settings if settings is not None else MemorySettings()
        self.job = None  # ScoringJob running or last run
        self.download = None  # DownloadJob running or last run
        self.scored = []  # ScoredSegment list of the last delivered job (what Show cube / report use)
        self._error = ""
        self._errors = ""
        self._status = ""
        self._table_id = ""
        self._revision = 0
        self._model_status = None

    # ------------------------------------------------------------------ inputs

    def setParameters(self, params):
        """A new parameter node (scene loaded or closed); None while there is none."""
        self.params = params

    def setParameter(self, name, value):
        """A plain setting changed in the front end (validated by the parameter node)."""
        if self.state() != IDLE:
            raise DFM50NError("Wait for the scoring to finish (or cancel it) before changing the inputs.")
        setattr(self.params, name, value)

    def selectSegment(self, segmentationNode, segmentId):
        """The segment selector changed; ignored while a job runs (the job has its own copy anyway) and
        while a scene is loaded or imported (the selector then picks a segment of its own, before the
        saved one is restored)."""
        if self.params is None or self.state() != IDLE or self._importing or self.logic.scene.IsImporting():
            return
        if segmentationNode is None or segmentationNode.GetSegmentation().GetSegment(segmentId or "") is None:
            segmentId = ""  # qMRMLSegmentSelectorWidget can report the previous node's segment ID
        self.params.segmentationNode = segmentationNode
        self.params.segmentId = segmentId or ""

    def savedSelection(self):
        """(segmentation node, segment ID) as saved in the parameter node: what a front end must put
        back into its segment selector after a scene load, before listening to the selector again."""
        if self.params is None:
            return None, ""
        return self.params.segmentationNode, self.params.segmentId

    def setWeightsPath(self, path):
        self.settings.setValue(WEIGHTS_SETTING, str(path or ""))
        self._model_status = None

    def setClassifierFolder(self, path):
        self.settings.setValue(MODEL_SETTING, str(path or ""))
        self._model_status = None

    def weightsPath(self):
        return self.settings.value(WEIGHTS_SETTING, "") or None

    def classifierFolder(self):
        return self.settings.value(MODEL_SETTING, "") or None

    def inputProblem(self) -> str:
        """Why Score cannot start now ("" = it can)."""
        p = self.params
        if p is None:
            return "No scene parameters yet."
        vol, seg = p.inputVolume, p.segmentationNode
        if vol is None:
            return "Select the CT volume."
        if seg is None:
            return "Select the segmentation that holds the lesion."
        if not p.allSegments and (not p.segmentId or seg.GetSegmentation().GetSegment(p.segmentId) is None):
            return "Select the lesion segment."
        if p.allSegments and seg.GetSegmentation().GetNumberOfSegments() == 0:
            return f"'{seg.GetName()}' has no segment: draw the lesion first."
        return ""

    def options(self) -> dict:
        """Pipeline options from the parameter node and the machine settings (a copy for the job)."""
        p = self.params
        return dict(
            center=p.centerMethod,
            orientation=p.orientation,
            geometry=p.geometry,
            device=p.device,
            weights=self.weightsPath(),
            model=self.classifierFolder(),
            clinical={"smoking": p.smoking, "spiculated": p.spiculation, "short_axis_cm": p.shortAxisCm or None},
        )

    # ------------------------------------------------------------------ scoring

    def state(self) -> str:
        if self.job is not None and not self.job.status().finished:
            return CANCELLING if self.job.status().state == jobs.CANCELLING else RUNNING
        if self.download is not None and not self.download.status().finished:
            return DOWNLOADING
        return IDLE

    def apply(self):
        """The Score button: start scoring when idle, cancel when running. Returns the job (or None)."""
        state = self.state()
        if state == RUNNING:
            self.cancel()
            return self.job
        if state != IDLE:
            return None
        problem = self.inputProblem()
        if problem:
            raise DFM50NError(problem)
        p = self.params
        if self.checkDependencies:  # main thread, before any work; installs only with consent
            from DFM50NLib.scene import dependencies

            dependencies.ensure(self.confirm, dependencies.for_scoring(p.geometry))
        seg = p.segmentationNode
        ids = _segment_ids(seg) if p.allSegments else [p.segmentId]
        self._error = self._errors = ""
        self._jobOutputTable = p.outputTable  # leaving the module mid-run must not redirect the rows
        inputs = jobs.JobInputs.capture(p.inputVolume, seg, ids, self.options())
        self.job = jobs.ScoringJob(inputs).start()
        self._status = "Scoring…"
        return self.job

    def cancel(self):
        """Cancel the running scoring (its result will be discarded, the table is left as it was)."""
        if self.job is not None and not self.job.status().finished:
            self.job.cancel()

    def poll(self) -> PanelView:
        """Main-thread tick: advance the running job one short step (never blocks), deliver a finished job
        into the scene (once) and return the view."""
        for running in (self.job, self.download):
            if running is not None:
                running.step()
        job = self.job
        if job is not None and job.status().finished and not getattr(job, "_delivered", False):
            job._delivered = True
            self._deliver(job)
        dl = self.download
        if dl is not None and dl.status().finished and not getattr(dl, "_delivered", False):
            dl._delivered = True
            self._deliverDownload(dl)
        return self.view()

    def wait(self, timeout=None) -> PanelView:
        """Block until the running jobs end, then poll (console and tests; a GUI polls with a timer)."""
        for job in (self.job, self.download):
            if job is not None:
                job.wait(timeout)
        return self.poll()

    def _deliver(self, job):
        if job is self._closedJob:  # its scene was closed: nothing of it goes into the new one
            return
        status = job.status()
        if status.state == jobs.CANCELLED:
            self._status = "Cancelled: nothing was written."
            return
        if status.state == jobs.FAILED:
            self._error = status.error
            self._status = "Scoring failed."
            return
        errors, delivered = list(job.errors), []
        for s in job.results:
            if gone := _deletedInput(s):
                errors.append((s.segment_name, f"{gone} was deleted while it was scored: its score was not written."))
            else:
                delivered.append(s)
        table = self._jobOutputTable  # chosen at Score: leaving the module mid-run must not redirect the row
        table = table if table is not None and table.GetScene() is self.logic.scene else None
        table = table if table is not None or not delivered else self.logic.getTableNode()
        for s in delivered:
            self.logic.writeResult(s.result, s.volume_node, s.segmentation_node, s.segment_id, s.mask_sha256, table)
        if self.params is not None and self.params.outputTable is None and delivered:
            self.params.outputTable = table
        self.scored = delivered
        self._errors = "\n".join(f"{name}: {msg}" for name, msg in errors)
        if errors and not delivered:
            self._error = f"No segment could be scored:\n{self._errors}"
        n = len(delivered)
        self._status = f"Scored {n} segment{'s' if n != 1 else ''}." + (f" {len(errors)} failed." if errors else "")
        if delivered:
            self._table_id = table.GetID()
            self._revision += 1

    def takeError(self) -> str:
        """The last failure message, once (a front end shows it in a dialog, then it is cleared)."""
        msg, self._error = self._error, ""
        return msg

    # ------------------------------------------------------------------ scene events

    def _observeScene(self, scene):
        low = -100.0  # after the Qt scene models: they re-populate the selectors at the end of the batch
        return [
            (scene, scene.AddObserver(scene.StartImportEvent, _WeakObserver(self, "_onStartImport"))),
            (scene, scene.AddObserver(scene.EndBatchProcessEvent, _WeakObserver(self, "_onEndBatchProcess"), low)),
            (scene, scene.AddObserver(scene.StartCloseEvent, _WeakObserver(self, "_onSceneClose"))),
            (scene, scene.AddObserver(scene.EndCloseEvent, _WeakObserver(self, "_onSceneClose"))),
        ]

    def removeObservers(self):
        """Stop watching the scene (a front end's cleanup)."""
        for scene, tag in self._sceneObservations:
            scene.RemoveObserver(tag)
        self._sceneObservations = []

    def _onStartImport(self, caller, event):
        self._importing = True

    def _onEndBatchProcess(self, caller, event):
        """The import is over (the selectors have re-populated by now): recheck the rows against the
        loaded segments, then let the front end restore the saved segment."""
        if not self._importing:
            return
        self._importing = False
        self.logic.refreshStale()
        if self.afterImport is not None:
            self.afterImport()

    def _onSceneClose(self, caller, event):
        """A closed scene's result is gone: nothing is shown, Show cube / reports have nothing to act on,
        and a running job is cancelled and never delivered into the next scene."""
        if self.job is not None:  # finished or not: delivered at most into the scene it was started in
            self._closedJob = self.job
            self.cancel()
        self._jobOutputTable = None
        self.scored = []
        self._status = self._error = self._errors = self._table_id = ""
        self.logic.removeObservers()
        self.logic.lastResults.clear()

    # ------------------------------------------------------------------ after scoring

    def current(self, segmentId=None):
        """The ScoredSegment Show cube / Open report act on: the selected segment when the last job
        scored it, else the job's first result. Always paired with the job's own inputs."""
        if not self.scored:
            raise DFM50NError("Score a segment first.")
        want = segmentId if segmentId is not None else (self.params.segmentId if self.params else "")
        for s in self.scored:
            if s.segment_id == want and (self.params is None or s.segmentation_node is self.params.segmentationNode):
                return s
        return self.scored[0]

    def showCube(self, segmentId=None, cubeVolume=True, centered=True):
        """ROI + cube volume of the scored segment (reused per segment) and slices jumped to its centre
        (world RAS). Returns (roi, cube volume node, world centre). The browser asks for the outline only and
        for slices that move without panning (the patient stays in view)."""
        s = self.current(segmentId)
        roi, cube = self.logic.showCube(s.result, s.volume_node, s.segmentation_node, s.segment_id, cubeVolume)
        return roi, cube, self.logic.jumpToCube(s.result, s.volume_node, centered)

    def reportNode(self, segmentId=None):
        """The scored segment's report text node (exactly one per segment)."""
        s = self.current(segmentId)
        return self.logic.reportTextNode(s.result, s.volume_node, s.segmentation_node, s.segment_id)

    def writeReport(self, outDir, segmentId=None, formats=("html",)):
        """The full report of the scored segment into outDir; returns {kind: path}. The report's figures
        need matplotlib: offered for installation first (declined = the short report, said in status)."""
        s = self.current(segmentId)
        if self.checkDependencies:
            from DFM50NLib.scene import dependencies

            try:
                dependencies.ensure(self.confirm, dependencies.REPORT_REQUIREMENTS)
            except dependencies.DependencyError:
                self._status = "Short report (no pictures): matplotlib is not installed."
        return self.logic.writeReport(s.result, s.volume_node, s.segmentation_node, s.segment_id, outDir, formats)

    def writeDicomSR(self, outDir, segmentId=None, fileForInstance=None):
        """DICOM SR (TID 1500) + SEG of the scored segment into outDir, for a CT loaded from DICOM; returns the
        paths. `fileForInstance` (UID -> file) defaults to Slicer's DICOM database."""
        from DFM50NLib.scene.dicom_export import write_dicom_sr_for_segment

        s = self.current(segmentId)
        return write_dicom_sr_for_segment(
            s.result, s.volume_node, s.segmentation_node, s.segment_id, outDir, fileForInstance=fileForInstance
        )

    def measureShortAxis(self):
        """Measure the selected segment's short axis (cm, rounded to the field's decimals) into the
        parameter node; returns it."""
        from DFM50NLib.scene import params as P

        p = self.params
        short_cm, _ = self.logic.measureShortAxis(p.inputVolume, p.segmentationNode, p.segmentId)
        value = min(max(round(short_cm, P.SHORT_AXIS_DECIMALS), P.SHORT_AXIS_RANGE_CM[0]), P.SHORT_AXIS_RANGE_CM[1])
        p.shortAxisCm = value
        return value

    # ------------------------------------------------------------------ weights download

    def startDownload(self, dest=None, **kwargs):
        """Download the FCIB weights in the background (resumes a partial file); Cancel keeps the part."""
        if self.state() != IDLE:
            return None
        self._error = ""
        self.download = jobs.DownloadJob(dest, **kwargs).start()
        return self.download

    def cancelDownload(self):
        if self.download is not None and not self.download.status().finished:
            self.download.cancel()

    def toggleDownload(self):
        """The Download button: start, or cancel a running download."""
        if self.state() == DOWNLOADING:
            self.cancelDownload()
            return self.download
        return self.startDownload()

    def _deliverDownload(self, dl):
        status = dl.status()
        if status.state == jobs.DONE:
            self.setWeightsPath(dl.results)
            self._status = f"FCIB weights ready: {dl.results}"
        elif status.state == jobs.CANCELLED:
            self._status = "Download cancelled: the partial file is kept; Download again resumes it."
        else:
            self._error = f"Download of the FCIB weights failed: {status.error}"
            self._status = "Download failed."

    def modelStatus(self):
        """(weights found?, weights text, classifier text); cached until a path changes."""
        if self._model_status is None:
            self._model_status = model_status(self.weightsPath(), self.classifierFolder())
        return self._model_status

    # ------------------------------------------------------------------ view

    def view(self) -> PanelView:
        state = self.state()
        problem = self.inputProblem()
        v = PanelView(state=state, polling=state != IDLE, revision=self._revision, table_id=self._table_id)
        v.apply_text = {RUNNING: "Cancel", CANCELLING: "Cancelling…"}.get(state, "Score")
        v.apply_enabled = state == RUNNING or (state == IDLE and not problem)
        v.apply_tooltip = problem or ("Stop this scoring" if state == RUNNING else "Compute the DFM50N score")
        v.inputs_enabled = state == IDLE
        active = self.job if state in (RUNNING, CANCELLING) else self.download if state == DOWNLOADING else None
        v.progress_visible = active is not None
        if active is not None:
            st = active.status()
            v.progress, v.status = int(round(100 * st.fraction)), st.message
        else:
            v.status = self._status
        v.error, v.errors = self._error, self._errors
        self._renderResults(v)
        idle = state == IDLE
        v.open_report_enabled = idle and bool(self.scored)
        v.show_cube_enabled = idle and any(s.result.geometry == "physical" for s in self.scored)
        v.dicom_sr_enabled = idle and bool(self.scored) and _from_dicom(self.scored[0].volume_node)
        p = self.params
        has_segment = bool(p is not None and p.segmentationNode is not None and p.segmentId)
        v.edit_segment_enabled = idle and has_segment  # an edit during a run would not be in its score
        v.measure_enabled = idle and has_segment and p.inputVolume is not None
        found, v.weights_status, v.classifier_status = self.modelStatus()
        v.weights_path = self.weightsPath() or ""
        v.download_visible = not found or state == DOWNLOADING
        v.download_text = "Cancel download" if state == DOWNLOADING else "Download…"
        return v

    def _renderResults(self, v):
        v.result_lines = [result_line(s) for s in self.scored]
        if not v.result_lines:
            return
        v.result_html = "<br>".join(line_html(line, len(v.result_lines) > 1) for line in v.result_lines)
        if any(line.demo for line in v.result_lines):
            v.demo_html = f'<b style="color:white;background:{HIGH_COLOR}">&nbsp;{html.escape(DEMO_LABEL)}&nbsp;</b>'
        notes = []
        for s in self.scored:
            for w in s.result.warnings:
                if w != DEMO_LABEL:
                    notes.append(f"{s.segment_name}: {w}" if len(self.scored) > 1 else w)
        v.warnings = "\n".join(notes)


class _WeakObserver:
    """A scene observer that neither keeps `obj` alive nor runs freed code. When the scene is collected as part
    of a reference cycle, the collector first clears the objects of the cycle (this one included: its slots
    are emptied; a function's globals would be, and running it then crashes), then the dying scene closes
    itself and fires its close events at us: with the slots gone we just return."""

    __slots__ = ("_method", "_ref")

    def __init__(self, obj, method):
        self._ref, self._method = weakref.ref(obj), method

    def __call__(self, caller, event):
        ref = getattr(self, "_ref", None)
        target = ref() if ref is not None else None
        if target is not None:
            getattr(target, self._method)(caller, event)


def _deletedInput(scored) -> str:
    """What of a result's inputs left the scene during its run ("" = all there): its row and report would
    need them."""
    if scored.volume_node.GetScene() is None:
        return f"The CT '{scored.volume_node.GetName()}'"
    if scored.segmentation_node.GetScene() is None:
        return f"The segmentation '{scored.segmentation_node.GetName()}'"
    if scored.segmentation_node.GetSegmentation().GetSegment(scored.segment_id) is None:
        return f"The segment '{scored.segment_name}'"
    return ""


def _segment_ids(segmentationNode) -> list:
    seg = segmentationNode.GetSegmentation()
    return [seg.GetNthSegmentID(i) for i in range(seg.GetNumberOfSegments())]


def _from_dicom(volumeNode) -> bool:
    from DFM50NLib.scene.dicom_export import can_write_dicom_sr

    return can_write_dicom_sr(volumeNode)
