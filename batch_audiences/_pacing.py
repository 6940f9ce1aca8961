"""Pacing: the adaptive rate limiter shared by every request of one client.

Batch publishes no rate figure for the audience routes, so :class:`RateLimiter` starts unlimited
(or at ``max_rate``) and learns the limit from the server's 429s, the way TCP congestion control
learns a path's capacity from lost packets (CUBIC's curve, as in botocore's "adaptive" retry mode,
and BBR's habit of probing above what was measured):

- **The cut.** A 429 sets the limit estimate ``W`` and drops the pace to 95 % of it. For a
  server that lets bursts through (the unpaced start of a job got several requests through
  before its first 429), ``W`` is what the server accepted per second since the last cut: its
  bucket was empty at both 429s, so a probe that went through while a saved burst lasted does
  not count as rate. For one that lets none through (every request must come ``1/R`` after the
  last), ``W`` is just below the shortest gap refused: the highest gap accepted since the cut.
  Far above the limit (most answers 429s: the start of a job, a limit that fell), ``W`` is the
  limit's share of the pace, from the share that got through. Nothing measured yet: halved. The
  cut applies to the whole client: requests already waiting are re-queued at the new pace.
- **The climb.** From there the pace returns to ``W`` along a concave cubic (fast at first, flat
  near ``W``) in 1 to 2 s (about ``_REQUESTS_PER_CYCLE`` requests; 1 s when ``W`` just moved),
  then probes above along a convex cubic: 1 % more after 0.1 s, twice ``W`` after 0.5 s, nine
  times after 1 s (at most ``_PROBE_CAP`` times). A limit that rose is found within a second or
  two; at a steady limit the client meets about one 429 per climb. Time during which no request
  waited for its turn does not count (the pace was not used, so it taught nothing). Turns are
  reserved at the pace the curve will have at their time, on a schedule of target times, so
  that late wake-ups of the event loop do not add up.
- **A 429 while climbing** (below ``W``) does not cut at once: the server's timing jitters,
  and ``W`` may be a little high. Most requests refused since the cut: far above the limit, cut
  again (and probe at once). A few, once enough were sent to judge: ``W`` was a little high;
  it moves just below the lowest pace refused.
- **Echoes.** A 429 answering a request sent *before* the last cut says nothing new: it is
  honoured (``Retry-After``) but does not cut again, so a burst of in-flight 429s is one signal.
- **Noise.** When climb after climb meets a share of 429s of ``_NOISE_SHARE`` or more (over
  ``_NOISE_SAMPLE`` requests at least; a clean climb starts the count again), they are not the
  pace's doing (a server or proxy that throttles a share of requests whatever the rate): that
  share is remembered as noise, the pace probes up from ``W`` at once, and from then on only a
  share of 429s clearly above the noise cuts it. Each such 429 is still honoured and retried.
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
from collections import deque
from collections.abc import Awaitable, Callable, Mapping

from ._errors import ClientClosedError, ThrottledError
from ._ratewindow import WINDOW as _WINDOW
from ._ratewindow import Window as _Window

__all__ = ["RateLimiter"]

# After a cut, the pace restarts at this share of the limit estimate…
_BACKOFF = 0.95
# …and one cut divides the pace by at most this much.
_DEEPEST_CUT = 1 / 8
# The climb back to the estimate lasts about this many requests at the estimated rate…
_REQUESTS_PER_CYCLE = 30
# …but no less and no more than these many seconds; the shortest when the estimate just moved
# by more than _STABLE (a share of it).
_MIN_CLIMB = 1.0
_MAX_CLIMB = 1.5
# …and no more than this when the estimate just moved (the limit may be moving on).
_MOVED_CLIMB = 1.0
_STABLE = 0.15
# An estimate that falls to this share of one it held or less is a limit that fell: for this
# many seconds, climbs last this long (it may come back).
_FELL = 0.5
_FALL_MEMORY = 12.0
_FALLEN_CLIMB = 0.6
# Past the estimate, the pace grows as CUBIC's window does: twice the estimate after this many
# seconds, 9 times after twice as long…
_PROBE_SCALE = 0.5
# …up to this multiple of the estimate.
_PROBE_CAP = 64.0
# The rate never falls below this, so a single wrong signal cannot stall a job for minutes.
_MIN_RATE = 0.2
# The last starts are remembered, with the pace then.
_MIN_EVIDENCE = 8
# The pace kept by the client is measured over this many starts.
_KEPT_STARTS = 4
# …and counts when it fell clearly short of the pace (a little jitter either way does not).
_KEPT_SHORT = 0.9
# The share of 429s a cut is based on is that of the last answers…
_LAST_ANSWERS = 20
# …when there are at least this many.
_MIN_ANSWERS = 4
# The pace assumed when the first request of a client is throttled, before anything is known.
_FIRST_GUESS = 1.0
# Requests sent since a cut before its effect is judged; until then a further 429 cuts again only
# when 429s are already this many, and at least half of those requests (a limit far below the
# pace, typically at the start of a job). A verdict of noise also needs this many 429s.
_JUDGE_AFTER = 20
_CLEAR_OVERLOAD = 3
_NOISE_EVIDENCE = 5
# While climbing back below the estimate, at least this share of 429s is noise, not a limit,
# over at least this many requests of climbs in a row (a climb with at most _CLEAN_SHARE of
# 429s starts the count again)…
_NOISE_SHARE = 0.15
_NOISE_SAMPLE = 40
_CLEAN_SHARE = 0.05
# Such climbs prove noise only once the cuts they caused took the estimate this far below where
# they started (a limit's 429s stop below it; noise does not), each cutting to this share of
# the lowest pace refused.
_NOISE_DEPTH = 0.8
_NOISY_CUT = 0.95
# …and once noise is known, a share this far above it is a limit again.
_NOISE_MARGIN = 0.1
# Counts since a cut are halved past this many requests, so shares follow recent behaviour.
_SHARE_MEMORY = 400
# Waits for the spacing from the last start, at most, before a request goes.
_SPACING_TRIES = 3
# A request woken a little early relative to the last start (which may have woken late) goes
# anyway: turns are kept on a schedule of target times, so that late wake-ups do not add up.
_SPACING_TOLERANCE = 0.04
# The rate the server accepted between two cuts (its "goodput") bounds the estimate, once it
# rests on this many accepted answers over this many seconds of paced sending…
_GOODPUT_ANSWERS = 5
_GOODPUT_SECONDS = 0.3
# …with this much slack: a bucket allowing no burst loses a little while the pace climbs.
_GOODPUT_SLACK = 1.05
# Only a server that lets bursts through makes a pace above its rate go through for a while: it
# lets at least this many requests of the unpaced start of a job through before its first 429.
_BURST_EVIDENCE = 4
# A share of accepted answers from which a 429 says "just past the limit", not "far above it".
_MOSTLY = 0.75
# A server that lets no burst through refuses a pace just above its limit: aim a little below.
_JUST_BELOW = 0.98
# X-RateLimit-Remaining this high, once, says the server saves up a burst (a bucket of one says
# at most 1: the token that came back while it worked on the request).
_ROOM = 2
# A 429 answered this much sooner after the last accepted answer than the two requests were
# sent apart was squeezed by the server's timing.
_SQUEEZED = 0.6
_CLOSED_MESSAGE = "this client was closed while the request waited for its turn"


class RateLimiter:
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
        self.max_rate = max_rate
        self.fail_fast = fail_fast
        self._clock = clock
        self.sleep = sleep
        self._closed = False
        self._waiters: set[asyncio.Future[None]] = set()
        # The control law: no estimate (None) means the pace is max_rate (None: unlimited).
        self._estimate: float | None = None
        self._floor = 0.0  # the pace right after the cut
        self._climb_from = -math.inf  # when the climb started (the cut, or the end of its pause)
        self._climb = _MIN_CLIMB  # seconds to climb back to the estimate
        self._probe_held = False  # X-RateLimit-Remaining: 0 seen since the climb ended
        # The estimate at the last cut that left it where it was, and when it last fell far
        # below such a level.
        self._held: float | None = None
        self._fell_at = -math.inf
        self._room_seen = False  # X-RateLimit-Remaining above 0 ever seen
        self._next_slot = -math.inf
        self._paused_until = -math.inf
        # The start of the last request accepted, and when its answer came (see _squeezed).
        self._ok_sent = self._ok_answered = -math.inf
        self._last_decrease = -math.inf
        self._last_start = -math.inf
        self._sends = _Window()
        # The pace in force at the last starts, with their times.
        self._starts: deque[tuple[float, float | None]] = deque(maxlen=_MIN_EVIDENCE)
        # The last answers (True: accepted; 429s only when fresh), and how many were accepted.
        self._answers: deque[bool] = deque(maxlen=_LAST_ANSWERS)
        self._answers_ok = 0
        # Requests sent while climbing back, and 429s for them, over climbs in a row that met
        # many 429s (the evidence of noise).
        self._noise_sent = self._noise_throttled = 0
        # The estimate when the first of those climbs began (None: no noisy climb counted).
        self._noise_pace: float | None = None
        #: Number of 429 answers reported to this limiter.
        self.throttles = 0
        #: Number of 429s the server's own timing caused (see _squeezed): retried, nothing more.
        self.squeezed = 0
        #: Number of 429s that cut the rate (the others were echoes of an earlier one, or noise).
        self.decreases = 0
        #: Share of requests the server throttles whatever the pace, once learned (else None).
        self.noise: float | None = None
        # Requests started, and fresh 429s for them, since the last cut (this "epoch", which
        # started at _epoch_start).
        self._sent = self._throttled = 0
        self._epoch_start: float | None = None
        # Answers accepted since the last cut, and seconds since then when the pace was not used.
        self._accepted = 0
        self._idle = 0.0
        # The lowest pace at which a request sent since the last cut was refused, and (for a
        # server that lets no burst through) the highest accepted.
        self._lowest_refused = math.inf
        self._highest_accepted = 0.0
        # Whether the server lets bursts through (None: not known yet).
        self._bursty: bool | None = None

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
            beyond = (elapsed - climb) / _PROBE_SCALE
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
                    # Spaced from the last request that started (which may have started late).
                    start = self._last_start + (1.0 - _SPACING_TOLERANCE) / rate
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
        last request that started (which may have started late: a busy event loop), as a server
        allowing no burst demands; None when a cut or a pause came meanwhile (take a new turn)."""
        # A few times at most: another request may have started meanwhile, but a pause that
        # takes no time (the test mode) must not loop for ever.
        for _ in range(_SPACING_TRIES):
            woke = self._clock()
            rate = self._rate_at(woke) if self._estimate is not None else self.max_rate
            gap = self._last_start + (1.0 - _SPACING_TOLERANCE) / rate - woke if rate is not None else 0.0
            if gap <= 1e-4:
                return woke
            await self._pause(gap)
            if self._closed:
                raise ClientClosedError(_CLOSED_MESSAGE)
            if start < self._paused_until or now < self._last_decrease:
                return None
        return self._clock()

    def _started(self, now: float) -> float:
        if now > self._last_start:
            self._last_start = now
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
        answers = self._answers  # _answer(True), inlined: this runs for every request
        if len(answers) == answers.maxlen:
            self._answers_ok -= answers[0]
        answers.append(True)
        self._answers_ok += 1
        self._accepted += 1
        if sent_at is not None and self._bursty is False:
            if sent_at > self._ok_sent:
                # The last request accepted, and when its answer came (see _squeezed).
                self._ok_sent, self._ok_answered = sent_at, self._clock()
            if sent_at >= self._last_decrease:
                # A server that lets no burst through accepted this gap: its limit is at least that.
                pace = self._refused_pace(sent_at)
                if pace is not None and pace > self._highest_accepted:
                    self._highest_accepted = pace
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
        self.throttles += 1
        if retry_after is not None and retry_after > 0:
            until = now + retry_after
            if until > self._paused_until:
                self._paused_until = until
                self._next_slot = max(self._next_slot, until)
        if sent_at < self._last_decrease:
            return  # the 429 belongs to the pace in force before the cut
        if self._squeezed(now, sent_at):
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

    def _squeezed(self, now: float, sent_at: float) -> bool:
        """Whether a 429 from a server that lets no burst through came because the server
        handled this request much closer to the last one it accepted than the client sent them:
        sent at a gap the estimate allows, answered far sooner than that after it. A server
        that stalls (a busy machine) handles what arrived meanwhile at once, and all but the
        first are refused, whatever the pace; slowing down for them would only lose rate."""
        estimate = self._estimate
        if self._bursty is not False or estimate is None:
            return False
        sent_gap = sent_at - self._ok_sent
        if sent_gap * estimate < 1.0 - _SPACING_TOLERANCE:
            return False  # sent faster than the estimate: the pace's doing
        return now - self._ok_answered < _SQUEEZED * sent_gap

    def _refused_pace(self, sent_at: float) -> float | None:
        """The pace a request started at ``sent_at`` went at: the one in force then, or (for a
        server that lets no burst through, which judges the gap between two arrivals) the gap
        from the start before it, if shorter."""
        pace = self._rate_at(sent_at)
        if self._bursty is False:
            for started, _ in reversed(self._starts):
                if started < sent_at:
                    gap = 1.0 / max(sent_at - started, 1e-6)
                    return gap if pace is None else min(pace, gap)
        return pace

    def _climbing(self, now: float) -> bool:
        """Whether the pace is on its way back to the estimate (not above it)."""
        return self._estimate is not None and now - self._climb_from < self._climb

    def _cut(self, now: float, sent_at: float) -> None:
        self.decreases += 1
        # The pace refused: the one in force when the request was sent. Its predecessor's went
        # through (else this would not be news): the limit is between the two.
        rate = self._refused_pace(min(sent_at, now))
        for started, pace in reversed(self._starts):
            if started < sent_at:
                if self._bursty is False:
                    pace = self._refused_pace(started)
                if pace is not None and (rate is None or pace < rate):
                    rate = pace
                break
        offered = self._offered_rate(now)
        if rate is not None and offered is not None:
            # What the last few starts offered counts too: a probe's pace climbs faster than an
            # average over the window follows.
            recent = self._recent_rate(now)
            if recent is not None and recent > offered:
                offered = recent
        # A pace far above what was offered was not binding (the client was not using it).
        base = (offered or _FIRST_GUESS) if rate is None else min(rate, 2.0 * (offered or rate))
        # Nor one above what the last starts actually kept (a busy event loop wakes late).
        # (Far below the pace, the client was not using it: then what it offered counts.)
        kept = self._kept_rate(now) if rate is not None else None
        if kept is not None and 0.5 * base <= kept < _KEPT_SHORT * base:
            base = min(base, kept)
        if self._bursty is None:
            self._bursty = self._accepted >= _BURST_EVIDENCE
        measured, far = self._estimate_at_cut(now, base)
        if measured is None:  # nothing measured: halve, and find the limit from there
            estimate = floor = base / 2.0
        else:
            estimate, floor = measured, _BACKOFF * measured
        if self.max_rate is not None:
            estimate = min(estimate, self.max_rate)
        estimate = max(estimate, _MIN_RATE)
        previous, self._estimate = self._estimate, estimate
        self._floor = min(max(floor, _MIN_RATE), estimate)
        if previous is not None and abs(estimate - previous) <= _STABLE * previous:
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
            # The limit moved (or is new): probe again soon, in case it moves on; but not before
            # enough requests to tell whether the cut worked (see _pace_is_the_cause).
            self._climb = min(max(_JUDGE_AFTER / estimate, _MIN_CLIMB), _MOVED_CLIMB)
        if (far and self._bursty) or floor == estimate:
            # Far above the limit (the share that got through is the least it is), or nothing
            # measured: straight to probing.
            self._climb = 0.0
        self._probe_held = False
        # The climb, and the counts that judge it, start when a pause ends.
        self._climb_from = max(now, self._paused_until)
        self._sent = self._throttled = self._accepted = 0
        self._idle, self._lowest_refused, self._highest_accepted = 0.0, math.inf, 0.0
        self._epoch_start = now
        self._last_decrease = now
        # Turns reserved at the old pace are void (their holders re-queue when they wake): the
        # next turn follows the last request that actually started, at the new pace.
        self._next_slot = max(now, self._last_start + 1.0 / self._floor, self._paused_until)

    def _estimate_at_cut(self, now: float, base: float) -> tuple[float | None, bool]:
        """The limit, as a 429 refusing the pace ``base`` shows it (None: nothing to go by), and
        whether the pace was far above it."""
        bursty = self._bursty is not False
        if self._climbing(now):
            # A second cut while climbing back to the estimate.
            if 2 * self._throttled >= self._sent > 0:
                # Most requests since the last cut refused: far above the limit (a limit that
                # fell, or the start of a job), and what got through is the limit's share.
                share = base * _share_of_limit(1.0 - self._throttled / self._sent, bursty)
                return share, True
            refused = min(base, self._lowest_refused)
            if self._throttled > _CLEAN_SHARE * self._sent:
                # Several (the server's timing blurs the limit): below the lowest pace refused
                # since the cut, by a margin.
                return _NOISY_CUT * refused, False
            # One (the climb aimed a little high): just below the lowest pace refused.
            return self._below(refused), False
        goodput = self._goodput(now) if bursty or self._room_seen else None
        if goodput is not None:
            # Since the last cut, the server let through its rate and no more: a 429 says its
            # bucket is empty, at that cut as at this one. A pace above that rate went through
            # only while a saved burst lasted: the burst is spent, the rate is not higher.
            return min(base, goodput * _GOODPUT_SLACK), False
        accepted = self._accepted_share()
        if accepted is None:
            return None, False
        if not bursty:
            # A probe crossed the limit: it is between this gap and the last one accepted.
            # (Older 429s in the last answers say nothing here.)
            return self._below(base), False
        if accepted >= _MOSTLY:
            return base, False  # a probe just crossed the limit
        # Far above it: the limit's share of the pace is what got through.
        return base * _share_of_limit(accepted, bursty), False

    def _below(self, refused: float) -> float:
        """Just below a pace refused: the highest pace accepted since the last cut, if lower
        (a server that lets no burst through accepts any gap above its limit's)."""
        highest = self._highest_accepted
        return highest if 0.5 * refused < highest < _JUST_BELOW * refused else _JUST_BELOW * refused

    def _pace_is_the_cause(self, now: float) -> bool:
        """Whether a fresh 429 should cut the pace (see the module docstring); may decide that
        the 429s are noise, and undo the cuts."""
        sent, throttled = self._sent, self._throttled
        overload = throttled >= _CLEAR_OVERLOAD and 2 * throttled >= sent
        if self.noise is not None:
            if self._climbing(now) and sent >= _JUDGE_AFTER and throttled < self.noise / 2 * sent:
                self.noise = None  # the last cut did stop most 429s: a limit after all
                return True
            return overload or (sent >= _JUDGE_AFTER and throttled > (self.noise + _NOISE_MARGIN) * sent)
        if not self._climbing(now):
            if throttled <= _CLEAN_SHARE * sent:
                self._noise_sent = self._noise_throttled = 0  # a clean climb: a limit's doing
                self._noise_pace = None
            return True  # above the estimate (or unpaced): this 429 says where the limit is
        # Climbing back, below what the server accepted: 429s here are few if the pace is the
        # cause. Many, but not most: they come whatever the pace.
        if overload:
            return True
        if sent < _JUDGE_AFTER:
            return False
        if throttled <= _CLEAN_SHARE * sent:
            self._noise_sent = self._noise_throttled = 0
            self._noise_pace = None
            return True
        # Counted over climbs in a row, each after a cut to what got through: one climb alone
        # may have aimed above the limit (a server allowing bursts inflates the estimate).
        self._noise_sent += sent
        self._noise_throttled += throttled
        if self._noise_pace is None:
            self._noise_pace = self._estimate
        if (
            self._noise_sent >= _NOISE_SAMPLE
            and self._noise_throttled >= _NOISE_EVIDENCE
            and self._noise_throttled >= _NOISE_SHARE * self._noise_sent
            and self._estimate is not None
            and self._noise_pace is not None
            and self._estimate <= _NOISE_DEPTH * self._noise_pace
        ):
            # 429s at the same share over climbs that went clearly lower: the pace is not
            # their cause. (A limit's 429s thin out below it: those climbs would be clean.)
            self.noise = self._noise_throttled / self._noise_sent
            self._noise_sent = self._noise_throttled = 0
            self._noise_pace = None
            self._forget_cuts(now)
            return False
        return True

    def _forget_cuts(self, now: float) -> None:
        """The 429s were noise: the cuts they made are undone, by probing up from the estimate
        at once (the pace leaves it within a second or two, unless a clear excess of 429s says
        the limit is there after all)."""
        if self._estimate is not None:
            self._floor = self._estimate
        self._climb, self._climb_from, self._probe_held = 0.0, max(now, self._paused_until), False
        rate = self._rate_at(now)
        self._sent = self._throttled = self._accepted = 0
        self._idle, self._lowest_refused, self._highest_accepted = 0.0, math.inf, 0.0
        self._epoch_start = now
        # Turns reserved at the cut pace are void; waiting requests re-queue when they wake.
        self._last_decrease = now
        self._next_slot = max(now, self._paused_until, self._last_start + (1.0 / rate if rate else 0.0))

    def _accepted_share(self) -> float | None:
        """The share of the last answers that were not 429s (None: too few answers); called
        on a 429, which is the last of them."""
        answers = self._answers
        if len(answers) < _MIN_ANSWERS:
            return None
        # Without the 429 that asks for the cut: one 429 says the limit was just passed (by a
        # probe), not that a twentieth of the pace is too much.
        return min(1.0, self._answers_ok / (len(answers) - 1))

    def _answer(self, ok: bool) -> None:
        answers = self._answers
        if len(answers) == answers.maxlen:
            self._answers_ok -= answers[0]
        answers.append(ok)
        self._answers_ok += ok

    def _goodput(self, now: float) -> float | None:
        """Requests accepted per second of paced sending since the last cut (None: too few)."""
        active = now - self._last_decrease - self._idle
        if self._accepted < _GOODPUT_ANSWERS or not _GOODPUT_SECONDS <= active < math.inf:
            return None
        return self._accepted / active

    def _kept_rate(self, now: float) -> float | None:
        """The pace the last few starts kept, when it fell clearly short of the paces in force
        at their times (None otherwise). Judged against those paces, not the pace of now: a
        probe's pace moves fast, and starts that kept to it are not late."""
        starts = self._starts
        if len(starts) < _KEPT_STARTS or now - starts[0][0] > _WINDOW:
            return None
        last = list(starts)[-_KEPT_STARTS:]
        span = max(last[-1][0] - last[0][0], 1e-3)
        # The time those turns would have taken at the paces in force when they started.
        due = sum(1.0 / pace for _, pace in last[1:] if pace)
        kept = (_KEPT_STARTS - 1) / span
        if due <= 0.0 or span * _KEPT_SHORT <= due:
            return None
        return kept

    def _recent_rate(self, now: float) -> float | None:
        """The rate of the last few starts (None: too few, or too old)."""
        starts = self._starts
        if len(starts) < _KEPT_STARTS or now - starts[-_KEPT_STARTS][0] > _WINDOW:
            return None
        return (_KEPT_STARTS - 1) / max(starts[-1][0] - starts[-_KEPT_STARTS][0], 1e-3)

    def _offered_rate(self, now: float) -> float | None:
        count, first = self._sends.span(now)
        if count < 2:
            return None
        return count / max(now - first, 1e-3)


def _share_of_limit(accepted: float, bursty: bool) -> float:
    """The limit's share of a pace of which ``accepted`` got through, far above the limit.

    A server that lets no burst through refuses every other request of any pace between its
    limit and twice it, two of three up to three times it, …: when ``1/k`` got through, the
    limit is between ``1/k`` and ``1/(k-1)`` of the pace; the middle is taken."""
    if bursty:
        return max(accepted, _DEEPEST_CUT)
    accepted = min(accepted, 0.5)
    return max(accepted * (1.0 + accepted / (2.0 * (1.0 - accepted))), _DEEPEST_CUT)


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
