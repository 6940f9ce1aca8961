"""Why a bulk call (``upload``, ``create_many``) did not send part of its input.

These errors never escape a bulk call: they are the ``error`` of a failed chunk or item in its
report. Every one of them means *nothing was sent* for that part, so sending it again later
(``skip_chunks`` on a new ``upload`` of the same input) can neither duplicate nor reorder a write.

::

    BatchAudiencesError
    └── NotSentError                 the bulk call gave up on this part before sending it
        ├── DependencyFailedError    it shares IDs with a chunk that failed
        └── DeadlineExceededError    the call's deadline passed first (also a TimeoutError)
"""

from __future__ import annotations

from .._errors import BatchAudiencesError

__all__ = ["DeadlineExceededError", "DependencyFailedError", "NotSentError"]


class NotSentError(BatchAudiencesError):
    """This chunk or item was never sent: the bulk call stopped before it could be.

    ``reason`` says why; ``__cause__`` holds the error that stopped the call, if one did.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(f"not sent: {reason}")
        self.reason = reason


class DependencyFailedError(NotSentError):
    """Not sent because it acts on IDs that chunk ``depends_on`` also acts on, and that chunk failed.

    Sending it anyway could apply the stream out of order once the failed chunk is sent again.
    """

    def __init__(self, depends_on: int) -> None:
        super().__init__(f"depends on failed chunk {depends_on}")
        self.depends_on = depends_on


class DeadlineExceededError(NotSentError, TimeoutError):
    """Not sent because the bulk call's ``deadline`` (in seconds) had passed."""

    def __init__(self, deadline: float) -> None:
        super().__init__(f"the deadline of {deadline:g}s passed")
        self.deadline = deadline
