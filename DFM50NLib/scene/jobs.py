"""Background jobs for the panel: scoring and the weights download, each in a worker thread.

The rule (as in Slicer's own modules): MRML and Qt are touched only on the main thread. A scoring job
captures its inputs on the main thread (`JobInputs.capture`: copies of the CT voxels and of each segment,
the node objects and their names), then the worker runs only numpy/torch on those copies (cube, model
load, forward, forest). The caller polls `status()` from the main thread (a QTimer in Slicer, a timer in
the browser) and, once the job is `done`, writes `job.results` into the scene itself. A cancelled job
never delivers results: Cancel during the model load or the forward lets that step finish in the worker
(torch cannot be interrupted safely), then throws its output away.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import numpy as np

from DFM50NLib.errors import DFM50NError
from DFM50NLib.scene.device import resolve_device

RUNNING, CANCELLING, CANCELLED, FAILED, DONE = "running", "cancelling", "cancelled", "failed", "done"


class JobCancelled(DFM50NError):
    """Raised inside a worker when the user cancelled; the job ends as `cancelled`."""


@dataclass(frozen=True)
class JobStatus:
    state: str  # running | cancelling | cancelled | failed | done
    fraction: float  # 0..1
    message: str
    stage: str  # machine-readable step: capture, prepare, load, forward, finish, download, verify, ...
    error: str = ""

    @property
    def finished(self) -> bool:
        return self.state in (CANCELLED, FAILED, DONE)


class BackgroundJob:
    """A worker thread with thread-safe progress, a cancel flag and a final state."""

    def __init__(self):
        self._lock = threading.Lock()
        self._cancel = threading.Event()
        self._status = JobStatus(RUNNING, 0.0, "Starting", "start")
        self._thread = None
        self.results = None

    def start(self):
        self._thread = threading.Thread(target=self._main, name=type(self).__name__, daemon=True)
        self._thread.start()
        return self

    def cancel(self):
        """Ask the worker to stop; the state becomes `cancelling` until the worker has stopped."""
        with self._lock:  # same lock as `report`: a progress update cannot overwrite "Cancelling…"
            self._cancel.set()
            if not self._status.finished:
                self._status = JobStatus(CANCELLING, self._status.fraction, "Cancelling…", self._status.stage)

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def status(self) -> JobStatus:
        with self._lock:
            return self._status

    def wait(self, timeout=None) -> JobStatus:
        """Block until the worker ends (tests, console); the GUI polls `status()` instead."""
        if self._thread is not None:
            self._thread.join(timeout)
        return self.status()

    def report(self, fraction, message, stage):
        """Called by the worker: progress, and the place where a cancel request takes effect."""
        with self._lock:
            self.check_cancel()
            self._status = JobStatus(RUNNING, float(fraction), message, stage)

    def check_cancel(self):
        if self._cancel.is_set():
            raise JobCancelled("Cancelled.")

    def _main(self):
        try:
            results = self.work()
            self.check_cancel()  # a cancel pressed during the last step discards its output
            with self._lock:
                self.results = results
                self._status = JobStatus(DONE, 1.0, "Done", "done")
        except JobCancelled:
            with self._lock:
                self._status = JobStatus(CANCELLED, self._status.fraction, "Cancelled.", "cancelled")
        except Exception as exc:  # shown to the user by the presenter; DFM50NError messages say what to do
            msg = str(exc) if isinstance(exc, DFM50NError) else f"{type(exc).__name__}: {exc}"
            with self._lock:
                self._status = JobStatus(FAILED, self._status.fraction, msg, "failed", error=msg)

    def work(self):
        raise NotImplementedError


# ---------------------------------------------------------------------------------------------- scoring


@dataclass(frozen=True)
class SegmentInput:
    segment_id: str
    name: str
    mask: object  # geometry.volume.Volume, a private copy
    mask_sha256: str


@dataclass
class JobInputs:
    """Everything a scoring job needs, captured once on the main thread: later selection changes,
    edits of the segment or of the CT do not reach a running job."""

    volume_node: object
    segmentation_node: object
    volume_name: str
    ct: object  # Volume (copied voxels)
    segments: list
    options: dict
    unreadable: list = field(default_factory=list)  # (segment name, message) that could not be read

    @classmethod
    def capture(cls, volume_node, segmentation_node, segment_ids, options):
        """Read the CT and each segment now (main thread). An unreadable segment is kept as an error
        when there are several (score-all reports it with the others); alone, it raises at once."""
        from DFM50NLib.scene import mrml

        ct = mrml.volume_from_node(volume_node)
        ct = ct.with_array(np.array(ct.array, copy=True))
        segments, unreadable = [], []
        for sid in segment_ids:
            try:
                mask = mrml.segment_mask(volume_node, segmentation_node, sid)
            except DFM50NError as exc:
                if len(segment_ids) == 1:
                    raise
                segment = segmentation_node.GetSegmentation().GetSegment(sid)
                unreadable.append((segment.GetName() if segment else sid, str(exc)))
                continue
            segments.append(SegmentInput(sid, mask.name, mask, mrml.mask_hash(mask)))
        return cls(volume_node, segmentation_node, volume_node.GetName(), ct, segments, dict(options), unreadable)


@dataclass
class ScoredSegment:
    """One result with the inputs it belongs to (never the panel's current selection)."""

    result: object  # scoring.result.Result
    volume_node: object
    segmentation_node: object
    segment_id: str
    segment_name: str
    mask_sha256: str


class ScoringJob(BackgroundJob):
    """Score `inputs.segments` in the worker; `results` = list of ScoredSegment, `errors` = per-segment
    messages of segments that failed (the others are still delivered)."""

    def __init__(self, inputs: JobInputs):
        super().__init__()
        self.inputs = inputs
        self.errors = list(inputs.unreadable)

    def work(self):
        from DFM50NLib.scoring import pipeline

        opts = dict(self.inputs.options)
        device = resolve_device(opts.pop("device", "auto"))
        n = max(1, len(self.inputs.segments))
        self.report(0.05, "Loading the FCIB model and the classifier", "load")
        encoder, classifier = pipeline.load_models(
            opts.pop("weights", None), opts.pop("model", None), device, download=False
        )
        out = []
        for k, seg in enumerate(self.inputs.segments):
            base, step = 0.1 + 0.85 * k / n, 0.85 / n
            prefix = f"Segment {k + 1}/{n} ({seg.name}): " if n > 1 else ""
            try:
                result = self._score_one(seg, opts, encoder, classifier, device, base, step, prefix)
            except JobCancelled:
                raise
            except DFM50NError as exc:
                self.errors.append((seg.name, str(exc)))
                continue
            out.append(
                ScoredSegment(
                    result,
                    self.inputs.volume_node,
                    self.inputs.segmentation_node,
                    seg.segment_id,
                    seg.name,
                    seg.mask_sha256,
                )
            )
        return out

    def _score_one(self, seg, opts, encoder, classifier, device, base, step, prefix):
        from DFM50NLib.scoring import pipeline

        case_id = f"{self.inputs.volume_name}_{seg.name}"
        t0 = time.perf_counter()
        if opts.get("geometry") == "reference":
            from DFM50NLib.scene.logic import score_reference

            self.report(base + 0.2 * step, prefix + "Computing the score (reference geometry)", "forward")
            return score_reference(
                self.inputs.ct, seg.mask, case_id, dict(opts, encoder=encoder, classifier=classifier, device=device)
            )
        self.report(base, prefix + "Cutting the 50 mm cube", "prepare")
        prep = pipeline.prepare_case(
            self.inputs.ct,
            seg.mask,
            case_id=case_id,
            center=opts.get("center", "dt_peak"),
            point_ras=opts.get("point_ras"),
            orientation=opts.get("orientation", "LPS"),
            geometry="physical",
        )
        self.report(base + 0.2 * step, prefix + "Running the FCIB network", "forward")
        t = time.perf_counter()
        feats = encoder.features(prep.cube.ct)[0]
        prep.timings["forward"] = time.perf_counter() - t
        self.report(base + 0.9 * step, prefix + "Random forest", "finish")
        result = pipeline.finish_case(prep, feats, classifier, encoder, clinical=opts.get("clinical"), device=device)
        result.timings["total"] = time.perf_counter() - t0
        return result


# ---------------------------------------------------------------------------------------------- download


class DownloadJob(BackgroundJob):
    """The 738 MB FCIB weights download, resumable: Cancel stops it and keeps the partial file, which
    the next Download continues. `results` = the path of the checked weights file."""

    def __init__(self, dest=None, **kwargs):
        super().__init__()
        self.dest = dest
        self.kwargs = kwargs

    def work(self):
        from DFM50NLib.model import weights

        self.report(0.0, "Connecting", "download")
        try:
            return weights.download_weights(dest=self.dest, progress=self._progress, **self.kwargs)
        except ImportError as exc:  # the final structure check loads the file with torch
            raise DFM50NError(
                f"The weights file was downloaded but cannot be checked without PyTorch ({exc}); it is kept. "
                "Press Score (it offers to install PyTorch through the PyTorch extension), then Download "
                "again: it finishes without downloading anything."
            ) from exc

    def _progress(self, done, total):
        mb = 1024 * 1024
        text = f"Downloading the FCIB weights: {done / mb:,.0f} of {total / mb:,.0f} MB" if total else "Downloading"
        self.report(done / total if total else 0.0, text, "download")
