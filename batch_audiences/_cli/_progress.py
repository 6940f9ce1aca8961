"""A small progress renderer: one self-rewriting line on a terminal, plain log lines elsewhere.

On a TTY the line shows a bar (when the total is known), items done / total, rate, retries and
ETA, redrawn at most ~10 times a second. When stderr is a file or a pipe (CI logs, ``2> log``)
there are no control characters: a plain line every ``interval`` seconds, and one at the end.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable

from ._output import Console, format_count, format_duration

__all__ = ["Progress"]

# Terminal redraws at most this often; log lines every LOG_INTERVAL seconds.
_REDRAW_INTERVAL = 0.1
LOG_INTERVAL = 5.0
# Rate over this window of recent samples, so the ETA follows the current pace.
_RATE_WINDOW = 5.0


def _is_tty(console: Console) -> bool:
    isatty = getattr(console.err, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:
        return False


class Progress:
    """Progress of one job: feed it with :meth:`update`, end it with :meth:`close`.

    ``label`` names the job (``"upload vip"``), ``unit`` the items (``"IDs"``). ``total`` may be
    ``None`` (a stream of unknown length) or an estimate, raised if ``done`` ever passes it.
    """

    def __init__(
        self,
        console: Console,
        label: str,
        *,
        unit: str = "items",
        total: int | None = None,
        tty: bool | None = None,
        interval: float = LOG_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._console = console
        self._enabled = console.chatty
        self._tty = _is_tty(console) if tty is None else tty
        self.label = label
        self.unit = unit
        self.total = total
        self.done = 0
        self.failed = 0
        self.retries = 0
        self._interval = interval
        self._clock = clock
        self._start = clock()
        self._last_draw = float("-inf")
        self._last_log = self._start
        self._samples: list[tuple[float, int]] = [(self._start, 0)]
        self._drawn = False
        self._logged: tuple[int, int, int, int | None] | None = None
        self._closed = False
        self._updated = False

    @property
    def elapsed(self) -> float:
        """Seconds since the job started."""
        return self._clock() - self._start

    def update(
        self,
        *,
        done: int | None = None,
        failed: int | None = None,
        retries: int | None = None,
        total: int | None = None,
        force: bool = False,
    ) -> None:
        """Record new figures (absolute values) and redraw if it is time to."""
        if done is not None:
            self.done = done
        if failed is not None:
            self.failed = failed
        if retries is not None:
            self.retries = retries
        if total is not None:
            self.total = total
        self._updated = True
        if self.total is not None and self.done > self.total:
            self.total = self.done
        now = self._clock()
        self._samples.append((now, self.done))
        while len(self._samples) > 2 and now - self._samples[0][0] > _RATE_WINDOW:
            self._samples.pop(0)
        if not self._enabled or self._closed:
            return
        if self._tty:
            if force or now - self._last_draw >= _REDRAW_INTERVAL:
                self._last_draw = now
                self._draw(now)
        elif force or now - self._last_log >= self._interval:
            self._log(now)

    def rate(self, now: float | None = None) -> float:
        """Items per second over the last few seconds."""
        now = self._clock() if now is None else now
        first_time, first_done = self._samples[0]
        span = now - first_time
        return (self.done - first_done) / span if span > 0 else 0.0

    def line(self, now: float | None = None, *, width: int | None = None) -> str:
        """The status line (with a bar when ``width`` is given and the total known)."""
        now = self._clock() if now is None else now
        rate = self.rate(now)
        parts = [self.label]
        if self.total is not None and self.total > 0:
            fraction = min(1.0, self.done / self.total)
            if width is not None:
                parts.append(_bar(fraction, width))
            parts.append(f"{fraction:4.0%}")
            parts.append(f"{format_count(self.done)}/{format_count(self.total)} {self.unit}")
        else:
            parts.append(f"{format_count(self.done)} {self.unit}")
        parts.append(f"{format_count(int(rate))}/s")
        if self.failed:
            parts.append(f"{format_count(self.failed)} failed")
        parts.append(f"{self.retries} retr{'y' if self.retries == 1 else 'ies'}")
        if self.total is not None and rate > 0 and self.done < self.total:
            parts.append(f"ETA {format_duration((self.total - self.done) / rate)}")
        else:
            parts.append(f"elapsed {format_duration(now - self._start)}")
        return "  ".join(parts)

    def _draw(self, now: float) -> None:
        columns = shutil.get_terminal_size((100, 24)).columns
        line = self.line(now, width=max(10, min(30, columns // 4)))
        self._console.raw_err("\r" + line[: columns - 1] + "\x1b[K")
        self._drawn = True

    def close(self) -> None:
        """Draw the final figures and end the line. Safe to call twice.

        A job that never reported progress (it failed before its first event: a bad option, a
        missing column) draws nothing, so its error line is not preceded by a "0%" line.
        """
        if self._closed:
            return
        if self._enabled and self._updated:
            now = self._clock()
            if self._tty:
                self._draw(now)
                self._console.raw_err("\n")
            elif self._logged != self._figures():
                self._log(now)
        self._closed = True

    def _figures(self) -> tuple[int, int, int, int | None]:
        return (self.done, self.failed, self.retries, self.total)

    def _log(self, now: float) -> None:
        self._last_log = now
        self._logged = self._figures()
        self._console.raw_err(self.line(now) + "\n")


def _bar(fraction: float, width: int) -> str:
    filled = round(fraction * width)
    return "[" + "#" * filled + "-" * (width - filled) + "]"
