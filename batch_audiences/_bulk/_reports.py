"""What bulk calls return and report as they go: :class:`UploadReport`, :class:`BulkReport`
and :class:`ProgressEvent`, with the per-chunk and per-item outcomes they hold.

Every item a bulk call reads ends up in exactly one place of its report: accepted, skipped,
failed (a failed chunk, or a failed item with its position in the input) or, for a create whose
outcome cannot be told, uncertain. Nothing is dropped silently.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import attrs

from .._errors import BatchAudiencesError
from .._models import Confirmation, NewAudience

__all__ = [
    "BulkReport",
    "CreatedAudience",
    "FailedChunk",
    "FailedItem",
    "IfExists",
    "ProgressEvent",
    "ProgressKind",
    "SkippedAudience",
    "UncertainAudience",
    "UploadMode",
    "UploadReport",
]

#: What ``upload`` does with the streamed items (see :meth:`AsyncAudiencesClient.upload`).
UploadMode = Literal["add", "remove", "update", "replace"]
#: What ``create_many`` does with an audience that exists already.
IfExists = Literal["error", "skip"]
#: What a :class:`ProgressEvent` reports (see its ``kind``).
ProgressKind = Literal["acknowledged", "created", "skipped", "failed", "uncertain", "indexing", "finished"]


def _plural(count: int, word: str) -> str:
    return f"{count:,} {word}{'' if count == 1 else 's'}"


@attrs.frozen
class ProgressEvent:
    """One step of a bulk call, passed to its ``on_progress`` callback.

    ``kind`` says what just happened. For ``upload``: ``"acknowledged"`` (the server accepted
    chunk ``chunk_index``, whose indexing token is ``token``), ``"skipped"`` (the chunk is in
    ``skip_chunks`` and was read but not sent), ``"failed"`` (the chunk failed for good, see
    ``error``), with ``wait=True`` ``"indexing"`` while the writes are confirmed applied
    (``chunks_applied`` of ``chunks_acknowledged``; :attr:`indexing` says it in words), and
    ``"finished"`` once, last. For ``create_many``: ``"created"``, ``"skipped"`` (it existed,
    with ``if_exists="skip"``), ``"failed"``, ``"uncertain"`` (the answer was lost and nothing
    tells whether the audience found is this call's, see ``error``) and ``"finished"``; the
    ``chunk_*`` fields then describe the one item (``chunk_index`` is its position in the input).

    Counters are totals since the call started: items read from the input, items the server
    acknowledged, items skipped, failed or uncertain, acknowledged chunks (and of those, chunks
    confirmed applied), HTTP requests in flight and made (retries included), retries. ``rate``
    is the client's pace in requests per second (``None``: not limited), ``elapsed`` the seconds
    since the call started.

    Events come a few per chunk (never per item), on the event loop that runs the call: the
    callback must be quick and must not block. With the blocking :class:`AudiencesClient` it
    runs on the client's own loop thread.
    """

    kind: ProgressKind
    items_read: int
    items_acknowledged: int
    items_skipped: int
    items_failed: int
    chunks_acknowledged: int
    requests_in_flight: int
    requests: int
    retries: int
    rate: float | None
    elapsed: float
    chunk_index: int | None = None
    chunk_start: int | None = None
    chunk_count: int | None = None
    token: str | None = None
    error: BatchAudiencesError | None = None
    chunks_applied: int = 0
    items_uncertain: int = 0

    @property
    def indexing(self) -> str:
        """``"waiting for indexing: k/n applied"``, for a progress line of an ``"indexing"`` event."""
        return f"waiting for indexing: {self.chunks_applied:,}/{self.chunks_acknowledged:,} applied"

    @property
    def items_done(self) -> int:
        """Items with a final outcome so far: acknowledged, skipped, failed or uncertain."""
        return self.items_acknowledged + self.items_skipped + self.items_failed + self.items_uncertain

    @property
    def items_per_second(self) -> float:
        """Acknowledged items per second since the call started."""
        return self.items_acknowledged / self.elapsed if self.elapsed > 0 else 0.0


@attrs.frozen
class FailedChunk:
    """A chunk of an upload that was not accepted.

    ``index`` is its chunk number: the same for the same input and ``chunk_size`` on every run, so
    a resume passes every other index in ``skip_chunks`` and sends just the failed ones again.
    ``start`` and ``stop`` delimit the items read for it in the input stream (0-based positions,
    ``stop`` excluded; consecutive chunks tile the stream); ``count`` is its number of valid
    items (invalid items in that range are reported apart, in ``failed_items``).
    ``uncertain`` is true when the request may have been applied although no answer came back
    (a connection broke after sending, a timeout). Sending it again restores its content, but a
    try the server still holds may land after the resent chunks: resume no sooner than the
    upload's ``late_write_grace`` after.
    """

    index: int
    start: int
    stop: int
    count: int
    error: BatchAudiencesError
    uncertain: bool = False

    @property
    def reason(self) -> str:
        """The error, as one readable line."""
        return str(self.error)


@attrs.frozen
class FailedItem:
    """One input item that failed on its own: ``position`` in the input (0-based), the item as
    read, and the typed error (a :class:`ValidationError` for an invalid item, which is never
    sent)."""

    position: int
    item: object
    error: BatchAudiencesError


@attrs.frozen
class UploadReport:
    """What :meth:`AsyncAudiencesClient.upload` did.

    - ``items_read``: items taken from the input; each is accepted, skipped (``skip_chunks``),
      invalid (``items_invalid``, detailed in ``failed_items``), or in a ``failed_chunks`` entry:
      ``items_read == items_accepted + items_skipped + items_invalid + items in failed chunks``.
    - ``items_sent``: items in chunks for which a request was sent; ``items_accepted``: items in
      chunks the server acknowledged.
    - ``requests`` and ``retries``: HTTP attempts of this call (writes, and views made to wait for
      indexing), and how many of them were retries.
    - ``indexing_tokens``: the tokens of the acknowledged chunks not confirmed applied when the
      call ended, in chunk order: the writes still to wait for (none with ``wait=True`` when
      ``applied`` is true). At most about 1,000 are kept, the engine confirming the oldest
      beyond that; ``chunks_acknowledged`` counts them all, and every token is in its chunk's
      ``"acknowledged"`` progress event.
    - ``input_exhausted``: whether the input was read to its end; false when the call stopped
      early (``stop_reason`` says why: deadline, retry budget, an error that fails every chunk).
    - ``applied``: with ``wait=True``, whether every acknowledged write was confirmed applied;
      ``None`` when not asked.
    - ``failed_items`` lists the first 10,000 invalid items; ``items_invalid`` counts them all.
    """

    name: str
    mode: UploadMode
    items_read: int
    items_sent: int
    items_accepted: int
    items_skipped: int
    items_invalid: int
    chunks_acknowledged: int
    chunks_skipped: int
    requests: int
    retries: int
    indexing_tokens: tuple[str, ...]
    failed_chunks: tuple[FailedChunk, ...]
    failed_items: tuple[FailedItem, ...]
    input_exhausted: bool
    applied: bool | None
    stop_reason: str | None
    elapsed: float

    @property
    def items_failed(self) -> int:
        """Items that were not accepted: invalid ones and those of failed chunks."""
        return self.items_invalid + sum(chunk.count for chunk in self.failed_chunks)

    @property
    def ok(self) -> bool:
        """True when the whole input was read and every item accepted (or skipped), and, with
        ``wait=True``, applied."""
        return (
            self.input_exhausted
            and not self.failed_chunks
            and self.items_invalid == 0
            and self.applied is not False
        )

    def summary(self) -> str:
        """A short, readable account, e.g. for a log line or the end of a script."""
        head = (
            f"upload to {self.name!r} ({self.mode}): {_plural(self.items_read, 'item')} read, "
            f"{self.items_accepted:,} accepted"
        )
        parts = [head]
        if self.items_skipped:
            parts.append(f"{self.items_skipped:,} skipped (already sent)")
        if self.items_failed:
            parts.append(
                f"{self.items_failed:,} failed ({_plural(len(self.failed_chunks), 'chunk')}, "
                f"{self.items_invalid:,} invalid)"
            )
        retries = "retry" if self.retries == 1 else "retries"
        parts.append(f"{_plural(self.requests, 'request')}, {self.retries:,} {retries}")
        parts.append(f"{self.elapsed:.2f}s")
        if self.applied is not None:
            parts.append("applied" if self.applied else "NOT confirmed applied")
        text = ", ".join(parts)
        if not self.input_exhausted:
            text += f"; stopped early: {self.stop_reason or 'input not read to the end'}"
        for chunk in self.failed_chunks[:5]:
            text += (
                f"\n  chunk {chunk.index} (items {chunk.start}-{chunk.stop - 1}, {chunk.count:,}): "
                f"{chunk.reason}"
            )
        if len(self.failed_chunks) > 5:
            text += f"\n  … and {len(self.failed_chunks) - 5:,} more failed chunks"
        for item in self.failed_items[:5]:
            text += f"\n  item {item.position}: {item.error}"
        if self.items_invalid > 5:
            text += f"\n  … and {self.items_invalid - 5:,} more invalid items"
        return text


@attrs.frozen
class CreatedAudience:
    """An audience ``create_many`` created: its ``position`` in the input, what was asked, the
    indexing token (``None`` when the answer was lost), and how the creation is known
    (``Confirmation.ANSWERED``, or ``Confirmation.INFERRED`` from the audience's creation time
    when the answer was lost)."""

    position: int
    audience: NewAudience
    indexing_token: str | None
    confirmation: Confirmation = Confirmation.ANSWERED


@attrs.frozen
class UncertainAudience:
    """An audience ``create_many`` cannot say it created: a try's answer was lost, the name is
    taken now, and no evidence tells whether by this call. ``error`` is the
    :class:`UncertainOutcomeError`; check the audience is yours before writing to it."""

    position: int
    audience: NewAudience
    error: BatchAudiencesError


@attrs.frozen
class SkippedAudience:
    """An audience ``create_many`` did not create because it exists (``if_exists="skip"``);
    ``error`` is what said so (the server's :class:`AudienceExistsError`, or a
    :class:`ValidationError` for a name that appears earlier in the same input)."""

    position: int
    audience: NewAudience
    error: BatchAudiencesError


@attrs.frozen
class BulkReport:
    """What :meth:`AsyncAudiencesClient.create_many` did, item by item.

    ``succeeded``, ``skipped``, ``failed`` and ``uncertain`` are in input order; every item read
    is in exactly one of them. ``failed`` entries hold the item as given and the typed error
    (:class:`ValidationError` for an invalid item, which was not sent). ``uncertain`` holds the
    creates whose answer was lost and whose audience, found afterwards, may be someone else's
    (:class:`UncertainAudience`). ``input_exhausted`` and ``stop_reason`` are as in
    :class:`UploadReport`.
    """

    succeeded: tuple[CreatedAudience, ...]
    skipped: tuple[SkippedAudience, ...]
    failed: tuple[FailedItem, ...]
    items_read: int
    requests: int
    retries: int
    input_exhausted: bool
    stop_reason: str | None
    elapsed: float
    uncertain: tuple[UncertainAudience, ...] = ()

    @property
    def counts(self) -> Mapping[str, int]:
        """``{"succeeded": n, "skipped": n, "failed": n, "uncertain": n}``."""
        return {
            "succeeded": len(self.succeeded), "skipped": len(self.skipped), "failed": len(self.failed),
            "uncertain": len(self.uncertain),
        }

    @property
    def ok(self) -> bool:
        """True when the whole input was read and every item was created or skipped."""
        return self.input_exhausted and not self.failed and not self.uncertain

    def summary(self) -> str:
        """A short, readable account."""
        uncertain = f", {len(self.uncertain):,} uncertain" if self.uncertain else ""
        text = (
            f"create_many: {_plural(self.items_read, 'item')} read, {len(self.succeeded):,} created, "
            f"{len(self.skipped):,} skipped, {len(self.failed):,} failed{uncertain}; "
            f"{_plural(self.requests, 'request')}, {self.retries:,} retries, {self.elapsed:.2f}s"
        )
        if not self.input_exhausted:
            text += f"; stopped early: {self.stop_reason or 'input not read to the end'}"
        for item in self.uncertain[:5]:
            text += f"\n  item {item.position}: {item.error}"
        for failure in self.failed[:5]:
            text += f"\n  item {failure.position}: {failure.error}"
        if len(self.failed) > 5:
            text += f"\n  … and {len(self.failed) - 5:,} more failures"
        return text
