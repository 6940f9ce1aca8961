"""The log of received requests, in arrival order, filled in when each one completes."""

from __future__ import annotations

import threading

import attrs

from ._models import RecordedRequest

_MASK = "<redacted>"


def mask_headers(headers: dict[str, str]) -> dict[str, str]:
    """A copy with the Authorization value masked: the key must not leak into test output."""
    masked = {}
    for key, value in headers.items():
        if key.lower() == "authorization":
            value = f"Bearer {_MASK}" if value.startswith("Bearer ") else _MASK
        masked[key] = value
    return masked


class Recorder:
    """Arrival-ordered records; a slot is reserved at arrival and completed at the end."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records: list[RecordedRequest] = []
        self._generation = 0  # bumped by clear(), so requests in flight across a reset are not written back

    def open(self, record: RecordedRequest) -> tuple[int, int]:
        """Log an in-flight request; returns the slot to complete."""
        with self._lock:
            self._records.append(record)
            return self._generation, len(self._records) - 1

    def close(self, slot: tuple[int, int], status: int, outcome: str, body: object | None) -> None:
        """Complete the record in ``slot`` with its final fields."""
        generation, index = slot
        with self._lock:
            if generation == self._generation:
                record = self._records[index]
                self._records[index] = attrs.evolve(record, status=status, outcome=outcome, body=body)

    def snapshot(self) -> list[RecordedRequest]:
        """A copy of the log."""
        with self._lock:
            return list(self._records)

    def count(self, route: str | None, status: int | None) -> int:
        """Completed requests matching ``route`` and ``status`` (None matches any)."""
        with self._lock:
            return sum(
                1
                for r in self._records
                if r.outcome != "in_flight"
                and (route is None or r.route == route)
                and (status is None or r.status == status)
            )

    def clear(self) -> None:
        """Forget every record."""
        with self._lock:
            self._records = []
            self._generation += 1
