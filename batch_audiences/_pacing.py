"""Pacing: the adaptive rate limiter shared by every request of one client.

Batch publishes no rate figure for the audience routes, so :class:`RateLimiter` starts unlimited
(or at ``max_rate``) and learns the limit from the server's 429s, the way TCP congestion control
learns a path's capacity from lost packets (CUBIC's curve, as in botocore's "adaptive" retry mode,
and BBR's habit of probing above what was measured). What a 429 says about the limit (the
estimate ``W`` at a cut, echoes, noise, 429s the server's own timing caused) is the business of
``_limitrules``; this module turns it into a pace and schedules the turns:

- **The cut.** A 429 that the rules take as news sets ``W`` and drops the pace to 95 % of it
  (nothing measured yet: half the pace refused; a pace accepted far below the one refused: that
  pace; in both cases probing up from there at once). The cut applies to the whole client:
  requests already waiting are re-queued at the new pace.
- **The climb.** From there the pace returns to ``W`` along a concave cubic (fast at first, flat
  near ``W``) in 1 to 1.5 s (about ``_REQUESTS_PER_CYCLE`` requests; 1 s when ``W`` just moved),
  then probes above along a convex cubic: 1 % more after 0.1 s, twice ``W`` after 0.5 s, nine
  times after 1 s (at most ``_PROBE_CAP`` times; after a leap, twice ``W`` after 0.2 s; at a
  slow pace, over ``_PROBE_TURNS`` turns of ``W`` at least, and ``_SLOWEST_PROBE`` seconds at
  most). At a steady limit the client meets about one 429 per climb. Far above the limit (the
  share that got through is the least it is), the pace probes at once.
- **The start of a job.** Until a pace has held (two estimates in a row within ``_STABLE``, or
  ``_JUDGE_AFTER`` requests at one), a cut for a server allowing no burst keeps the pace at
  ``W`` and probes up at once, fast: its limit is being found, not kept.
- **A limit that fell** far below a level the pace had kept (40 -> 10 requests/s) may come back,
  and every second before a probe finds it is rate lost: for ``_FALL_MEMORY`` seconds, each climb
  lasts ``_FALLEN_CLIMB`` and each probe is a fast one, so that it comes soon after every cut.
- **Idle time** (no request waited for its turn) does not count for the climb or the probe: the
  pace was not used, so it taught nothing.
- **Turns** are reserved at the pace the curve will have at their time, on a schedule of target
  times, so that late wake-ups of the event loop do not add up; a request still goes at least
  one turn (less ``SPACING_TOLERANCE``) after the last one that started, as a server allowing no
  burst demands. Such a server takes no token for a request it refuses: after a cut for one, the
  next turn is spaced from the last request it accepted, when the one refused came just after
  it, not from the refused one (which would leave the server's next token unused a turn).
- **Advice.** A ``Retry-After`` (or ``X-RateLimit-Reset``) pauses every request of the client,
  including those already waiting; the climb starts when the pause ends. A success carrying
  ``X-RateLimit-Remaining: 0`` says the pace is at the limit: the probe above ``W`` waits.

A 429's retry takes its turn here like any request, with no back-off of its own (the transport
sleeps its back-off only for 503s and failed connections): the limiter owns the pace after a 429.

Requests reserve a start time rather than queueing on a lock: :meth:`RateLimiter.acquire`
computes the slot and waits for it without blocking the event loop. :meth:`RateLimiter.close`
ends every wait at once with :class:`ClientClosedError`. A limiter in fail-fast mode raises
:class:`ThrottledError` instead of waiting.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Mapping

from ._errors import ClientClosedError, ThrottledError
from ._limitrules import JUDGE_AFTER as _JUDGE_AFTER
from ._limitrules import SPACING_TOLERANCE as _SPACING_TOLERANCE
from ._limitrules import LimitRules

__all__ = ["RateLimiter"]

# After a cut, the pace restarts at this share of the limit estimate.
_BACKOFF = 0.95
# The climb back to the estimate lasts about this many requests at the estimated rate…
_REQUESTS_PER_CYCLE = 30
# …but no less and no more than these many seconds…
_MIN_CLIMB = 1.0
_MAX_CLIMB = 1.5
# …and no more than this when the estimate just moved by more than _STABLE (a share of it): the
# limit may be moving on.
_MOVED_CLIMB = 1.0
_STABLE = 0.15
# An estimate that falls to this share of one the pace kept, or less, is a limit that fell: for
# this many seconds, climbs last this long (it may come back).
_FELL = 0.5
_FALL_MEMORY = 12.0
_FALLEN_CLIMB = 0.6
# Past the estimate, the pace grows as CUBIC's window does: twice the estimate after this many
# seconds, 9 times after twice as long…
_PROBE_SCALE = 0.5
# …or after this many, when the pace accepted was far below the one refused (the limit is
# anywhere between: it is found within half a second)…
_LEAP_PROBE_SCALE = 0.2
# …but never in fewer than this many turns of the estimate (this many after a leap): at a slow
# pace, a probe measured in seconds would leap from one request to the next, and overshoot.
_PROBE_TURNS = 5.0
_LEAP_PROBE_TURNS = 2.0
# …and in no more than this many seconds: a pace cut far too low by 429s that were not the
# limit's (random ones) must not take minutes to come back.
_SLOWEST_PROBE = 2.0
# …up to this multiple of the estimate.
_PROBE_CAP = 64.0
# At the start of a job, a server allowing no burst that refused every request since the last
# cut is far above its limit: the pace drops this many times at once (see _cut).
_FINDING_STEP = 2.0
# The rate never falls below this, so a single wrong signal cannot stall a job for minutes.
_MIN_RATE = 0.2
# Counts since a cut are halved past this many requests, so shares follow recent behaviour.
_SHARE_MEMORY = 400
# Waits for the spacing from the last start, at most, before a request goes.
_SPACING_TRIES = 3
# X-RateLimit-Remaining this high, once, says the server saves up a burst (a bucket of one says
# at most 1: the token that came back while it worked on the request).
_ROOM = 2
_CLOSED_MESSAGE = "this client was closed while the request waited for its turn"


class RateLimiter(LimitRules):
    """Paces one client's requests; adapts to 429s. See the module docstring.

    ``max_rate`` is a hard ceiling in requests per second (``None``: no ceiling). :attr:`rate` is
    the pace in force now (``None`` while no throttling has been seen and no ceiling is set).
    ``fail_fast`` makes :meth:`acquire` raise :class:`ThrottledError` rather than wait.
    ``clock`` is ``time.monotonic`` unless a test swaps it. ``sleep`` is the one place where the
    limiter waits: by default a wait that :meth:`close` can end; a test may pass a virtual sleep
    (or one that returns at once, to make every pause zero-length).
    """

    def __init__(
        self,
        max_rate: float | None = None,
        *,
        fail_fast: bool = False,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] | None = None,
    ) -> None:
        super().__init__(clock)
        self.max_rate = max_rate
        self.fail_fast = fail_fast
        self.sleep = sleep
        self._closed = False
        self._waiters: set[asyncio.Future[None]] = set()
        # The control law: no estimate (None) means the pace is max_rate (None: unlimited).
        self._floor = 0.0  # the pace right after the cut
        self._climb_from = -math.inf  # when the climb started (the cut, or the end of its pause)
        self._climb = _MIN_CLIMB  # seconds to climb back to the estimate
        self._probe_held = False  # X-RateLimit-Remaining: 0 seen since the climb ended
        self._probe_scale = _PROBE_SCALE  # seconds to probe twice the estimate
        self._finding = True  # no cut has held for a while yet (the start of a job)
        # The estimate at the last cut that left it where it was, and when it last fell far
        # below such a level.
        self._held: float | None = None
        self._fell_at = -math.inf
        self._next_slot = -math.inf
        self._paused_until = -math.inf
        # The start the next turn is spaced from: the last one that started (see _cut for the
        # exception).
        self._spaced_from = -math.inf

    # -- the pace ---------------------------------------------------------------------------------

    @property
    def rate(self) -> float | None:
        """Requests per second in force now, or ``None`` when unlimited."""
        return self._rate_at(self._clock())

    @property
    def estimate(self) -> float | None:
        """The server's limit as last measured (requests per second), or ``None``."""
        return self._estimate

    def _rate_at(self, now: float) -> float | None:
        estimate = self._estimate
        if estimate is None:
            return self.max_rate
        elapsed = now - self._climb_from
        climb = self._climb
        if elapsed <= 0.0:  # the cut, or the pause after it, has just happened
            rate = self._floor
        elif elapsed < climb:
            # Concave cubic from the floor to the estimate: quick at first, flat near the limit.
            left = 1.0 - elapsed / climb
            rate = estimate - (estimate - self._floor) * left * left * left
        elif self._probe_held:
            rate = estimate
        else:
            # Convex cubic above it: barely more at first (a limit just above is found with one
            # 429), then faster and faster (a limit that rose is found within seconds).
            beyond = (elapsed - climb) / self._probe_scale
            rate = estimate * min(1.0 + beyond * beyond * beyond, _PROBE_CAP)
        ceiling = self.max_rate
        return min(rate, ceiling) if ceiling is not None else rate

    @property
    def paused_until(self) -> float:
        """Clock time before which no request starts (in the past when not paused)."""
        return self._paused_until

    def delay(self) -> float:
        """How long a request starting now would wait (0 when it may go at once)."""
        now = self._clock()
        return max(0.0, self._next_slot - now, self._paused_until - now)

    # -- waiting for a turn -----------------------------------------------------------------------

    @property
    def waiting(self) -> int:
        """How many requests are waiting for their turn now."""
        return len(self._waiters)

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def close(self) -> None:
        """End every wait now with :class:`ClientClosedError`; later waits raise it too."""
        self._closed = True
        waiters, self._waiters = self._waiters, set()
        for waiter in waiters:
            if not waiter.done():
                waiter.set_exception(ClientClosedError(_CLOSED_MESSAGE))

    async def _pause(self, seconds: float) -> None:
        """Wait ``seconds`` (through ``sleep`` when given), or until :meth:`close`."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiters.add(waiter)
        if self.sleep is None:
            handle: asyncio.TimerHandle | None = loop.call_later(seconds, _wake, waiter)
            sleeper: asyncio.Future[object] | None = None
        else:
            handle = None
            sleeper = asyncio.ensure_future(self.sleep(seconds))
            sleeper.add_done_callback(lambda _: _wake(waiter))
        try:
            await waiter
            if sleeper is not None:
                sleeper.result()  # the sleep's own failure, if any
        finally:
            self._waiters.discard(waiter)
            if handle is not None:
                handle.cancel()
            if sleeper is not None and not sleeper.done():
                sleeper.cancel()

    def try_acquire(self) -> float | None:
        """This request's start time when it may go at once with nothing to pace (no rate, no
        estimate, no pause): the turn :meth:`acquire` would give, without its coroutine.
        ``None`` otherwise: then await :meth:`acquire`, which decides (and waits).
        """
        if self._estimate is not None or self.max_rate is not None:
            return None
        now = self._clock()
        if self._next_slot > now or self._paused_until > now:
            return None
        return self._started(now)

    async def acquire(self) -> float:
        """Wait for this request's turn and return the time it starts at.

        A request that was waiting when a 429 cut the rate, or when a ``Retry-After`` paused the
        client, takes a new turn under the new conditions. Raises :class:`ThrottledError`
        instead of waiting when the limiter is fail-fast, :class:`ClientClosedError` when it
        would wait once :meth:`close` was called (also to requests that were waiting then).
        """
        while True:
            now = self._clock()
            start = self._next_slot
            if self._closed and start > now:
                raise ClientClosedError(_CLOSED_MESSAGE)  # no turn to wait for any more
            if self._paused_until > start:
                start = self._paused_until
            rate = self._rate_at(now) if self._estimate is not None else self.max_rate
            if start <= now:  # its turn has come: the path of every request of an unpaced client
                if rate is not None:
                    idle_from = max(self._next_slot, self._climb_from)
                    if self._estimate is not None and now > idle_from:
                        # The pace was not used meanwhile (no request waited): that says
                        # nothing of the limit, so the climb and the probe wait too.
                        self._climb_from += now - idle_from
                        self._idle += now - idle_from
                        rate = self._rate_at(now) or rate
                    # Spaced from the last request that started (which may have started late),
                    # or the one a cut spaces from (see _cut).
                    start = self._spaced_from + (1.0 - _SPACING_TOLERANCE) / rate
                    if start <= now:
                        self._next_slot = now + 1.0 / rate
                        return self._started(now)
                else:
                    return self._started(now)
            if self.fail_fast:
                raise ThrottledError(start - now)
            if rate is not None:
                # The turn after this one, at the pace the curve will be at then (a pace that
                # climbs fast must not be held back by turns reserved at the pace of now).
                if self._estimate is not None:
                    rate = self._rate_at(start) or rate
                self._next_slot = start + 1.0 / rate
            await self._pause(start - now)
            # Re-checked after the wait: the conditions may have changed meanwhile.
            if self._closed:
                raise ClientClosedError(_CLOSED_MESSAGE)
            if start < self._paused_until or now < self._last_decrease:
                continue
            woke = await self._spaced(start, now)
            if woke is None:
                continue
            return self._started(woke)

    async def _spaced(self, start: float, now: float) -> float | None:
        """After a wait for a turn: the time the request may start, at least one turn after the
        last request that started (which may have started late: a busy event loop; after a cut,
        see _cut), as a server allowing no burst demands; None when a cut or a pause came
        meanwhile (take a new turn)."""
        # A few times at most: another request may have started meanwhile, but a pause that
        # takes no time (the test mode) must not loop for ever.
        for _ in range(_SPACING_TRIES):
            woke = self._clock()
            rate = self._rate_at(woke) if self._estimate is not None else self.max_rate
            gap = self._spaced_from + (1.0 - _SPACING_TOLERANCE) / rate - woke if rate is not None else 0.0
            if gap <= 1e-4:
                return woke
            await self._pause(gap)
            if self._closed:
                raise ClientClosedError(_CLOSED_MESSAGE)
            if start < self._paused_until or now < self._last_decrease:
                return None
        return self._clock()

    def _started(self, now: float) -> float:
        if now > self._spaced_from:
            self._spaced_from = now
        sent = self._sent = self._sent + 1
        if sent > _SHARE_MEMORY and self._epoch_start is not None:
            self._sent //= 2
            self._throttled //= 2
            self._epoch_start = now - (now - self._epoch_start) / 2
        self._starts.append((now, self._rate_at(now) if self._estimate is not None else self.max_rate))
        sends = self._sends  # _Window.add, inlined: this runs for every request
        if now >= sends.edge:
            sends.open(now)
        sends.counts[sends.index] += 1
        sends.last = now
        return now

    # -- answers ----------------------------------------------------------------------------------

    def on_success(self, headers: Mapping[str, str] | None = None, sent_at: float | None = None) -> None:
        """Count an accepted request (started at ``sent_at``, a value from :meth:`acquire`, when
        known); ``headers`` (the answer's) may hold ``X-RateLimit-*``."""
        if not self.throttles:
            # Before the first 429 (most clients never meet one) an accepted answer is only
            # counted: nothing reads the window of answers until a 429 comes, which fills it
            # from the count (see _settle_calm). A tenth of the cost, on every request.
            self._calm_accepted += 1
            if sent_at is not None and sent_at > self._ok_sent:
                self._ok_sent = sent_at  # (the gap a first 429 refuses counts from it)
            return
        answers = self._answers  # _answer(True), inlined: this runs for every request
        if len(answers) == answers.maxlen:
            self._answers_ok -= answers[0]
        answers.append(True)
        self._answers_ok += 1
        self._accepted += 1
        if self._pending is not None:
            self._pending_answer(True)
        if self._squeeze_debt:
            self._squeeze_debt = max(0.0, self._squeeze_debt - 0.5)
        if sent_at is not None and self._bursty is False:
            if sent_at >= self._last_decrease:
                # A server that lets no burst through accepted this gap from the last request
                # it accepted: its limit is at least that.
                pace = self._gap_pace(sent_at)
                if pace is not None and pace > self._highest_accepted:
                    self._highest_accepted = pace
            if sent_at > self._ok_sent:
                # The last request accepted, and when its answer came (see _squeezed).
                self._ok_sent, self._ok_answered = sent_at, self._clock()
        elif sent_at is not None and self._bursty is None and sent_at > self._ok_sent:
            self._ok_sent = sent_at  # (until the server's kind is known, as before the first 429)
        if headers is not None and self._estimate is not None:
            remaining = headers.get("X-RateLimit-Remaining")
            if remaining is not None:
                self._advised(self._clock(), remaining.strip())

    def _advised(self, now: float, remaining: str) -> None:
        """``X-RateLimit-Remaining`` on a success: hold the probe at the limit while it says 0.

        Only once it has said ``_ROOM`` or more: a server that lets no burst through (a bucket
        of one) says 0 after every request, whatever the pace, and 1 when its bucket refilled
        while it worked on a slow request; neither says the pace is at its limit."""
        if remaining == "0" and self._room_seen:
            if not self._probe_held and now - self._climb_from >= self._climb:
                # The probe reached the limit: it is the estimate now, held there.
                rate = self._rate_at(now)
                if rate is not None:
                    self._estimate = rate
                self._probe_held = True
        elif remaining.isdigit() and remaining != "0":
            if int(remaining) >= _ROOM:
                self._room_seen = True
            if not self._probe_held:
                return
            # Room again (the limit rose): probe from here.
            self._probe_held = False
            self._climb_from = now - self._climb

    def on_throttle(
        self, sent_at: float, retry_after: float | None, headers: Mapping[str, str] | None = None
    ) -> None:
        """React to a 429 for a request that started at ``sent_at`` (a value from :meth:`acquire`).

        Pauses every request for ``retry_after`` seconds when given; cuts the rate unless the
        request started before the last cut, or the 429s are noise (see the module docstring).
        """
        now = self._clock()
        if self._calm_accepted:
            self._settle_calm()
        self.throttles += 1
        self._told_when = retry_after is not None
        if retry_after is not None and retry_after > 0:
            until = now + retry_after
            if until > self._paused_until:
                self._paused_until = until
                self._next_slot = max(self._next_slot, until)
        if self._pending is not None and self._pending_answer(False):
            self._cut(now, sent_at)  # a reading confirmed (see _limitrules)
            return
        if sent_at < self._last_decrease:
            return  # the 429 belongs to the pace in force before the cut
        if self._squeezed(now, sent_at, retry_after):
            self.squeezed += 1
            return  # the server's timing, not the pace: retried, nothing learnt
        self._throttled += 1
        self._answer(False)
        refused = self._refused_pace(sent_at)
        if refused is not None and refused < self._lowest_refused:
            self._lowest_refused = refused
        if not self._pace_is_the_cause(now):
            return
        self._cut(now, sent_at)

    def _climbing(self, now: float) -> bool:
        """Whether the pace is on its way back to the estimate (not above it)."""
        return self._estimate is not None and now - self._climb_from < self._climb

    def _cut(self, now: float, sent_at: float) -> None:
        """Apply a 429 that is news: the limit the rules read from it, the climb back."""
        self.decreases += 1
        measured, far, base = self._measure(now, sent_at)
        finding = self._finding and self._bursty is False
        if measured is None:  # nothing measured: halve, and find the limit from there
            estimate = floor = base / 2.0
        elif self._leap or finding:
            # The pace accepted, far below the one refused; or the start of a job against a
            # server allowing no burst (no estimate held yet): probe up from it at once, fast.
            self._leap = True
            estimate = floor = measured
            if finding and not self._accepted:
                # Not one request accepted since the last cut: far above the limit still, and
                # just below the pace refused would be refused again. A step down, and back up.
                estimate = floor = min(measured, base / _FINDING_STEP)
        else:
            estimate, floor = measured, _BACKOFF * measured
        if self.max_rate is not None:
            estimate = min(estimate, self.max_rate)
        estimate = max(estimate, _MIN_RATE)
        previous, self._estimate = self._estimate, estimate
        stable = previous is not None and abs(estimate - previous) <= _STABLE * previous
        if stable or self._sent >= _JUDGE_AFTER:
            self._finding = False  # found twice, or a pace held for a while: the limit is found
        self._floor = min(max(floor, _MIN_RATE), estimate)
        if stable:
            if self._sent >= _JUDGE_AFTER:
                self._held = estimate  # a level the pace kept for a while
            if now - self._fell_at < _FALL_MEMORY:
                # The limit fell from a level it held a moment ago: it may come back, and the
                # time before a probe finds it is rate lost. Probe soon after each cut.
                self._climb = _FALLEN_CLIMB
            else:
                # The limit holds still: probe it seldom, so that 429s stay few.
                self._climb = min(max(_REQUESTS_PER_CYCLE / estimate, _MIN_CLIMB), _MAX_CLIMB)
        else:
            if self._held is not None and estimate <= _FELL * self._held:
                self._fell_at, self._held = now, None
            elif previous is not None and estimate * _FELL >= previous:
                self._fell_at = -math.inf  # it came back: probing seldom again
            # The limit moved (or is new): probe again soon, in case it moves on; but not before
            # enough requests to tell whether the cut worked (see _pace_is_the_cause).
            self._climb = min(max(_JUDGE_AFTER / estimate, _MIN_CLIMB), _MOVED_CLIMB)
        if (far and self._bursty) or floor == estimate:
            # Far above the limit (the share that got through is the least it is), or nothing
            # measured: straight to probing.
            self._climb = 0.0
        self._probe_held = False
        # After a leap, or a moment after the limit fell (it may come back), a fast probe.
        leap, self._leap = self._leap, False
        if leap or (measured is not None and now - self._fell_at < _FALL_MEMORY):
            self._probe_scale = _doubling_time(estimate, _LEAP_PROBE_SCALE, _LEAP_PROBE_TURNS)
        elif measured is None:  # a guess, not a pace: nothing to count turns of
            self._probe_scale = _PROBE_SCALE
        else:
            self._probe_scale = _doubling_time(estimate, _PROBE_SCALE, _PROBE_TURNS)
        # The climb, and the counts that judge it, start when a pause ends.
        self._climb_from = max(now, self._paused_until)
        self._new_epoch(now)
        # Turns reserved at the old pace are void (their holders re-queue when they wake): the
        # next turn follows the last request that actually started, at the new pace. But a
        # server allowing no burst takes no token for a request it refuses: when this 429 refused
        # the last request to start, just after one it accepted, its next token comes a turn
        # after that one, and a turn spaced from the refused start would leave it unused (a turn
        # of the server's rate lost at every cut). Only at a cut, which sets a pace below the
        # one refused: a 429 that cuts nothing leaves the pace as it was, and a retry spaced from
        # the last request accepted at that pace would be refused in turn.
        starts = self._starts
        if (
            self._bursty is False
            and sent_at >= self._spaced_from
            and len(starts) >= 2
            and starts[-2][0] <= self._ok_sent < sent_at
        ):
            self._spaced_from = self._ok_sent
        earliest = -math.inf if self.max_rate is None else sent_at + 1.0 / self.max_rate
        # (``max_rate`` is a ceiling on requests sent: the refused one counts.)
        self._next_slot = max(now, self._spaced_from + 1.0 / self._floor, self._paused_until, earliest)

    def _forget_cuts(self, now: float) -> None:
        """The 429s were noise: the cuts they made are undone, by probing up from the estimate
        at once (the pace leaves it within a second or two, unless a clear excess of 429s says
        the limit is there after all)."""
        if self._estimate is not None:
            self._floor = self._estimate
        self._climb, self._climb_from, self._probe_held = 0.0, max(now, self._paused_until), False
        self._probe_scale = _doubling_time(self._estimate, _PROBE_SCALE, _PROBE_TURNS)
        rate = self._rate_at(now)
        # Turns reserved at the cut pace are void; waiting requests re-queue when they wake.
        self._new_epoch(now)
        self._next_slot = max(now, self._paused_until, self._spaced_from + (1.0 / rate if rate else 0.0))


def _doubling_time(estimate: float | None, seconds: float, turns: float) -> float:
    """Seconds for a probe to double the estimate: ``seconds``, or ``turns`` turns of it when
    that is longer, and never more than ``_SLOWEST_PROBE``."""
    if not estimate:
        return seconds
    return min(max(seconds, turns / estimate), _SLOWEST_PROBE)


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
