"""mitmdump script for ``bench_writer.py``: how late the proxy's event loop runs a timer.

    mitmdump -s bench/loop_lag_addon.py ...   (or: certmatch proxy ... -- -s bench/loop_lag_addon.py)

A task sleeps 5 ms again and again and notes how much later than asked it woke up.
SIGUSR1 clears the notes; SIGUSR2 writes them (one lateness in seconds a line) to the
file named by ``CERTMATCH_BENCH_LAG``.
"""

import asyncio
import os
import signal

TICK_S = 0.005


class LoopLag:
    def __init__(self) -> None:
        self.lags: list[float] = []
        self.task: asyncio.Task[None] | None = None

    def running(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGUSR1, self.lags.clear)
        loop.add_signal_handler(signal.SIGUSR2, self._dump)
        self.task = loop.create_task(self._tick())

    async def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            start = loop.time()
            await asyncio.sleep(TICK_S)
            self.lags.append(loop.time() - start - TICK_S)

    def _dump(self) -> None:
        path = os.environ["CERTMATCH_BENCH_LAG"]
        with open(path + ".tmp", "w", encoding="ascii") as file:
            file.writelines(f"{lag:.6f}\n" for lag in self.lags)
        os.replace(path + ".tmp", path)

    def done(self) -> None:
        if self.task is not None:
            self.task.cancel()


addons = [LoopLag()]
