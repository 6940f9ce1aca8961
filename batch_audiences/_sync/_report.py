"""What :meth:`AsyncAudiencesClient.sync` returns: :class:`SyncReport`."""

from __future__ import annotations

from typing import Literal

import attrs

from .._bulk import FailedChunk, FailedItem, UploadReport

__all__ = ["FullReason", "SyncMode", "SyncReport"]

SyncMode = Literal["full", "incremental"]
#: Why a sync replaced the whole audience: no record of it in the store at all, a record that
#: cannot be trusted (a full replace stopped before Batch accepted its first chunk), ``full=True``,
#: the audience did not exist, or its size differs from the snapshot's.
FullReason = Literal["first_run", "no_snapshot", "requested", "audience_missing", "drift"]


def _plural(count: int, word: str) -> str:
    return f"{count:,} {word}{'' if count == 1 else 's'}"


@attrs.frozen
class SyncReport:
    """What one :meth:`~batch_audiences.AsyncAudiencesClient.sync` did (or, with
    ``dry_run=True``, would do).

    - ``mode``: ``"full"`` (a lossless replace of everything) or ``"incremental"`` (only the
      difference); ``full_reason`` says why a sync was full (``None`` when incremental).
    - ``added``, ``removed``, ``changed``: IDs new in the source, gone from it, and present in
      both with other attributes; ``unchanged``: IDs left alone. In full mode every valid source
      ID counts as added. ``resent``: IDs whose write in an earlier run was sent but never
      confirmed, sent again to be sure (a remove, then an add if the source still holds them).
    - ``requests``: HTTP requests of this sync (the view before it, writes, indexing polls).
    - ``failed_items``: bad items and duplicate IDs of the source, with their position (first
      10,000 in detail; ``items_failed`` counts them all); they are never sent nor recorded.
    - ``failed_chunks``: chunks Batch did not accept; their IDs are sent again by the next run.
    - ``ok``: the source was read to the end, every item was valid and every chunk accepted.
    - ``upload``: the report of the upload that carried the writes (``None`` when nothing was
      sent).
    """

    name: str
    mode: SyncMode
    full_reason: FullReason | None
    added: int
    removed: int
    changed: int
    unchanged: int
    resent: int
    items_read: int
    items_failed: int
    requests: int
    failed_items: tuple[FailedItem, ...]
    failed_chunks: tuple[FailedChunk, ...]
    dry_run: bool
    completed: bool
    stop_reason: str | None
    elapsed: float
    upload: UploadReport | None = None

    @property
    def ok(self) -> bool:
        """True when every source item was valid and every change was accepted."""
        return self.completed and not self.failed_chunks and self.items_failed == 0

    @property
    def writes(self) -> int:
        """IDs the plan sends actions for (a remove and its re-add count once each)."""
        return self.added + self.removed + self.changed + self.resent

    def summary(self) -> str:
        """A short, readable account, e.g. for a log line.

        >>> SyncReport(
        ...     name="vip", mode="incremental", full_reason=None, added=3, removed=1, changed=2,
        ...     unchanged=10, resent=0, items_read=15, items_failed=0, requests=2, failed_items=(),
        ...     failed_chunks=(), dry_run=False, completed=True, stop_reason=None, elapsed=0.5,
        ... ).summary()
        "sync of 'vip' (incremental): 3 added, 1 removed, 2 changed, 10 unchanged; 2 requests, 0.50s"
        """
        how = self.mode if self.full_reason is None else f"{self.mode}: {self.full_reason.replace('_', ' ')}"
        head = "dry run of sync" if self.dry_run else "sync"
        text = (
            f"{head} of {self.name!r} ({how}): {self.added:,} added, {self.removed:,} removed, "
            f"{self.changed:,} changed, {self.unchanged:,} unchanged"
        )
        if self.resent:
            text += f", {self.resent:,} resent"
        text += f"; {_plural(self.requests, 'request')}, {self.elapsed:.2f}s"
        if self.items_failed:
            text += f"; {_plural(self.items_failed, 'bad item')} not synced"
        if self.failed_chunks:
            text += f"; {_plural(len(self.failed_chunks), 'chunk')} not accepted"
        if not self.completed:
            text += f"; stopped early: {self.stop_reason or 'not finished'}"
        for chunk in self.failed_chunks[:5]:
            text += f"\n  chunk {chunk.index} ({chunk.count:,} IDs): {chunk.reason}"
        for item in self.failed_items[:5]:
            text += f"\n  item {item.position}: {item.error}"
        if self.items_failed > 5:
            text += f"\n  … and {self.items_failed - 5:,} more bad items"
        return text
