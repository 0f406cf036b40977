"""How many cores other processes took while a benchmark ran (Linux).

A busy neighbour on a shared machine changes any ratio of two timed runs, so the
end-to-end benchmarks report it beside each run and can redo disturbed ones: all
processes' CPU time since boot (``/proc/stat``) minus this process tree's own (this process
and its waited-for children: in-process workers and subprocesses alike), over the run's
wall time.

    with OtherCores() as others:
        ...                      # the timed run
    others.cores                 # None where /proc/stat is missing
"""

from __future__ import annotations

import os
import resource
import time
from pathlib import Path
from types import TracebackType


def busy_cpu_seconds() -> float | None:
    """CPU seconds all processes have used since boot (Linux), else None."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    """CPU seconds of this process and its finished (waited-for) children."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


class OtherCores:
    """A timed block's wall time and the cores other processes used meanwhile."""

    cores: float | None = None
    elapsed: float = 0.0

    def __enter__(self) -> OtherCores:
        self._busy, self._own = busy_cpu_seconds(), own_cpu_seconds()
        self._start = time.perf_counter()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.elapsed = time.perf_counter() - self._start
        busy, own = busy_cpu_seconds(), own_cpu_seconds()
        if self._busy is not None and busy is not None and self.elapsed > 0:
            others = (busy - self._busy) - (own - self._own)
            self.cores = max(0.0, others) / self.elapsed
