"""A progress bar on stderr: trials done/total (how many trained in batches), elapsed, ETA,
and how many went wrong.

On a terminal it redraws one line; elsewhere (logs, CI) it prints a line at most every
``interval`` seconds and at the end. No dependency.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


def format_duration(seconds: float) -> str:
    """``1:05`` (m:ss) or ``2:03:04`` (h:mm:ss)."""
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class Progress:
    """Call :meth:`update` once per finished trial with its status, :meth:`close` at the end."""

    def __init__(
        self,
        total: int,
        stream: TextIO | None = None,
        *,
        enabled: bool = True,
        interval: float = 10.0,
        width: int = 24,
    ) -> None:
        self.total = total
        self.stream = sys.stderr if stream is None else stream
        self.enabled = enabled and total > 0
        self.interactive = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval = interval
        self.width = width
        self.done = 0
        self.batched = 0  # of them trained in batches (demon_optim.study.batched)
        self.counts: dict[str, int] = {}
        self.start = time.monotonic()
        self._last_print = -float("inf")
        self._drawn = False
        self.note: str | None = None
        if self.enabled and self.interactive:
            self._draw()

    def update(self, status: str, *, batched: bool = False) -> None:
        """One more trial finished with ``status`` (``batched``: trained in a batch)."""
        self.done += 1
        self.batched += batched
        self.counts[status] = self.counts.get(status, 0) + 1
        if not self.enabled:
            return
        now = time.monotonic()
        if self.interactive or now - self._last_print >= self.interval or self.done == self.total:
            self._last_print = now
            self._draw()

    def set_note(self, note: str | None) -> None:
        """Show ``note`` after the counts (e.g. what the run waits for); None clears it."""
        if note == self.note:
            return
        self.note = note
        if self.enabled and (self.interactive or note is not None):
            self._draw()

    def line(self) -> str:
        elapsed = time.monotonic() - self.start
        fraction = self.done / self.total if self.total else 1.0
        filled = int(self.width * fraction)
        bar = "#" * filled + "." * (self.width - filled)
        if self.done:
            eta = format_duration(elapsed / self.done * (self.total - self.done))
        else:
            eta = "--:--"
        batched = f" ({self.batched} batched)" if self.batched else ""
        text = (
            f"[{bar}] {self.done}/{self.total} trials{batched} | elapsed "
            f"{format_duration(elapsed)} | ETA {eta}"
        )
        problems = [f"{n} {s}" for s, n in sorted(self.counts.items()) if s != "done" and n]
        if problems:
            text += " | " + ", ".join(problems)
        if self.note:
            text += f" | {self.note}"
        return text

    def _draw(self) -> None:
        if self.interactive:
            self.stream.write("\r\x1b[2K" + self.line())
            self._drawn = True
        else:
            self.stream.write(self.line() + "\n")
        self.stream.flush()

    def close(self) -> None:
        """End the bar's line (on a terminal)."""
        if self.enabled and self.interactive and self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False
