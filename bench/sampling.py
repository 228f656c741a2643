"""What the machine and the API's processes spend while a benchmark runs: memory and CPU."""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import psutil

RSS_PERIOD_S = 0.25


class ProcessSampler:
    """Samples the API's memory in a thread: resident (RSS) of each process, the master's and
    its workers', and proportional (PSS: pages shared by the workers counted once across them);
    and the CPU of them all."""

    def __init__(self, pid: int, period: float = RSS_PERIOD_S) -> None:
        self.process = psutil.Process(pid)
        self.period = period
        self.samples: list[int] = []  # total RSS
        self.largest: list[int] = []  # the largest process's RSS
        self.pss: list[int] = []  # total PSS
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._cpu_began = 0.0
        self.cpu_seconds = 0.0
        self.processes = 1

    def _tree(self) -> list[psutil.Process]:
        return [self.process, *self.process.children(recursive=True)]

    def rss(self) -> int:
        sizes, pss = [], 0
        for process in self._tree():
            try:
                info = process.memory_full_info()
            except psutil.Error:
                continue
            sizes.append(int(info.rss))
            pss += int(getattr(info, "pss", info.rss))
        self.largest.append(max(sizes))
        self.pss.append(pss)
        self.processes = len(sizes)
        return sum(sizes)

    def _cpu(self) -> float:
        total = 0.0
        for process in self._tree():
            try:
                times = process.cpu_times()
            except psutil.Error:
                continue
            total += float(times.user + times.system)
        return total

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            try:
                self.samples.append(self.rss())
            except psutil.Error:
                return  # the process is gone; the run reports the failures

    def __enter__(self) -> ProcessSampler:
        self._cpu_began = self._cpu()
        self.samples.append(self.rss())
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        try:
            self.samples.append(self.rss())
            self.cpu_seconds = self._cpu() - self._cpu_began
        except psutil.Error:
            pass


def busy_seconds(times: Any) -> float:
    """CPU seconds the whole machine spent running something (guest time is in user already)."""
    parts = ("user", "nice", "system", "irq", "softirq")
    return float(sum(getattr(times, name, 0.0) for name in parts))


#: Iterations of the speed probe's loop: long enough to time, short enough to repeat.
PROBE_LOOPS = 2_000_000


def machine_load() -> dict[str, Any]:
    """How busy and how fast the machine is now. The speed probe is a fixed pure-Python loop
    (ms of CPU, best of three): on a shared machine the same code runs at different speeds
    from one hour to the next, and a result means little without it."""
    best = float("inf")
    for _ in range(3):
        started, total = time.process_time(), 0
        for i in range(PROBE_LOOPS):
            total += i
        best = min(best, time.process_time() - started)
    return {
        "load_average_1m": round(os.getloadavg()[0], 2),
        "cpus": os.cpu_count(),
        "speed_probe_ms": round(best * 1000, 1),
    }
