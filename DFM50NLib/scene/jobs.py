"""Background jobs for the panel: scoring and the weights download, advanced by the main thread's poll.

The heavy work runs in child processes (model/encoder_process.py): FCIB's load and forward in the session's warm
scoring process, the download with its structure check and hash in a download process. Not in Python threads:
inside Slicer the main thread keeps the GIL while Qt idles, so a worker thread only advances during the 100 ms
polls (one score took 78-108 s that way, instead of 2-8 s). What is left runs on the main thread: at the Score
click the inputs are captured (`JobInputs.capture`: copies of the CT voxels and of each segment) and the 50 mm
cubes cut; then each `step()` (the presenter's poll) sends a cube when the child is free and takes the features
when they have arrived (random forest -> `Result`), never waiting. No node or Qt object crosses to the child;
the presenter writes `job.results` into the scene. Cancel kills the busy child at once (torch cannot be
interrupted otherwise), and a cancelled job never delivers: every decision is taken on the main thread, so a
Cancel cannot slip in between a check and the end.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from DFM50NLib.errors import DFM50NError

RUNNING, CANCELLING, CANCELLED, FAILED, DONE = "running", "cancelling", "cancelled", "failed", "done"
LOADING_MESSAGE = "Loading the model"


@dataclass(frozen=True)
class JobStatus:
    state: str  # running | cancelling | cancelled | failed | done
    fraction: float  # 0..1
    message: str
    stage: str  # machine-readable step: load, prepare, forward, finish, download, ...
    error: str = ""

    @property
    def finished(self) -> bool:
        return self.state in (CANCELLED, FAILED, DONE)


class PolledJob:
    """A job advanced by `step()` from the main thread; its child process does the heavy work."""

    def __init__(self):
        self._status = JobStatus(RUNNING, 0.0, "Starting", "start")
        self.process = None  # the encoder_process.ServiceProcess working for this job
        self._stopping = None  # the process a Cancel killed, until it is gone
        self.results = None

    def start(self):
        self._guard(self.begin)
        return self

    def status(self) -> JobStatus:
        return self._status

    def step(self) -> JobStatus:
        """One main-thread tick: take what the child sent, do the next short piece of work. Never blocks."""
        if self._status.state == CANCELLING:
            if self._stopping is None or self._stopping.gone():
                self._status = JobStatus(CANCELLED, self._status.fraction, "Cancelled.", "cancelled")
                self.ended()
        elif not self._status.finished:
            self._guard(self.advance)
        return self._status

    def cancel(self):
        """Stop now: the busy child is killed (with whatever it started); `cancelled` once it is gone."""
        if self._status.finished:
            return
        self._status = JobStatus(CANCELLING, self._status.fraction, "Cancelling…", self._status.stage)
        self._stopping = self.stop()
        self.step()

    def wait(self, timeout=None, interval=0.01) -> JobStatus:
        """Step until the job ends (console, tests); the GUI steps from its timer instead."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.step().finished and (deadline is None or time.monotonic() < deadline):
            time.sleep(interval)
        return self._status

    def report(self, fraction, message, stage):
        """Progress; the fraction never goes back (a bar that jumps back reads as a restart)."""
        self._status = JobStatus(RUNNING, max(float(fraction), self._status.fraction), message, stage)

    def _finish(self, results):
        self.results = results
        self._status = JobStatus(DONE, 1.0, "Done", "done")

    def _guard(self, work):
        try:
            work()
        except Exception as exc:  # shown to the user by the presenter; DFM50NError messages say what to do
            msg = str(exc) if isinstance(exc, DFM50NError) else f"{type(exc).__name__}: {exc}"
            self._status = JobStatus(FAILED, self._status.fraction, msg, "failed", error=msg)
            self.ended()

    def begin(self):
        raise NotImplementedError

    def advance(self):
        raise NotImplementedError

    def stop(self):
        """Cancel: end the child's work; returns the process killed (None: nothing to wait for)."""
        if self.process is not None:
            self.process.kill()
        return self.process

    def ended(self):
        """After a failure or a Cancel: nothing by default (the warm scoring process stays for the next score;
        a killed one is replaced by the next shared_encoder())."""


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


