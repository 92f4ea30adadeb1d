"""Pool workers end when their driver ends, however it ends (kill -9 included).

A spawned worker blocks on its call queue; if the driver is killed, nothing ever tells it to stop, and it
keeps its network (~1 GB) and multiprocessing's resource tracker alive forever. Two guards: on Linux the
kernel sends SIGKILL when the parent dies (prctl PR_SET_PDEATHSIG), and everywhere a daemon thread sees
the parent pid change (re-parenting) within a second and exits the process.
"""

from __future__ import annotations

import os
import threading
import time

_PR_SET_PDEATHSIG = 1


def exit_with_parent(parent_pid=None, interval=0.5) -> None:
    """Make this process exit when `parent_pid` (default: the current parent) is gone."""
    parent = int(parent_pid or os.getppid())
    if os.getppid() != parent:  # already orphaned before we got here
        os._exit(1)
    _pdeathsig()
    if os.getppid() != parent:  # the parent died between the check and prctl
        os._exit(1)

    def watch():
        while True:
            time.sleep(interval)
            if os.getppid() != parent:
                os._exit(1)  # no clean-up to do: the driver owns every output file

    threading.Thread(target=watch, name="dfm50n-parent-watch", daemon=True).start()


def _pdeathsig() -> None:
    import sys

    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    except (OSError, AttributeError):
        pass  # the polling thread still works
