"""A main loop that treats Python's GIL as Slicer's does, for tests and benchmarks.

Slicer's main thread keeps the GIL while Qt's event loop idles (neither Slicer nor CTK's Python manager
releases it), so a Python thread advances only while Python code runs on the main thread. This loop
reproduces that: every `tick_s` it calls `poll()` (the widget's 100 ms QTimer), and between ticks it sleeps
in C through `ctypes.PyDLL`, which does not release the GIL (ctypes.CDLL would). With `hold_gil=False` it
sleeps with `time.sleep` instead (releases the GIL: what plain tests did), the baseline to compare with.

    loop = EventLoop(hold_gil=True)
    stats = loop.run(presenter.poll, until=lambda view: view.state == "idle", timeout=120)
    stats.seconds, stats.longest_tick_s, stats.values[-1]
"""

from __future__ import annotations

import ctypes
import ctypes.util
import time
from dataclasses import dataclass, field

TICK_S = 0.1  # the panel's POLL_INTERVAL_MS

_libc = ctypes.PyDLL(ctypes.util.find_library("c"))  # PyDLL: calls keep the GIL
_libc.usleep.argtypes = [ctypes.c_uint]


def sleep_holding_gil(seconds: float) -> None:
    """Sleep in C without releasing the GIL: no other Python thread of this process runs meanwhile."""
    _libc.usleep(int(seconds * 1e6))


@dataclass
class LoopStats:
    seconds: float = 0.0  # from run() to `until` holding
    ticks: int = 0
    longest_tick_s: float = 0.0  # the longest poll(): how long the main thread was blocked at once
    values: list = field(default_factory=list)  # what each poll() returned
    tick_times: list = field(default_factory=list)  # seconds since run() of each tick
    durations: list = field(default_factory=list)  # seconds each poll() took

    def slowest(self, n=3) -> list:
        """[(seconds, value)] of the n longest ticks, longest first (what blocked the main thread)."""
        return sorted(zip(self.durations, self.values), key=lambda dv: -dv[0])[:n]


class EventLoop:
    def __init__(self, hold_gil=True, tick_s=TICK_S):
        self.hold_gil = hold_gil
        self.tick_s = tick_s

    def sleep(self, seconds):
        if self.hold_gil:
            sleep_holding_gil(seconds)
        else:
            time.sleep(seconds)

    def run(self, poll, until, timeout=300.0, on_tick=None) -> LoopStats:
        """Call poll() every tick until until(value) holds; on_tick(value, stats) runs after each tick (a
        test's "user" acting between ticks). Raises AssertionError on timeout."""
        stats = LoopStats()
        t0 = time.perf_counter()
        while True:
            t = time.perf_counter()
            value = poll()
            now = time.perf_counter()
            stats.longest_tick_s = max(stats.longest_tick_s, now - t)
            stats.durations.append(now - t)
            stats.ticks += 1
            stats.values.append(value)
            stats.tick_times.append(t - t0)
            if until(value):
                stats.seconds = now - t0
                return stats
            if on_tick is not None:
                on_tick(value, stats)
            if now - t0 > timeout:
                raise AssertionError(f"no result after {timeout:g} s ({stats.ticks} ticks); last: {value}")
            self.sleep(max(0.0, self.tick_s - (time.perf_counter() - t)))
