"""What a 429 says about a server's rate limit: the rules behind each cut of the pace.

:class:`LimitRules` keeps the evidence (the last starts and answers, the counts since the last
cut, whether the server lets bursts through) and reads it when a 429 comes; the limiter in
``_pacing`` applies its verdicts to the pace and schedules the turns. The rules, and why:

- **The estimate at a cut.** For a server that lets bursts through (the unpaced start of a job
  got several requests through before its first 429), the limit ``W`` is what the server
  accepted per second since the last cut: its bucket was empty at both 429s, so a probe that
  went through while a saved burst lasted does not count as rate. Its first 429 says only that
  the bucket is empty: a bucket commonly holds one second of its rate, so ``W`` is what got
  through per second over the last seconds (one at least). A first 429 after a single request
  got through says the server lets no burst through, far below the pace of the start: ``W`` is
  a guess of a few per second, probed up from fast. Both readings wait for the next answers
  (``_expect``), which such servers refuse and 429s at random mostly do not. For a server that
  lets none through (every request must come ``1/R`` after the last one it accepted), ``W`` is
  just below the shortest gap refused: the highest gap accepted since the cut, both gaps
  measured from the last request accepted (a refused one takes no token, so it does not move
  the next turn). When the highest gap accepted is far below the one refused (a probe that leapt), the limit
  is anywhere between: the pace goes back to the one accepted and probes up fast from there
  (``_leap``). A refusal more than ``_GAP_TURNS`` turns after that request, at a pace accepted
  before the cut, is not the gap's doing (429s in a row, at random): the pace in force counts.
  Far above the limit (a share of 429s over a sample: a limit that fell), ``W`` is the
  limit's share of the pace sent at, from the share that got through. Nothing accepted at all
  yet: ``None`` (the limiter halves the pace). The pace refused is the one the client kept: a
  pace the client was not using (far above what it offered over the last starts), or could not
  keep (a busy event loop wakes late), was not the one the server refused.
- **A 429 while climbing** back below ``W`` does not cut at once: the server's timing jitters,
  and ``W`` may be a little high. Most requests refused since the cut: far above the limit,
  cut again. One, once enough were sent to judge: ``W`` moves just below the lowest pace
  refused (or to the highest accepted, if lower). Several: 2 % below the lowest pace refused,
  whatever was accepted (the server's timing blurs the limit there); climbs that keep meeting
  them walk ``W`` down until they stop.
- **Echoes.** A 429 answering a request sent *before* the last cut says nothing new (the
  limiter checks this before asking here), so a burst of in-flight 429s is one signal.
- **Squeezed.** A server allowing no burst that stalls (a busy machine) handles what arrived
  meanwhile at once, and refuses all but the first, whatever the pace. A 429 for a request
  sent a gap the estimate allows after the last one accepted, but answered far sooner than that
  after it, is such a one: it is retried and teaches nothing. (Slowing down for it would lose
  rate and not prevent the next stall.) Not when its ``Retry-After`` says the server is ready
  again within half a turn: a stall refuses a request most of a turn early.
- **Noise.** When climb after climb meets a share of 429s of ``_NOISE_SHARE`` or more (over
  ``_NOISE_SAMPLE`` requests at least; a clean climb starts the count again), and the cuts they
  caused took the estimate ``_NOISE_DEPTH`` below where they began without making them rarer,
  they are not the pace's doing (a server or proxy that throttles a share of requests whatever
  the rate): that share is remembered as noise, the limiter probes up from ``W`` at once, and
  from then on only a share of 429s clearly above the noise cuts the pace. The depth matters:
  a server allowing no burst refuses a share of any pace a little above its limit, and only a
  pace clearly below it tells the two apart.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable

from ._ratewindow import WINDOW as _WINDOW
from ._ratewindow import Window as _Window

__all__ = ["JUDGE_AFTER", "SPACING_TOLERANCE", "LimitRules", "share_of_limit"]

# One cut divides the pace by at most this much.
_DEEPEST_CUT = 1 / 8
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
JUDGE_AFTER = 20
_CLEAR_OVERLOAD = 3
_NOISE_EVIDENCE = 5
# While climbing back below the estimate, at least this share of 429s is noise, not a limit,
# over at least this many requests of climbs in a row (a climb with at most _CLEAN_SHARE of
# 429s starts the count again)…
_NOISE_SHARE = 0.15
_NOISE_SAMPLE = 40
_CLEAN_SHARE = 0.05
# …once the cuts they caused took the estimate this far below where they started (a limit's
# 429s stop below it; noise does not), each cutting to this share of the lowest pace refused
# (small steps: a limit blurred by jitter is found just below where the 429s stop).
_NOISE_DEPTH = 0.9
_NOISY_CUT = 0.98
# …and once noise is known, a share this far above it is a limit again.
_NOISE_MARGIN = 0.1
# A request woken a little early relative to the last start (which may have woken late) goes
# anyway (see the limiter); a gap this much short of the estimate's is still the estimate's.
SPACING_TOLERANCE = 0.04
# The rate the server accepted between two cuts (its "goodput") bounds the estimate, once it
# rests on this many accepted answers over this many seconds of paced sending…
_GOODPUT_ANSWERS = 5
_GOODPUT_SECONDS = 0.3
# …with this much slack: a bucket allowing no burst loses a little while the pace climbs.
_GOODPUT_SLACK = 1.05
# Only a server that lets bursts through makes a pace above its rate go through for a while: it
# lets at least this many requests of the unpaced start of a job through before its first 429.
_BURST_EVIDENCE = 4
# A first 429 after this many is read as a drained bucket (see _estimate_at_cut); after fewer,
# it may be one of 429s that come at random (one in five: a run of 10 before the first in 1 of 9).
_DRAINED_BURST = 10
# A refusal this many turns of the pace in force after the last request accepted, or more,
# says nothing of the gap (see _refused_pace).
_GAP_TURNS = 1.5
# This share of this many requests refused since a cut, at least, says the pace is far above
# the limit (twice the rate of a bucket refuses half; a few 429s in a row come at random too).
_FAR_SHARE = 0.4
_FAR_SAMPLE = 8
# …or this many, and this share, sooner (a limit that fell to a quarter or less).
_FAR_SOON = 4
_FAR_SOON_SHARE = 0.6
# …once this many of the next answers after that 429 were 429s too, before this many were
# accepted (see _pending_answer): 429s at random, one in five, pass this test once in 40.
_CONFIRM = 3
_DENY = 2
# A server that let one request of the unpaced start of a job through, and refused the next
# ones, allows no burst: the pace starts again from a few requests per second, the rate such
# servers commonly allow, and probes up fast (see _estimate_at_cut); once the next two answers
# were 429s too (random ones pass this test once in 25, and then cost little: the probe is fast).
_NO_BURST_GUESS = 10.0
_NO_BURST_CONFIRM = 2
# A share of accepted answers from which a 429 says "just past the limit", not "far above it".
_MOSTLY = 0.75
# A server that lets no burst through refuses a pace just above its limit: aim a little below.
_JUST_BELOW = 0.98
# A 429 answered this much sooner after the last accepted answer than the two requests were
# sent apart was squeezed by the server's timing.
_SQUEEZED = 0.6
# …for a request sent at least this share of the estimate's gap after the last one accepted.
_SQUEEZE_REACH = 0.8
# …and whose Retry-After, if any, is at least this share of the estimate's gap.
_SQUEEZE_WAIT = 0.5
# Squeezed 429s are excused while they stay a minority: each adds 1 to a debt that each accepted
# request pays down by 1/2; at this debt they are not excused any more (see _squeezed).
_SQUEEZE_DEBT = 4.0


class LimitRules:
    """The evidence about a server's limit, and what a 429 makes of it (see the module
    docstring). The limiter (a subclass) owns the pace: it provides :meth:`_rate_at`,
    :meth:`_climbing` and :meth:`_forget_cuts`, and sets ``_estimate``, ``_last_decrease`` and
    ``_told_when`` (whether the 429 being read carried a ``Retry-After``)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._estimate: float | None = None
        self._last_decrease = -math.inf
        self._room_seen = False  # X-RateLimit-Remaining above 1 ever seen
        # The start of the last request accepted, and when its answer came (see _squeezed).
        self._ok_sent = self._ok_answered = -math.inf
        self._sends = _Window()
        # The pace in force at the last starts, with their times.
        self._starts: deque[tuple[float, float | None]] = deque(maxlen=_MIN_EVIDENCE)
        # The last answers (True: accepted; 429s only when fresh), and how many were accepted.
        self._answers: deque[bool] = deque(maxlen=_LAST_ANSWERS)
        self._answers_ok = 0
        # Answers accepted before the first 429, not yet in the two above (see _settle_calm).
        self._calm_accepted = 0
        # Requests sent while climbing back, and 429s for them, over climbs in a row that met
        # many 429s (the evidence of noise), and the estimate when the first of them began.
        self._noise_sent = self._noise_throttled = 0
        self._noise_pace: float | None = None
        #: Number of 429 answers reported to this limiter.
        self.throttles = 0
        #: Number of 429s the server's own timing caused (see the module docstring).
        self.squeezed = 0
        self._squeeze_debt = 0.0
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
        # The highest accepted before the last cut (halved at each cut that accepted none).
        self._accepted_before = 0.0
        # A reading of the limit that the answers after its 429 decide (None: none pending;
        # see _estimate_at_cut), whether the probe leaps from it, and the 429s since.
        self._pending: float | None = None
        self._pending_leap = False
        self._pending_refusals = self._pending_accepted = 0
        self._pending_confirm = self._pending_deny = 1
        # Whether the server lets bursts through (None: not known yet), and whether the last
        # 429 said when to come back (Retry-After).
        self._bursty: bool | None = None
        self._told_when = False
        # The last cut found the pace accepted far below the one refused: the limiter probes
        # up fast from the one accepted (see _below).
        self._leap = False

    # -- provided by the limiter --------------------------------------------------------------------

    def _rate_at(self, now: float) -> float | None:
        raise NotImplementedError

    def _climbing(self, now: float) -> bool:
        raise NotImplementedError

    def _forget_cuts(self, now: float) -> None:
        raise NotImplementedError

    # -- the rules ----------------------------------------------------------------------------------

    def _new_epoch(self, now: float) -> None:
        """Counts start again: a cut (or a verdict of noise) at ``now``."""
        self._sent = self._throttled = self._accepted = 0
        self._accepted_before = max(self._highest_accepted, 0.5 * self._accepted_before)
        self._idle, self._lowest_refused, self._highest_accepted = 0.0, math.inf, 0.0
        self._epoch_start = now
        self._last_decrease = now

    def _measure(self, now: float, sent_at: float) -> tuple[float | None, bool, float]:
        """For a 429 that cuts: the limit it shows (None: nothing to go by), whether the pace
        was far above it, and the pace it refused."""
        # The pace refused: the one in force when the request was sent. Its predecessor's went
        # through (else this would not be news): the limit is between the two.
        # (A server that lets no burst through judges the gap from the last request it
        # accepted, which _refused_pace measures, when the starts of accepted requests are known.)
        rate = self._refused_pace(min(sent_at, now))
        if self._bursty is not False or self._ok_sent == -math.inf:
            for started, pace in reversed(self._starts):
                if started < sent_at:
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
        # (Far below the pace, the client was not using it: then what it offered counts.
        # For a server allowing no burst, the gap refused was measured between actual starts.)
        kept = self._kept_rate(now) if rate is not None and self._bursty is not False else None
        if kept is not None and 0.5 * base <= kept < _KEPT_SHORT * base:
            base = min(base, kept)
        if self._bursty is None:
            self._bursty = self._accepted >= _BURST_EVIDENCE
        measured, far = self._estimate_at_cut(now, base)
        return measured, far, base

    def _pending_answer(self, ok: bool) -> bool:
        """Count an answer towards a pending reading (see :meth:`_estimate_at_cut`); True when
        it confirms it (the limiter then cuts to it)."""
        if ok:
            self._pending_accepted += 1
            if self._pending_accepted >= self._pending_deny:
                self._pending = None  # mostly accepted since: the 429 came at random
            return False
        self._pending_refusals += 1
        return self._pending_refusals >= self._pending_confirm

    def _expect(self, reading: float, *, leap: bool, confirm: int, deny: int) -> None:
        """A reading of the limit, applied once ``confirm`` of the next answers are 429s, and
        forgotten once ``deny`` are accepted first."""
        self._pending, self._pending_leap = reading, leap
        self._pending_confirm, self._pending_deny = confirm, deny
        self._pending_refusals = self._pending_accepted = 0

    def _squeezed(self, now: float, sent_at: float, retry_after: float | None) -> bool:
        """Whether a 429 from a server that lets no burst through came because the server
        handled this request much closer to the last one it accepted than the client sent them:
        answered far sooner after it than it was sent. A server that stalls (a busy machine)
        handles what arrived meanwhile at once, and all but the first are refused, whatever the
        pace; slowing down for them would only lose rate.

        Only for a request sent at a gap not far below the estimate's (a probe just above it):
        a client that stalls reads its answers in a bunch too, and a pace far above the
        estimate must still be cut when it is refused.

        And only while such 429s stay a minority of the answers (:data:`_SQUEEZE_DEBT`): a
        stall refuses a few requests among many accepted ones, but an estimate above the limit
        gets most requests refused, and answers that look squeezed must not keep it there.

        Nor when the 429 said the server is ready again in less than ``_SQUEEZE_WAIT`` of a turn
        (``retry_after``): a stall refuses what waited behind the request it accepted about a
        turn early; a request refused a few milliseconds early came at the pace (its answer
        came soon only because a refusal takes the server no work)."""
        estimate = self._estimate
        if self._bursty is not False or estimate is None or self._squeeze_debt >= _SQUEEZE_DEBT:
            return False
        if retry_after is not None and retry_after * estimate < _SQUEEZE_WAIT:
            return False
        sent_gap = sent_at - self._ok_sent
        if sent_gap * estimate < _SQUEEZE_REACH:
            return False  # sent far faster than the estimate: the pace's doing
        if now - self._ok_answered < _SQUEEZED * sent_gap:
            self._squeeze_debt += 1.0
            return True
        return False

    def _gap_pace(self, sent_at: float) -> float | None:
        """The pace a request started at ``sent_at`` went at: the one in force then, or (for a
        server that lets no burst through) the gap from the last request accepted before it,
        if shorter. Such a server judges that gap, not the one from the request before: a
        refused request takes nothing from its bucket, so it does not move the next turn."""
        pace = self._rate_at(sent_at)
        if self._bursty is False and -math.inf < self._ok_sent < sent_at:
            gap = 1.0 / max(sent_at - self._ok_sent, 1e-6)
            return gap if pace is None else min(pace, gap)
        return pace

    def _refused_pace(self, sent_at: float) -> float | None:
        """The pace a refused request went at (see :meth:`_gap_pace`); but a gap from the last
        request accepted longer than one accepted since the last cut is not why it was refused
        (429s that come whatever the pace, or the server's own timing): then the pace in force
        is the one refused, as it is for a server allowing bursts."""
        pace = self._gap_pace(sent_at)
        if self._bursty is False and pace is not None:
            in_force = self._rate_at(sent_at)
            if pace < _JUST_BELOW * self._highest_accepted or (
                in_force is not None
                and pace * _GAP_TURNS < in_force <= _GAP_TURNS * self._accepted_before
            ):
                # (Nor is one more than _GAP_TURNS turns from it, at a pace about one accepted
                # before the cut: a server allowing no burst refuses that only when the pace is
                # that many times its limit; 429s in a row, at random, often.)
                return in_force
        return pace

    def _estimate_at_cut(self, now: float, base: float) -> tuple[float | None, bool]:
        """The limit, as a 429 refusing the pace ``base`` shows it (None: nothing to go by), and
        whether the pace was far above it."""
        bursty = self._bursty is not False
        pending = self._pending
        if pending is not None and self._pending_refusals >= self._pending_confirm:
            # A reading that the answers since its 429 confirmed (see below).
            self._pending, self._leap = None, self._pending_leap
            return min(base, pending), False
        if self._estimate is None and bursty and self._accepted >= _DRAINED_BURST:
            # The unpaced start of a job may have drained a saved burst: then the 429 says the
            # bucket is empty, not what refills it. A bucket commonly holds one second of its
            # rate, so the rate would be what got through per second over the last seconds,
            # and one second at the least. (A rate above it is found by the probe; a bucket
            # holding more, by the goodput at the next cut.)
            count, first = self._sends.span(now)
            reading = min(self._accepted, count) / max(now - first, 1.0)
            self._expect(reading, leap=False, confirm=_CONFIRM, deny=_DENY)
        elif self._estimate is None and not bursty and self._accepted <= 1 and not self._told_when:
            # One request of the unpaced start got through, the next were refused: a server
            # allowing no burst, whose limit is far below that start's pace. Each halving of the
            # pace would cost a 429: the pace starts again from a guess and probes up fast.
            # (Not when the 429 says when to come back: its pause already spaces the requests.)
            self._expect(_NO_BURST_GUESS, leap=True, confirm=_NO_BURST_CONFIRM, deny=1)
        # Both readings wait for the next answers: a 429 that comes at random looks the same,
        # but the answers after it are mostly accepted, where a drained bucket or a server
        # allowing no burst refuses them. Meanwhile, the rules below apply.
        if self._climbing(now):
            # A second cut while climbing back to the estimate.
            sent, throttled = self._sent, self._throttled
            if (sent >= _FAR_SAMPLE and throttled >= _FAR_SHARE * sent) or (
                throttled >= _FAR_SOON and throttled >= _FAR_SOON_SHARE * sent
            ):
                # Many requests since the last cut refused: far above the limit (a limit that
                # fell, or the start of a job), and what got through is the limit's share.
                got_through = 1.0 - throttled / sent
                if bursty:
                    return base * share_of_limit(got_through, True), True
                # Of the pace sent at, for a server allowing no burst; ``base`` is already
                # the gap from the last request it accepted, a bound the limit is below.
                sending = max(self._recent_rate(now) or base, base)
                return min(sending * share_of_limit(got_through, False), _JUST_BELOW * base), True
            refused = self._refused_since_cut(base)
            if not bursty and 0.0 < self._highest_accepted <= 0.5 * refused:
                # A server allowing no burst accepted a pace far below the one it refused (a
                # limit that fell): the limit is between the two; back to the one accepted.
                return self._below(refused), False
            if throttled > _CLEAN_SHARE * sent:
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
            # A probe crossed the limit: it is between the lowest gap refused since the last
            # cut and the highest accepted. (Older 429s in the last answers say nothing here.)
            return self._below(self._refused_since_cut(base)), False
        if accepted >= _MOSTLY:
            return base, False  # a probe just crossed the limit
        # Far above it: the limit's share of the pace is what got through.
        return base * share_of_limit(accepted, bursty), False

    def _refused_since_cut(self, base: float) -> float:
        """The lowest pace refused since the last cut, this one's (``base``) included; but one
        below a pace accepted since then says nothing of a limit (it came whatever the pace,
        or from the server's timing): then ``base``."""
        lowest = self._lowest_refused
        return min(base, lowest) if lowest >= _JUST_BELOW * self._highest_accepted else base

    def _below(self, refused: float) -> float:
        """Just below a pace refused: the highest pace accepted since the last cut, if lower
        (a server that lets no burst through accepts any gap above its limit's). When that is
        less than half the pace refused, the limit is anywhere between the two: the pace goes
        back to the highest accepted and probes up fast from there (``_leap``)."""
        highest = self._highest_accepted
        if highest >= _JUST_BELOW * refused or highest <= 0.0:
            return _JUST_BELOW * refused
        # The limit is anywhere between: probe up fast from the pace that got through.
        self._leap = highest <= 0.5 * refused
        return highest

    def _pace_is_the_cause(self, now: float) -> bool:
        """Whether a fresh 429 should cut the pace (see the module docstring); may decide that
        the 429s are noise, and undo the cuts."""
        sent, throttled = self._sent, self._throttled
        overload = throttled >= _CLEAR_OVERLOAD and 2 * throttled >= sent
        if self.noise is not None:
            if self._climbing(now) and sent >= JUDGE_AFTER and throttled < self.noise / 2 * sent:
                self.noise = None  # the last cut did stop most 429s: a limit after all
                return True
            return overload or (sent >= JUDGE_AFTER and throttled > (self.noise + _NOISE_MARGIN) * sent)
        if not self._climbing(now):
            if throttled <= _CLEAN_SHARE * sent:
                self._noise_sent = self._noise_throttled = 0  # a clean climb: a limit's doing
                self._noise_pace = None
            return True  # above the estimate (or unpaced): this 429 says where the limit is
        # Climbing back, below what the server accepted: 429s here are few if the pace is the
        # cause. Many, but not most: they come whatever the pace.
        if overload:
            return True
        if sent < JUDGE_AFTER:
            return False
        if throttled <= _CLEAN_SHARE * sent:
            self._noise_sent = self._noise_throttled = 0
            self._noise_pace = None
            return True
        # Counted over climbs in a row, each after a cut to what got through: one climb alone
        # may have aimed above the limit (a server allowing bursts inflates the estimate).
        self._noise_sent += sent
        self._noise_throttled += throttled
        if self._noise_pace is None or (self._estimate or 0.0) > self._noise_pace:
            # (Where they started: the highest estimate since, if a probe raised it meanwhile.)
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

    def _accepted_share(self) -> float | None:
        """The share of the last answers that were not 429s (None: too few answers); called
        on a 429, which is the last of them."""
        answers = self._answers
        if len(answers) < _MIN_ANSWERS:
            return None
        # Without the 429 that asks for the cut: one 429 says the limit was just passed (by a
        # probe), not that a twentieth of the pace is too much.
        return min(1.0, self._answers_ok / (len(answers) - 1))

    def _settle_calm(self) -> None:
        """The answers accepted before the first 429, which on_success only counted, into the
        window of answers and the count accepted: as if each had been put there when it came."""
        calm, self._calm_accepted = self._calm_accepted, 0
        self._accepted += calm
        for _ in range(min(calm, _LAST_ANSWERS)):
            self._answer(True)

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


def share_of_limit(accepted: float, bursty: bool) -> float:
    """The limit's share of a pace of which ``accepted`` got through, far above the limit.

    A server that lets no burst through refuses every other request of any pace between its
    limit and twice it, two of three up to three times it, …: when ``1/k`` got through, the
    limit is between ``1/k`` and ``1/(k-1)`` of the pace; the middle is taken."""
    if bursty:
        return max(accepted, _DEEPEST_CUT)
    accepted = min(accepted, 0.5)
    return max(accepted * (1.0 + accepted / (2.0 * (1.0 - accepted))), _DEEPEST_CUT)
