"""A one-line progress bar for the commands that walk a whole store: redrawn in place with
``\\r`` on a terminal (done/total, a bar, the rate and the time left), nothing at all
otherwise, where the command prints its one summary line instead."""

from __future__ import annotations

import shutil
import time
from typing import TextIO


def _clock(seconds: float) -> str:
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02}:{rest % 60:02}" if hours else f"{rest // 60}:{rest % 60:02}"


class Progress:
    """``advance()`` as items finish; ``close()`` clears the line. Draws at most ten times a
    second, so a fast run spends its time working, not writing to the terminal."""

    INTERVAL = 0.1

    def __init__(self, label: str, total: int, stream: TextIO, interactive: bool | None = None):
        self.label = label
        self.total = total
        self.done = 0
        self.stream = stream
        self.interactive = stream.isatty() if interactive is None else interactive
        self._started = time.monotonic()
        self._drawn = 0.0
        self._width = 0

    def advance(self, count: int = 1) -> None:
        self.done += count
        if not self.interactive:
            return
        now = time.monotonic()
        if now - self._drawn >= self.INTERVAL or self.done >= self.total:
            self._drawn = now
            self._draw(now)

    def line(self, now: float | None = None) -> str:
        """The bar as it reads now, fitted to the terminal's width."""
        now = time.monotonic() if now is None else now
        elapsed = max(now - self._started, 1e-9)
        rate = self.done / elapsed
        left = (self.total - self.done) / rate if rate > 0 else None
        shown = min(self.done, self.total)
        eta = f"ETA {_clock(left)}" if left is not None else "ETA --:--"
        text = f"{shown:,}/{self.total:,}"
        tail = f" {100 * shown // max(self.total, 1):3}% {rate:,.0f}/s {eta}"
        columns = shutil.get_terminal_size((80, 24)).columns - 1
        room = columns - len(self.label) - len(text) - len(tail) - 4
        if room < 10:
            return f"{self.label} {text}{tail}"[:columns]
        filled = room * shown // max(self.total, 1)
        bar = "#" * filled + "-" * (room - filled)
        return f"{self.label} {text} [{bar}]{tail}"

    def _draw(self, now: float) -> None:
        line = self.line(now)
        # Pad over what a longer line drawn before left behind.
        self.stream.write("\r" + line.ljust(self._width))
        self.stream.flush()
        self._width = len(line)

    def close(self) -> None:
        """Draws the bar as it ended and moves to the next line, where the summary goes."""
        if self.interactive:
            self._draw(time.monotonic())
            self.stream.write("\n")
            self.stream.flush()
            self.interactive = False
