"""Warm spare sessions: the launcher starts a session process before any browser asks for one, so a page (a
reload too) gets a session that has already imported trame, Slicer and VTK and built its scene and views: its
first view images come about a second after the page loaded instead of after a cold start (~5 s, 6.5-8 s on a
loaded machine; Testing/Benchmarks/benchmark_web_session.py measures both).

A spare is private like any session: its secret is its own (random, made when it starts), it is handed to one
browser only and then never again, and the next spare is a new process with a new secret. A spare counts
against --max-sessions (it holds a port and the memory of an idle session), but it never turns a user away: it
is the session the next browser gets. Its idle clock starts when it is handed out (session.IdleClock).
"""

from __future__ import annotations

import asyncio
import json
import os
import time

from DFM50NLib.web.session import CLAIM_SIGNAL

NEXT_SPARE_DELAY_S = 10.0  # a new spare's start (3-5 s of CPU) waits this long after a hand-off: the page
# and the case its user opens at once come first (a spare started 1.5 s after made opening the demo 1.5-2.5 s
# slower on 2 cores)
READY_POLL_S = 0.1  # how often a starting session's log is read for its ready line (wslink: every second)


def with_spares(launcher_resource, count: int):
    """wslink's LauncherResource (one per launcher) keeping `count` spare sessions started (0: every session
    starts when its browser asks, wslink's own way)."""
    import aiohttp.web as aiohttp_web
    from wslink.launcher import filterResponse

    class LauncherWithSpares(launcher_resource):
        def __init__(self, options, config):
            super().__init__(options, config)
            self.spares = []  # started sessions no browser has been given yet, oldest first
            self.spares_broken = False  # a spare died unclaimed: start no more until a session starts well
            self.last_handoff = 0.0
            self.handing = 0  # sessions being handed out now (waiting for their ready line)
            self.keeper = None
            self.top_up()

        def top_up(self):
            """Start spares until `count` wait, as far as free ports (the session limit) allow."""
            self.release_ended()
            while count and CLAIM_SIGNAL is not None and len(self.spares) < count and not self.spares_broken:
                session = self.session_manager.createSession({"application": "trame"})
                if not session:
                    return  # every port is taken: the spare counts against --max-sessions
                if not self.process_manager.startProcess(session):
                    self.session_manager.deleteSession(session["id"])
                    return
                self.spares.append(session)

        def release_ended(self):
            """Free the ports of sessions that ended (idle or crashed); a spare that ended was never used."""
            for sid in self.process_manager.listEndedProcess():
                spare = next((s for s in self.spares if s["id"] == sid), None)
                if spare is not None:
                    self.spares_broken = True
                    # why it ended, with its log's end, is printed by launcher.report_end
                    print(f"DFM50N web: a spare session ended unused (port {spare['port']})", flush=True)
                self.session_manager.deleteSession(sid)
                self.process_manager.stopProcess(sid)
            self.spares = [s for s in self.spares if s["id"] in self.process_manager.processes]

        async def keep_spares(self):
            while True:
                await asyncio.sleep(1)
                if not self.handing and time.monotonic() - self.last_handoff >= NEXT_SPARE_DELAY_S:
                    self.top_up()

        async def handle_post(self, request):
            if self.keeper is None:  # the launcher's event loop runs now
                self.keeper = asyncio.ensure_future(self.keep_spares())
            payload = await request.json()  # aiohttp keeps the body: the cold path reads it again
            self.release_ended()
            spare = next((s for s in self.spares if s["application"] == payload.get("application")), None)
            if spare is None:
                return await super().handle_post(request)  # started now; handed out in _waitForReady
            self.spares.remove(spare)
            return await self._waitForReady(spare, request)

        async def _waitForReady(self, session, _request):
            """wslink's wait, polled every READY_POLL_S instead of every second; a ready session is handed to
            this browser (CLAIM_SIGNAL starts its idle clock) before its address and secret are answered."""
            started = time.monotonic()
            self.handing += 1  # no spare starts meanwhile: it would slow this one down
            try:
                while not self.process_manager.isReady(session, int(time.monotonic() - started)):
                    if time.monotonic() - started > self.time_to_wait:
                        session["startTimedOut"] = True
                        self.session_manager.deleteSession(session["id"])
                        self.process_manager.stopProcess(session["id"])
                        raise aiohttp_web.HTTPServiceUnavailable(
                            text=json.dumps({"error": "Session did not start before timeout expired. Check its log."}),
                            content_type="application/json",
                        )
                    await asyncio.sleep(READY_POLL_S)
            finally:
                self.handing -= 1
            if CLAIM_SIGNAL is not None:
                os.kill(self.process_manager.processes[session["id"]].pid, CLAIM_SIGNAL)
            self.last_handoff = time.monotonic()
            self.spares_broken = False
            public = [*self.field_filter, *(["secret"] if session["secret"] in session["cmd"] else [])]
            return aiohttp_web.json_response(filterResponse(session, public), status=200)

    LauncherWithSpares.wslinks_own = launcher_resource
    return LauncherWithSpares
