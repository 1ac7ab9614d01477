"""A live progress line for one candidate's evaluation: requests done of those asked for, how many the result
cache answered, requests per second and the time left. The plugin shows it on a terminal only."""

from __future__ import annotations

import time
from collections.abc import Callable


class Progress:
    """Counts one candidate's requests as its backend answers them and redraws ``show(line)`` at most every
    ``every`` seconds (``show(None)`` clears it when the candidate is done)."""

    def __init__(
        self,
        label: str,
        show: Callable[[str | None], None],
        *,
        clock: Callable[[], float] = time.monotonic,
        every: float = 0.25,
    ) -> None:
        self.label, self.show, self.clock, self.every = label, show, clock, every
        self.total = self.done = self.cached = 0
        self.started: float | None = None
        self._shown_at: float | None = None

    def asked(self, total: int, cached: int) -> None:
        """A backend call of ``total`` distinct requests, ``cached`` of them answered from the cache (made
        once the model is loaded: loading is not part of the rate)."""
        if self.started is None:
            self.started = self.clock()
        self.total += total
        self.done += cached
        self.cached += cached
        self._draw()

    def answered(self, n: int) -> None:
        self.done += n
        self._draw()

    def line(self) -> str:
        text = f"{self.label} {self.done}/{self.total} requests, {self.cached} cached"
        computed = self.done - self.cached
        elapsed = self.clock() - (self.started if self.started is not None else self.clock())
        if computed and elapsed > 0:
            rate = computed / elapsed
            text += f", {rate:.1f}/s, ~{(self.total - self.done) / rate:.0f}s left"
        return text

    def _draw(self) -> None:
        now = self.clock()
        if self._shown_at is None or now - self._shown_at >= self.every or self.done >= self.total:
            self._shown_at = now
            self.show(self.line())

    def close(self) -> None:
        if self._shown_at is not None:
            self.show(None)
