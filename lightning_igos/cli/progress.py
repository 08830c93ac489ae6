"""The one-line progress bar that ``lightning-igos check`` draws on a terminal."""

from __future__ import annotations

import time
from typing import IO


class ProgressLine:
    """A one-line progress bar on a terminal; silent when ``enabled`` is False.

    Example:
        >>> import io
        >>> stream = io.StringIO()
        >>> bar = ProgressLine(stream, enabled=True)
        >>> bar.start("explaining", 10); bar.advance(5); bar.finish()
        >>> last = stream.getvalue().split(chr(13))[-1]
        >>> last.startswith("explaining [########################] 100.0%"), last.endswith(chr(10))
        (True, True)
        >>> silent = io.StringIO()
        >>> ProgressLine(silent, enabled=False).start("scoring", 4); silent.getvalue()
        ''
    """

    WIDTH = 24
    INTERVAL_S = 0.1

    def __init__(self, stream: IO[str], enabled: bool) -> None:
        self.stream, self.enabled = stream, enabled
        self.label, self.total, self.done = "", 0, 0
        self.started = self.last_drawn = 0.0
        self.drawn = False

    def start(self, label: str, total: int) -> None:
        if self.drawn:
            self._draw(force=True)
            self.stream.write("\n")
        self.label, self.total, self.done = label, max(total, 1), 0
        self.started = time.perf_counter()
        self._draw(force=True)

    def advance(self, count: int) -> None:
        self.done = min(self.done + count, self.total)
        self._draw()

    def finish(self) -> None:
        if self.drawn:
            self.done = self.total
            self._draw(force=True)
            self.stream.write("\n")
            self.stream.flush()
            self.drawn = False

    def _draw(self, force: bool = False) -> None:
        now = time.perf_counter()
        if not self.enabled or (not force and now - self.last_drawn < self.INTERVAL_S):
            return
        filled = round(self.WIDTH * self.done / self.total)
        bar = "#" * filled + "." * (self.WIDTH - filled)
        self.stream.write(f"\r{self.label:<11}[{bar}] {100 * self.done / self.total:5.1f}%  {now - self.started:6.1f}s")
        self.stream.flush()
        self.last_drawn, self.drawn = now, True
