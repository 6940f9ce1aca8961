"""The evidence rule for uncertain creates and removes, with a fake clock (plain numbers).

The rule is in :mod:`batch_audiences._evidence`; here its two promises are checked for every
clock offset, round trip and rounding: a create made by this call is never judged someone
else's, and an audience made before this call (by more than the stated margin) never this one's.
"""

from __future__ import annotations

import email.utils
import math
from datetime import datetime, timezone

from hypothesis import given
from hypothesis import strategies as st

from batch_audiences._evidence import (
    TOLERANCE,
    ClockOffset,
    Verdict,
    Window,
    attempt_window,
    judge_create,
    judge_remove,
    offset_from_date,
)

# A fixed local "now": the fake clock the tests move by hand.
NOW = 1_800_000_000.0


def http_date(epoch: float) -> str:
    """An HTTP ``Date`` header for ``epoch``, truncated to whole seconds as servers send it."""
    return email.utils.formatdate(math.floor(epoch), usegmt=True)


def rfc3339(epoch: float) -> datetime:
    """A ``created`` time as the API gives it: whole seconds, UTC."""
    return datetime.fromtimestamp(math.floor(epoch), timezone.utc)


def test_offset_bounds_contain_the_true_offset() -> None:
    # The server's clock runs 3600.4 s ahead; the answer took 0.2 s.
    skew = 3600.4
    offset = offset_from_date(http_date(NOW + 0.1 + skew), sent=NOW, received=NOW + 0.2)
    assert offset is not None
    assert offset.low <= skew <= offset.high
    assert offset.high - offset.low <= 1.0 + 0.2 + 1e-6  # the Date's second plus the round trip


def test_unusable_dates_give_no_offset() -> None:
    for date in (None, "", "yesterday", "Tue, 01 Dec 2026 10:00:00"):  # the last has no zone
        assert offset_from_date(date, sent=NOW, received=NOW + 0.1) is None
    assert offset_from_date(http_date(NOW), sent=NOW, received=NOW - 1) is None  # clock went back


def test_create_found_within_the_window_is_this_calls() -> None:
    window = Window(NOW, NOW + 2)
    assert judge_create(rfc3339(NOW + 1), window) is Verdict.DONE
    assert judge_create(rfc3339(NOW), window) is Verdict.DONE


def test_create_made_before_the_first_try_is_someone_elses() -> None:
    window = Window(NOW, NOW + 2)
    assert judge_create(rfc3339(NOW - 3600), window) is Verdict.NOT_DONE
    # The margin is stated: the creation's second must end more than TOLERANCE before the
    # window opens (NOW is a whole second, so these are exact).
    on_the_edge = NOW - 1.0 - TOLERANCE
    assert judge_create(rfc3339(on_the_edge), window) is Verdict.DONE
    assert judge_create(rfc3339(on_the_edge - 1.0), window) is Verdict.NOT_DONE


def test_create_made_after_the_refusal_is_not_this_calls() -> None:
    window = Window(NOW, NOW + 2)
    assert judge_create(rfc3339(NOW + 60), window) is Verdict.NOT_DONE


def test_no_evidence_is_unknown() -> None:
    window = Window(NOW, NOW + 2)
    assert judge_create(None, window) is Verdict.UNKNOWN
    assert judge_create(rfc3339(NOW), None) is Verdict.UNKNOWN
    assert judge_create(datetime(2026, 1, 1), window) is Verdict.UNKNOWN


def test_remove_leaves_no_evidence() -> None:
    assert judge_remove(still_there=True) is Verdict.NOT_DONE
    assert judge_remove(still_there=False) is Verdict.UNKNOWN


seconds = st.floats(min_value=0.0, max_value=5.0, allow_nan=False)


@given(
    skew=st.floats(min_value=-86_400, max_value=86_400, allow_nan=False),
    to_server=seconds,
    from_server=seconds,
    think=seconds,
    retry_after=st.floats(min_value=0.0, max_value=60.0, allow_nan=False),
)
def test_own_create_is_never_called_someone_elses(
    skew: float, to_server: float, from_server: float, think: float, retry_after: float
) -> None:
    """Whatever the clocks' offset and the delays, this call's own create is judged DONE.

    Timeline (local clock): the first try leaves at ``sent`` and the server creates the audience
    ``to_server`` later (the answer is lost); the retry leaves ``retry_after`` later and is
    refused; the view's answer (with ``Date``) is what the offset is learnt from.
    """
    sent = NOW
    created_local = sent + to_server
    retry_sent = created_local + retry_after
    refused = retry_sent + to_server + think + from_server
    view_sent = refused
    view_stamped = view_sent + to_server + think
    view_received = view_stamped + from_server
    offset = offset_from_date(http_date(view_stamped + skew), sent=view_sent, received=view_received)
    assert offset is not None
    window = attempt_window(sent=sent, answered=refused, offset=offset)
    assert judge_create(rfc3339(created_local + skew), window, tolerance=0.0) is Verdict.DONE


@given(
    skew=st.floats(min_value=-86_400, max_value=86_400, allow_nan=False),
    rtt=seconds,
    age=st.floats(min_value=0.0, max_value=86_400, allow_nan=False),
)
def test_older_audience_is_never_called_this_calls(skew: float, rtt: float, age: float) -> None:
    """An audience created more than the stated margin before the first try left is NOT_DONE.

    The margin is what the evidence cannot resolve: the ``Date`` and ``created`` seconds (1 s
    each), the round trip the offset was learnt over, and the tolerance.
    """
    sent = NOW
    margin = 2.0 + rtt + TOLERANCE
    created_local = sent - margin - age - 1e-6
    offset = offset_from_date(http_date(sent + rtt / 2 + skew), sent=sent, received=sent + rtt)
    assert offset is not None
    window = attempt_window(sent=sent, answered=sent + rtt, offset=offset)
    assert judge_create(rfc3339(created_local + skew), window) is Verdict.NOT_DONE


def test_offset_type_is_a_plain_value() -> None:
    assert ClockOffset(1.0, 2.0) == ClockOffset(1.0, 2.0)
