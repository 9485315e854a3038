"""mitmdump script for ``bench_profile.py``: cProfile the proxy's event loop on demand.

    mitmdump -s bench/cprofile_addon.py ...   (or: certmatch proxy ... -- -s bench/cprofile_addon.py)

SIGUSR1 starts a fresh profile; SIGUSR2 stops it and writes it to the file named by
``CERTMATCH_BENCH_PROFILE``. Only the main thread (mitmproxy's event loop) is profiled, on its CPU clock.
"""

import cProfile
import os
import signal
import time
from types import FrameType


class CProfileOnSignal:
    def __init__(self) -> None:
        self.profile: cProfile.Profile | None = None

    def running(self) -> None:
        signal.signal(signal.SIGUSR1, self._start)
        signal.signal(signal.SIGUSR2, self._stop)

    def _start(self, _signum: int, _frame: FrameType | None) -> None:
        self.profile = cProfile.Profile(time.thread_time)  # CPU, not wall: the machine is shared
        self.profile.enable()

    def _stop(self, _signum: int, _frame: FrameType | None) -> None:
        if self.profile is None:
            return
        self.profile.disable()
        path = os.environ["CERTMATCH_BENCH_PROFILE"]
        self.profile.dump_stats(path + ".tmp")
        os.replace(path + ".tmp", path)
        self.profile = None


addons = [CProfileOnSignal()]
