"""Whether a create or remove whose answer was lost was done by this call: the evidence rule.

A write whose try broke after its bytes left (a timeout, a dropped connection) may or may not
have been applied. When a later try is refused, the state of the audience says what the project
looks like now, not who made it so: a taken name may be this call's audience or someone else's.
Batch offers one kind of evidence, time: an audience's ``created`` (from ``view``) and the
``Date`` header of every answer, both on the server's clock.

The rule for a create. Let ``sent`` be the local time the first uncertain try left, and
``answered`` the local time the refusal came back. ``Date`` is in whole seconds, so an answer
sent at local ``s`` and received at ``r`` with ``Date: D`` bounds the offset of the two clocks:
``server - local`` lies in ``[D - r, D + 1 - s]`` (:class:`ClockOffset`). This call could only
have created the audience while the try was out, so, on the server's clock, within
``[sent + low, answered + high]`` (:class:`Window`). ``created`` is in whole seconds too: the
creation happened within ``[C, C + 1]``. Then, with ``tolerance`` seconds (:data:`TOLERANCE`)
for clocks that round instead of truncating and for the server stamping ``created`` and
``Date`` on different machines:

- the creation ended more than ``tolerance`` before the window opened: the audience was there
  before this call (:attr:`Verdict.NOT_DONE`);
- it began more than ``tolerance`` after the window closed: it was made after this call was
  refused (:attr:`Verdict.NOT_DONE`);
- otherwise it overlaps the window: taken as this call's (:attr:`Verdict.DONE`). What remains
  ambiguous is an audience of the same name created by someone else within that window, give or
  take the tolerance: nothing the API returns can tell the two apart;
- no ``created`` time, or no ``Date`` seen: :attr:`Verdict.UNKNOWN`.

A remove leaves no evidence: a removed audience has no ``created`` to read, and a 404 looks the
same whoever removed it. An audience still there after an uncertain remove was not removed
(:attr:`Verdict.NOT_DONE`); one that is gone is :attr:`Verdict.UNKNOWN`.

The functions here are pure (times are plain numbers, seconds since the epoch), so the rule is
tested with a fake clock. The operations layer feeds them: the time the first uncertain try left
(recorded by the transport), and the offset proved by the view that read ``created``, the
freshest answer there is.

>>> from datetime import datetime, timezone
>>> ten = datetime(2026, 12, 1, 10, 0, 0, tzinfo=timezone.utc)
>>> t = ten.timestamp()  # our clock: the answer left at t - 0.1, came back at t + 0.1
>>> offset = offset_from_date("Tue, 01 Dec 2026 10:00:00 GMT", sent=t - 0.1, received=t + 0.1)
>>> window = attempt_window(sent=t - 0.5, answered=t + 0.2, offset=offset)
>>> judge_create(ten, window)
<Verdict.DONE: 'done'>
>>> judge_create(ten.replace(hour=9), window)
<Verdict.NOT_DONE: 'not_done'>
>>> judge_create(None, window)
<Verdict.UNKNOWN: 'unknown'>
"""

from __future__ import annotations

import email.utils
import enum
from datetime import datetime
from typing import Final

import attrs

__all__ = [
    "TOLERANCE",
    "ClockOffset",
    "Verdict",
    "Window",
    "attempt_window",
    "judge_create",
    "judge_remove",
    "offset_from_date",
]

#: Seconds of slack on each side of the comparison, beyond the whole-second rounding of
#: ``Date`` and ``created`` (which the rule accounts for exactly).
TOLERANCE: Final = 1.0


class Verdict(enum.Enum):
    """What the evidence says about an uncertain write."""

    #: The state shows the write happened, within the time this call's tries were out.
    DONE = "done"
    #: The state shows this call's write did not happen (someone else's audience, or still there).
    NOT_DONE = "not_done"
    #: The state is as asked, but nothing tells whether this call made it so.
    UNKNOWN = "unknown"


@attrs.frozen
class ClockOffset:
    """``server clock - local clock`` lies in ``[low, high]`` seconds."""

    low: float
    high: float


@attrs.frozen
class Window:
    """When, on the server's clock (epoch seconds), this call's write could have been applied."""

    opens: float
    closes: float


def offset_from_date(date: str | None, *, sent: float, received: float) -> ClockOffset | None:
    """The clock offset an answer proves: sent at local ``sent``, received at ``received``,
    with ``Date: date`` (an HTTP date, whole seconds). ``None`` if there is no usable date.

    >>> offset_from_date("Thu, 01 Jan 1970 00:01:40 GMT", sent=90.0, received=90.5)
    ClockOffset(low=9.5, high=11.0)
    >>> offset_from_date("yesterday", sent=90.0, received=90.5) is None
    True
    """
    if not date or received < sent:
        return None
    try:
        moment = email.utils.parsedate_to_datetime(date)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:  # HTTP dates are GMT; a zone-less one is not a real Date header
        return None
    server = moment.timestamp()
    # The server wrote Date at some instant of [server, server + 1), while the request was out.
    return ClockOffset(server - received, server + 1.0 - sent)


def attempt_window(*, sent: float, answered: float, offset: ClockOffset) -> Window:
    """The server-clock window of a write whose first uncertain try left at local ``sent`` and
    whose refusal came back at local ``answered``."""
    return Window(sent + offset.low, answered + offset.high)


def judge_create(created: datetime | None, window: Window | None, tolerance: float = TOLERANCE) -> Verdict:
    """Whether an audience found with ``created`` was made by the create tried in ``window``
    (see the module docstring for the rule)."""
    if created is None or window is None or created.tzinfo is None:
        return Verdict.UNKNOWN
    begins = created.timestamp()
    ends = begins + 1.0  # created is stamped in whole seconds
    if ends + tolerance < window.opens or begins - tolerance > window.closes:
        return Verdict.NOT_DONE
    return Verdict.DONE


def judge_remove(still_there: bool) -> Verdict:
    """After an uncertain remove: an audience still there was not removed; a missing one leaves
    nothing to date, so whether this call removed it is unknown."""
    return Verdict.NOT_DONE if still_there else Verdict.UNKNOWN