class ScoringJob(PolledJob):
    """Score `inputs.segments`; `results` = list of ScoredSegment, `errors` = (segment name, message) of the
    segments that failed (the others are still delivered). The FCIB forwards run in the session's warm
    process (encoder_process.shared_encoder): one model load per session, then one forward per segment.

    `start()` (the Score click, main thread) cuts every cube while the process starts or loads: that is the
    main thread's share (0.1 s on a small CT, ~0.7 s per segment on 512x512x300), done once at the click
    rather than spread over ticks that must stay short. Each later `step()` only passes cubes and features."""

    def __init__(self, inputs: JobInputs):
        super().__init__()
        self.inputs = inputs
        self.errors = list(inputs.unreadable)
        self.classifier = None
        self._options = {}
        self._todo = []  # (segment, PreparedCase, t0): cube cut, not sent yet
        self._sent = None  # (segment, PreparedCase, t0, Call, time sent): cube in the child
        self._sha_call = None
        self._out = []

    def begin(self):
        from DFM50NLib.model import encoder_process
        from DFM50NLib.model.classifier import load_classifier
        from DFM50NLib.model.weights import resolve_weights

        opts = dict(self.inputs.options)
        path = resolve_weights(opts.pop("weights", None))
        self.classifier = load_classifier(opts.pop("model", None))
        self.process = encoder_process.shared_encoder(path, opts.pop("device", None) or "auto")  # loads meanwhile
        self._options = opts
        for seg in self.inputs.segments:
            self._prepare(seg)
        self.process.poll()
        if not self.process.loaded:
            self.report(0.05, LOADING_MESSAGE, "load")

    def stop(self):
        enc = self.process
        if enc is None or (enc.loaded and enc.idle):  # a warm, idle process has nothing to stop: it stays
            return None
        enc.kill()
        return enc

    def advance(self):
        enc = self.process
        enc.poll()
        if enc.load_error is not None:
            raise enc.load_error
        if self._sent is not None and self._sent[3].done and self._sha_ready():
            self._collect(*self._sent)
            self._sent = None
        if self._sent is None and self._todo and enc.loaded and enc.idle:
            seg, prep, t0 = self._todo.pop(0)
            self._sent = (seg, prep, t0, enc.features_call(prep.cube.ct), time.perf_counter())
            if not enc.sha256_known and self._sha_call is None:
                self._sha_call = enc.sha256_call()  # read once per process, after this forward
            self.report(self._fraction(seg, 0.2), self._prefix(seg) + "Running the FCIB network", "forward")
        if not self._todo and self._sent is None:
            self._finish(self._out)
        elif not enc.loaded:
            self.report(self._status.fraction, LOADING_MESSAGE, "load")

    def _sha_ready(self) -> bool:
        if self.process.sha256_known:
            return True
        if self._sha_call is not None and self._sha_call.done:
            self._sha_call.result()  # a weights file that no longer matches its record fails the job
        return False

    def _prepare(self, seg):
        from DFM50NLib.scene.logic import prepare_in_scene

        t0 = time.perf_counter()
        try:
            prep = prepare_in_scene(self.inputs.ct, seg.mask, f"{self.inputs.volume_name}_{seg.name}", self._options)
        except DFM50NError as exc:
            self.errors.append((seg.name, str(exc)))
            return
        self._todo.append((seg, prep, t0))

    def _collect(self, seg, prep, t0, call, sent):
        from DFM50NLib.scoring import pipeline

        try:
            feats = call.result()[0]
            prep.timings["forward"] = time.perf_counter() - sent
            opts = self._options
            result = pipeline.finish_case(
                prep, feats, self.classifier, self.process, clinical=opts.get("clinical"), device=self.process.device
            )
        except DFM50NError as exc:
            if not self.process.alive():  # the child crashed or was killed: no later segment can be scored
                raise
            self.errors.append((seg.name, str(exc)))
            return
        result.timings["total"] = time.perf_counter() - t0
        inp = self.inputs
        self._out.append(
            ScoredSegment(result, inp.volume_node, inp.segmentation_node, seg.segment_id, seg.name, seg.mask_sha256)
        )
        self.report(self._fraction(seg, 1.0), self._prefix(seg) + "Scored", "finish")

    def _fraction(self, seg, within) -> float:
        return 0.1 + 0.85 * (self.inputs.segments.index(seg) + within) / max(1, len(self.inputs.segments))

    def _prefix(self, seg) -> str:
        n = len(self.inputs.segments)
        return f"Segment {self.inputs.segments.index(seg) + 1}/{n} ({seg.name}): " if n > 1 else ""


# ---------------------------------------------------------------------------------------------- download


class DownloadJob(PolledJob):
    """The 738 MB FCIB weights download in a child process, resumable: Cancel kills it and keeps the partial
    file, which the next Download continues. `results` = the path of the checked weights file."""

    def __init__(self, dest=None, **kwargs):
        super().__init__()
        self.dest = dest
        self.kwargs = kwargs

    def begin(self):
        from DFM50NLib.model.encoder_process import DownloadProcess

        self.report(0.0, "Connecting", "download")
        self.process = DownloadProcess(self.dest, **self.kwargs)

    def advance(self):
        from DFM50NLib.model.encoder_process import ChildError

        proc = self.process
        proc.poll()
        call = proc.download
        if call.progress is not None:
            done, total = call.progress
            mb = 1024 * 1024
            text = f"Downloading the FCIB weights: {done / mb:,.0f} of {total / mb:,.0f} MB" if total else "Downloading"
            self.report(done / total if total else 0.0, text, "download")
        if not call.done:
            return
        try:
            path = call.result()
        except ChildError as exc:
            if exc.kind not in ("ImportError", "ModuleNotFoundError"):  # the final structure check needs torch
                raise
            raise DFM50NError(
                f"The weights file was downloaded but cannot be checked without PyTorch ({exc}); it is kept. "
                "Press Score (it offers to install PyTorch through the PyTorch extension), then Download "
                "again: it finishes without downloading anything."
            ) from exc
        proc.close()
        self._finish(path)

    def ended(self):
        if self.process is not None:
            self.process.close()  # reaps it and closes its pipes (a cancelled one is dead already)
