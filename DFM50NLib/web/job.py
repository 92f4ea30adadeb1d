"""Run `DFM50NLogic.scoreSegment` (the Slicer panel's scoring flow, unchanged) off the server's event loop.

The trame server is one asyncio loop; FCIB takes seconds. The score runs on one worker thread and reports
progress / the outcome back onto the loop with `call_soon_threadsafe` (trame state is not thread-safe).
Cancel is the Logic's own `requestCancel` (stops at the next stage boundary, writes nothing).
While a job runs the page disables editing and loading, so the scene is not changed under the worker.
"""

from __future__ import annotations

import threading


class ScoringJob:
    def __init__(self, logic, loop, *, on_progress, on_done):
        """on_progress(fraction, message) and on_done(result, error, cancelled) are called on `loop`."""
        self.logic = logic
        self.loop = loop
        self.on_progress = on_progress
        self.on_done = on_done
        self.thread = None
        self.cancel_requested = False

    @property
    def running(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def start(self, volume_node, segmentation_node, segment_id, **options):
        if self.running:
            raise RuntimeError("a score is already running")
        self.cancel_requested = False
        self.thread = threading.Thread(
            target=self._run,
            args=(volume_node, segmentation_node, segment_id),
            kwargs=options,
            name="dfm50n-score",
            daemon=True,
        )
        self.thread.start()

    def cancel(self):
        if self.running:
            self.cancel_requested = True
            self.logic.requestCancel()

    def _run(self, volume_node, segmentation_node, segment_id, **options):
        from DFM50NLib.scene.logic import ScoringCancelled

        def progress(fraction, message):
            self.loop.call_soon_threadsafe(self.on_progress, fraction, message)

        result = error = None
        cancelled = False
        try:
            result = self.logic.scoreSegment(
                volume_node, segmentation_node, segment_id, progress=progress, checkDependencies=False, **options
            )
        except ScoringCancelled:
            cancelled = True
        except Exception as exc:  # shown on the page, not swallowed: the message says what to do
            error = exc
        self.loop.call_soon_threadsafe(self.on_done, result, error, cancelled)
